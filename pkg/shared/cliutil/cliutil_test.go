package cliutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestExitCode(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{name: "nil", err: nil, want: 0},
		{name: "plain error", err: base, want: 1},
		{name: "exit error", err: Exit(3, base), want: 3},
		{name: "wrapped exit error", err: fmt.Errorf("context: %w", Exit(4, base)), want: 4},
		{name: "exit error without message", err: &ExitError{Code: 2}, want: 2},
		{name: "joined", err: errors.Join(base, Exit(5, base)), want: 5},
		{name: "context canceled", err: context.Canceled, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestExit(t *testing.T) {
	if err := Exit(2, nil); err != nil {
		t.Fatalf("Exit(2, nil) = %v, want nil", err)
	}
	base := errors.New("canary \"web\" not ready")
	err := Exit(2, base)
	if err.Error() != base.Error() {
		t.Errorf("Error() = %q, want %q", err.Error(), base.Error())
	}
	if !errors.Is(err, base) {
		t.Errorf("errors.Is(Exit(2, base), base) = false, want true")
	}
	if got := (&ExitError{Code: 7}).Error(); got != "exit status 7" {
		t.Errorf("Error() without Err = %q", got)
	}
}

func TestNewRoot(t *testing.T) {
	root := NewRoot("kubectl mlrollout", "Manage rollouts", "Manage ML model rollouts.")
	if !root.SilenceUsage || !root.SilenceErrors {
		t.Errorf("SilenceUsage=%v SilenceErrors=%v, want both true", root.SilenceUsage, root.SilenceErrors)
	}
	sub := &cobra.Command{Use: "status NAME", Short: "Show status", RunE: func(*cobra.Command, []string) error { return nil }}
	root.AddCommand(sub)
	if got := sub.CommandPath(); got != "kubectl mlrollout status" {
		t.Errorf("CommandPath() = %q, want %q", got, "kubectl mlrollout status")
	}
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"status", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kubectl mlrollout status NAME") {
		t.Errorf("help does not use the display name:\n%s", out.String())
	}
}

func TestRun(t *testing.T) {
	newRoot := func(runE func(*cobra.Command, []string) error) *cobra.Command {
		root := NewRoot("helm acrpush", "Push charts", "")
		root.AddCommand(&cobra.Command{Use: "do", RunE: runE})
		return root
	}
	tests := []struct {
		name     string
		args     []string
		runE     func(*cobra.Command, []string) error
		wantCode int
		wantErr  string
	}{
		{
			name: "success",
			args: []string{"do"},
			runE: func(*cobra.Command, []string) error { return nil },
		},
		{
			name:     "plain error",
			args:     []string{"do"},
			runE:     func(*cobra.Command, []string) error { return errors.New("pushing chart: denied") },
			wantCode: 1,
			wantErr:  "error: pushing chart: denied\n",
		},
		{
			name:     "exit error",
			args:     []string{"do"},
			runE:     func(*cobra.Command, []string) error { return Exit(3, errors.New("not healthy")) },
			wantCode: 3,
			wantErr:  "error: not healthy\n",
		},
		{
			name:     "silent exit error",
			args:     []string{"do"},
			runE:     func(*cobra.Command, []string) error { return &ExitError{Code: 2} },
			wantCode: 2,
		},
		{
			name:     "context reaches the command",
			args:     []string{"do"},
			runE:     func(c *cobra.Command, _ []string) error { return c.Context().Err() },
			wantCode: 1,
			wantErr:  "error: context canceled\n",
		},
		{
			name:     "unknown completion shell",
			args:     []string{"completion", "tcsh"},
			runE:     func(*cobra.Command, []string) error { return nil },
			wantCode: 1,
			wantErr:  "error: unknown command \"tcsh\" for \"helm acrpush completion\"\n",
		},
		{
			name:     "unknown flag",
			args:     []string{"do", "--nope"},
			runE:     func(*cobra.Command, []string) error { return nil },
			wantCode: 1,
			wantErr:  "error: unknown flag: --nope (see 'helm acrpush do --help')\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tt.name == "context reaches the command" {
				cancel()
			}
			defer cancel()
			var errOut bytes.Buffer
			code := run(ctx, newRoot(tt.runE), tt.args, &errOut)
			if code != tt.wantCode {
				t.Errorf("code = %d, want %d", code, tt.wantCode)
			}
			if errOut.String() != tt.wantErr {
				t.Errorf("stderr = %q, want %q", errOut.String(), tt.wantErr)
			}
		})
	}
}

// TestMain lets TestMainExits run this test binary as a plugin main.
func TestMain(m *testing.M) {
	if os.Getenv("CLIUTIL_BECOME_MAIN") == "1" {
		Main(func(s genericiooptions.IOStreams) *cobra.Command {
			root := NewRoot("kubectl mltest", "Test", "")
			root.AddCommand(&cobra.Command{Use: "fail", RunE: func(c *cobra.Command, _ []string) error {
				fmt.Fprintln(s.Out, "data")
				return Exit(4, errors.New("check failed"))
			}})
			return root
		})
	}
	os.Exit(m.Run())
}

func TestMainExits(t *testing.T) {
	cmd := exec.Command(os.Args[0], "fail")
	cmd.Env = append(os.Environ(), "CLIUTIL_BECOME_MAIN=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 4 {
		t.Fatalf("exit = %v, want exit status 4 (stderr %q)", err, stderr.String())
	}
	if stdout.String() != "data\n" {
		t.Errorf("stdout = %q, want %q", stdout.String(), "data\n")
	}
	if stderr.String() != "error: check failed\n" {
		t.Errorf("stderr = %q, want %q", stderr.String(), "error: check failed\n")
	}
}
