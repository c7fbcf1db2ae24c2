package version

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestGet(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	bi := func(mainVersion string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			b := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/aks-mlops/mlplugins", Version: mainVersion}}
			for i := 0; i+1 < len(settings); i += 2 {
				b.Settings = append(b.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return b, true
		}
	}
	noBuildInfo := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name          string
		v, c, d       string
		readBuildInfo func() (*debug.BuildInfo, bool)
		wantVersion   string
		wantCommit    string
		wantDate      string
	}{
		{
			name: "ldflags win", v: "v1.2.3", c: "abc123", d: "2026-11-26T00:00:00Z",
			readBuildInfo: bi("v9.9.9", "vcs.revision", "fff", "vcs.time", "2000-01-01T00:00:00Z"),
			wantVersion:   "v1.2.3", wantCommit: "abc123", wantDate: "2026-11-26T00:00:00Z",
		},
		{
			name:          "build info fallback",
			readBuildInfo: bi("v0.4.0", "vcs.revision", "deadbeef", "vcs.time", "2026-11-01T10:00:00Z"),
			wantVersion:   "v0.4.0", wantCommit: "deadbeef", wantDate: "2026-11-01T10:00:00Z",
		},
		{
			name:          "dirty tree",
			readBuildInfo: bi("(devel)", "vcs.revision", "deadbeef", "vcs.modified", "true"),
			wantVersion:   "v0.0.0-dev", wantCommit: "deadbeef-dirty", wantDate: "unknown",
		},
		{
			name:          "nothing known",
			readBuildInfo: noBuildInfo,
			wantVersion:   "v0.0.0-dev", wantCommit: "unknown", wantDate: "unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := get(tt.v, tt.c, tt.d, tt.readBuildInfo)
			want := Info{Version: tt.wantVersion, GitCommit: tt.wantCommit, BuildDate: tt.wantDate, GoVersion: runtime.Version(), Platform: platform}
			if got != want {
				t.Errorf("get() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestGetUsesLinkerVariables(t *testing.T) {
	oldV, oldC, oldD := version, commit, date
	t.Cleanup(func() { version, commit, date = oldV, oldC, oldD })
	version, commit, date = "v1.0.0", "0123abc", "2026-11-26T02:00:00Z"
	got := Get()
	if got.Version != "v1.0.0" || got.GitCommit != "0123abc" || got.BuildDate != "2026-11-26T02:00:00Z" {
		t.Errorf("Get() = %+v", got)
	}
}

func TestCmdVersion(t *testing.T) {
	pinned := Info{Version: "v1.2.3", GitCommit: "abc123", BuildDate: "2026-11-26T00:00:00Z", GoVersion: "go1.26.8", Platform: "linux/amd64"}
	oldV, oldC, oldD := version, commit, date
	t.Cleanup(func() { version, commit, date = oldV, oldC, oldD })
	version, commit, date = pinned.Version, pinned.GitCommit, pinned.BuildDate

	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{
			name: "text",
			want: "Version:     v1.2.3\nGit commit:  abc123\nBuild date:  2026-11-26T00:00:00Z\nGo version:  " + runtime.Version() + "\nPlatform:    " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
		},
		{name: "short", args: []string{"--short"}, want: "v1.2.3\n"},
		{name: "yaml", args: []string{"-o", "yaml"}, want: "buildDate: \"2026-11-26T00:00:00Z\"\ngitCommit: abc123\ngoVersion: " + runtime.Version() + "\nplatform: " + runtime.GOOS + "/" + runtime.GOARCH + "\nversion: v1.2.3\n"},
		{name: "bad output", args: []string{"-o", "xml"}, wantErr: `unknown output format "xml" (want one of: json, yaml)`},
		{name: "short and output", args: []string{"--short", "-o", "json"}, wantErr: "--short cannot be combined with --output"},
		{name: "extra args", args: []string{"extra"}, wantErr: `unknown command "extra" for "version"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			streams, _, out, errOut := genericiooptions.NewTestIOStreams()
			cmd := NewCmdVersion(streams)
			cmd.SetArgs(tt.args)
			cmd.SetOut(out)
			cmd.SetErr(errOut)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.wantErr {
				t.Fatalf("error = %q, want %q", gotErr, tt.wantErr)
			}
			if tt.wantErr == "" && out.String() != tt.want {
				t.Errorf("stdout = %q, want %q", out.String(), tt.want)
			}
			if errOut.Len() != 0 {
				t.Errorf("stderr = %q, want empty", errOut.String())
			}
		})
	}
}

func TestCmdVersionJSON(t *testing.T) {
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	cmd := NewCmdVersion(streams)
	cmd.SetArgs([]string{"-o", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var raw map[string]string
	if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{"version", "gitCommit", "buildDate", "goVersion", "platform"} {
		if raw[k] == "" {
			t.Errorf("json field %q missing or empty in %s", k, out.String())
		}
	}
	if len(raw) != 5 {
		t.Errorf("json has %d fields, want 5: %s", len(raw), out.String())
	}
	if !strings.HasSuffix(out.String(), "}\n") {
		t.Errorf("json output does not end with a newline: %q", out.String())
	}
}
