// Package version reports the build's version, set at link time with
//
//	-ldflags "-X github.com/aks-mlops/mlplugins/pkg/shared/version.version=v1.2.3
//	          -X github.com/aks-mlops/mlplugins/pkg/shared/version.commit=<sha>
//	          -X github.com/aks-mlops/mlplugins/pkg/shared/version.date=<RFC 3339>"
//
// and falling back to the module and VCS information Go embeds in the binary.
package version

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
)

// Set with -ldflags -X; empty means "not set".
var (
	version string
	commit  string
	date    string
)

const (
	devVersion = "v0.0.0-dev"
	unknown    = "unknown"
)

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build's Info: the -ldflags values where set, otherwise the module version and
// VCS revision and time recorded in the binary, otherwise "v0.0.0-dev" and "unknown".
func Get() Info {
	return get(version, commit, date, debug.ReadBuildInfo)
}

func get(v, c, d string, readBuildInfo func() (*debug.BuildInfo, bool)) Info {
	info := Info{
		Version:   v,
		GitCommit: c,
		BuildDate: d,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := readBuildInfo(); ok && bi != nil {
		if info.GoVersion == "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.GitCommit == "" {
					info.GitCommit = s.Value
				}
			case "vcs.time":
				if info.BuildDate == "" {
					info.BuildDate = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && c == "" && info.GitCommit != "" {
			info.GitCommit += "-dirty"
		}
	}
	if info.Version == "" {
		info.Version = devVersion
	}
	if info.GitCommit == "" {
		info.GitCommit = unknown
	}
	if info.BuildDate == "" {
		info.BuildDate = unknown
	}
	return info
}

// VersionOptions holds the inputs of the 'version' command.
type VersionOptions struct {
	genericiooptions.IOStreams

	Output string // "", "json" or "yaml"
	Short  bool

	// Info is the build to report; Complete fills it from Get when empty, tests pin it.
	Info Info
}

// NewVersionOptions returns VersionOptions with defaults.
func NewVersionOptions(streams genericiooptions.IOStreams) *VersionOptions {
	return &VersionOptions{IOStreams: streams}
}

// NewCmdVersion returns the 'version' subcommand: `version [-o json|yaml] [--short]`.
func NewCmdVersion(streams genericiooptions.IOStreams) *cobra.Command {
	o := NewVersionOptions(streams)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this plugin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: json or yaml")
	cmd.Flags().BoolVar(&o.Short, "short", o.Short, "Print only the version number")
	return cmd
}

// Complete fills Info from the build when it was not preset.
func (o *VersionOptions) Complete() {
	if o.Info == (Info{}) {
		o.Info = Get()
	}
}

// Validate checks the flag combination.
func (o *VersionOptions) Validate() error {
	if err := printers.ValidateOutput(o.Output, "json", "yaml"); err != nil {
		return err
	}
	if o.Short && o.Output != "" {
		return errors.New("--short cannot be combined with --output")
	}
	return nil
}

// Run writes the version to Out.
func (o *VersionOptions) Run(_ context.Context) error {
	switch {
	case o.Short:
		_, err := fmt.Fprintln(o.Out, o.Info.Version)
		return err
	case o.Output == "json":
		return printers.PrintJSON(o.Out, o.Info)
	case o.Output == "yaml":
		return printers.PrintYAML(o.Out, o.Info)
	}
	tw := printers.NewTable(o.Out)
	for _, row := range [][2]string{
		{"Version:", o.Info.Version},
		{"Git commit:", o.Info.GitCommit},
		{"Build date:", o.Info.BuildDate},
		{"Go version:", o.Info.GoVersion},
		{"Platform:", o.Info.Platform},
	} {
		if _, err := fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1]); err != nil {
			return err
		}
	}
	return tw.Flush()
}
