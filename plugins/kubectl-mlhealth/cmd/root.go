// Package cmd is the cobra wiring of `kubectl mlhealth`: flags, Complete/Validate/Run and rendering
// of the health report. The rules live in internal/health, the data sources in internal/sources.
package cmd

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/version"
)

// NewCmdRoot returns the `kubectl mlhealth` command, which is the health check itself, with a
// `version` subcommand.
func NewCmdRoot(streams genericiooptions.IOStreams) *cobra.Command {
	return NewCmdHealth(NewHealthOptions(genericclioptions.NewConfigFlags(true), streams))
}

// NewCmdHealth returns the root command bound to o; tests pass options with fake sources.
func NewCmdHealth(o *HealthOptions) *cobra.Command {
	cmd := cliutil.NewRoot("kubectl mlhealth", healthShort, healthLong)
	cmd.Use = "kubectl-mlhealth [APP]"
	cmd.Example = healthExample
	cmd.Args = cobra.MaximumNArgs(1)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if err := o.Complete(c, args); err != nil {
			return err
		}
		if err := o.Validate(); err != nil {
			return err
		}
		return o.Run(c.Context())
	}
	cmd.SetOut(o.Out)
	cmd.SetErr(o.ErrOut)
	o.AddFlags(cmd)
	cmd.AddCommand(version.NewCmdVersion(o.IOStreams))
	return cmd
}
