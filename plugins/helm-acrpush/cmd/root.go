// Package cmd wires the helm-acrpush command line: flags and environment into acrpush options,
// results onto the output streams. The work itself is in internal/acrpush.
package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/version"
)

// NewCmdRoot returns the root command: `helm acrpush CHART REGISTRY[/PREFIX]`, plus `version`.
func NewCmdRoot(streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdRoot(NewPushOptions(streams))
}

func newCmdRoot(o *PushOptions) *cobra.Command {
	streams := o.IOStreams
	push := NewCmdPush(o)
	root := cliutil.NewRoot("helm acrpush", push.Short, push.Long)
	root.Use = "helm-acrpush CHART REGISTRY[/PREFIX]"
	root.Example = push.Example
	root.Args = func(_ *cobra.Command, args []string) error {
		if len(args) != 2 {
			return fmt.Errorf("expected 2 arguments, CHART and REGISTRY[/PREFIX], got %d (see 'helm acrpush --help')", len(args))
		}
		return nil
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.RunE = push.RunE
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.AddFlags(root)
	root.AddCommand(version.NewCmdVersion(streams))
	return root
}
