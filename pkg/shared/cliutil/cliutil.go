// Package cliutil holds the command-line plumbing every plugin binary shares: the root command
// helper, the typed error that carries an exit code, and the Main function that main.go calls.
//
// It depends on the standard library, cobra and the cli-runtime IO streams only.
package cliutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// ExitError is an error that asks main to exit with Code. Commands return it (usually through Exit)
// instead of calling os.Exit, so that only main exits.
//
// An ExitError whose Err is nil exits with Code without printing anything; use it when the command
// has already reported the outcome itself (for example a health check that printed its findings).
type ExitError struct {
	Code int
	Err  error
}

// Error returns the message of the wrapped error.
func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

// Unwrap returns the wrapped error.
func (e *ExitError) Unwrap() error { return e.Err }

// Exit wraps err so that main exits with code. A nil err stays nil.
func Exit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// ExitCode maps an error to a process exit code: 0 for nil, the Code of the first ExitError in the
// chain, and 1 for any other error.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// NewRoot returns a root command whose help reads as displayName (for example "kubectl mlrollout"
// or "helm acrpush"). Usage and errors are silenced so that Main prints an error exactly once.
func NewRoot(displayName, short, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:           strings.ReplaceAll(displayName, " ", "-"),
		Short:         short,
		Long:          long,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: displayName},
	}
	// A flag error is one line, with where to look: scripts read one line per failure.
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	return cmd
}

// Main runs the root command built by newRoot with the process's standard streams, cancels the
// command's context on SIGINT or SIGTERM, prints a failure once as "error: <msg>" on stderr and
// exits with ExitCode of the error. Call it from main and nowhere else.
func Main(newRoot func(genericiooptions.IOStreams) *cobra.Command) {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, newRoot(streams), os.Args[1:], streams.ErrOut)
	stop()
	os.Exit(code)
}

// run executes root with args and returns the exit code, reporting the error on errOut.
func run(ctx context.Context, root *cobra.Command, args []string, errOut io.Writer) int {
	root.SetArgs(args)
	// cobra's completion command is not runnable, so an unknown shell printed its help and exited 0:
	// make it runnable so that its NoArgs check rejects the argument.
	root.InitDefaultCompletionCmd(args...)
	for _, c := range root.Commands() {
		if c.Name() == "completion" && !c.Runnable() {
			c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		}
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Err != nil {
		_, _ = fmt.Fprintf(errOut, "error: %v\n", err) // nowhere left to report a failed write
	}
	return ExitCode(err)
}
