// Package cmd wires the kubectl mlrollout commands: flags, Complete/Validate/Run, and rendering.
// The rollout logic lives in internal/rollout and internal/plan.
package cmd

import (
	"fmt"
	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/version"
)

// ExitCodes is the exit code table shared by every command, shown in --help and docs/mlrollout.md.
const ExitCodes = `Exit codes (the same for every command):
  0  done: rolled out and promoted, or nothing in progress
  1  error: bad input, API or auth failure (the command changed nothing unless it says what it changed)
  2  the canary failed a check and was rolled back
  3  timed out; the rollout is left as it is, resumable
  4  paused, waiting for 'promote' or 'resume'
  5  ('status' without -w) a rollout is in progress`

var rootLong = `Canary rollouts of model-serving Deployments with automated canary checks, and nothing
installed in the cluster.

'start' creates a canary Deployment <name>-canary next to the stable one (same pod template, new
images, an extra rollouts.mlplugins.io/track=canary label, so the app's Service selects both).
Traffic follows the ratio of ready pods. Each step scales the tracks, waits for the canary pods to
be Ready, runs the checks (Prometheus queries, HTTP requests through port-forward) and bakes.
At 100% the stable Deployment takes the canary's images and the canary is removed. A failed check
removes the canary and restores the stable replicas, leaving the stable template untouched.

The state lives in annotations on the stable Deployment, so 'status', 'resume' and 'abort' work
after any interruption, from any machine.

` + ExitCodes

// NewCmdRoot returns the kubectl mlrollout command tree.
func NewCmdRoot(streams genericiooptions.IOStreams) *cobra.Command {
	return newRoot(NewFactory(streams))
}

func newRoot(f *Factory) *cobra.Command {
	root := cliutil.NewRoot("kubectl mlrollout", "Canary rollouts of model-serving Deployments", strings.TrimSpace(rootLong))
	root.SetOut(f.Out)
	root.SetErr(f.ErrOut)
	f.ConfigFlags.AddFlags(root.PersistentFlags())
	azure.AddCredentialFlag(root.PersistentFlags(), &f.AzureCredential)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		// Only the commands that drive a rollout run its Prometheus checks, the only Azure calls.
		if fl := cmd.Flags().Lookup(azure.CredentialFlag); fl != nil && fl.Changed {
			switch cmd.Name() {
			case "start", "resume", "promote":
			default:
				return fmt.Errorf("--%s is used only by start, resume and promote (for Prometheus checks against Azure Monitor); %s makes no Azure call", azure.CredentialFlag, cmd.Name())
			}
		}
		return azure.ValidateCredentialKind(f.AzureCredential)
	}
	root.AddCommand(
		NewCmdStart(f),
		NewCmdStatus(f),
		NewCmdPromote(f),
		NewCmdPause(f),
		NewCmdResume(f),
		NewCmdAbort(f),
		NewCmdUndo(f),
		NewCmdHistory(f),
		NewCmdPlan(f),
		NewCmdList(f),
		version.NewCmdVersion(f.IOStreams),
	)
	return root
}

// newConfigFlags returns the standard kubectl flags (--kubeconfig, --context, -n, --as, ...).
func newConfigFlags() *genericclioptions.ConfigFlags {
	return genericclioptions.NewConfigFlags(true)
}
