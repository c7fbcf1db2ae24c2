package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// UndoOptions holds the inputs of 'kubectl mlrollout undo'.
type UndoOptions struct {
	f          *Factory
	ToRevision int64
	Namespace  string
	Name       string
}

// NewCmdUndo returns the 'undo' subcommand.
func NewCmdUndo(f *Factory) *cobra.Command {
	o := &UndoOptions{f: f}
	cmd := &cobra.Command{
		Use:   "undo DEPLOYMENT [--to-revision N]",
		Short: "Restore the pod template of a previous revision (like kubectl rollout undo)",
		Long: `Restore the stable Deployment's pod template from the ReplicaSet of a previous revision (default: the
one before the current), as 'kubectl rollout undo' does, and record it in the history. Refused while a
rollout is in progress (use abort).`,
		Example: `  # Go back to the images before the last promotion
  kubectl mlrollout undo mlapp
  kubectl mlrollout undo mlapp --to-revision 3`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Namespace, o.Name, err = f.target(args); err != nil {
				return err
			}
			if o.ToRevision < 0 {
				return errors.New("--to-revision must not be negative")
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().Int64Var(&o.ToRevision, "to-revision", o.ToRevision, "The revision to restore (0 = the previous one)")
	return cmd
}

// Run restores the revision.
func (o *UndoOptions) Run(ctx context.Context) error {
	c, _ := o.f.clients()
	if err := o.f.checkAccess(ctx, o.Namespace, []accessCheck{{"update", "apps", "deployments", ""}, {"list", "apps", "replicasets", ""}}); err != nil {
		return err
	}
	res, err := rollout.Undo(ctx, c.Kube, o.Namespace, o.Name, o.ToRevision, o.f.Owner, false, o.f.Now())
	if err != nil {
		return err
	}
	if res.Skipped {
		fmt.Fprintf(o.f.ErrOut, "deployment %s/%s already runs the template of revision %d: nothing to do\n", o.Namespace, o.Name, res.Revision)
		return nil
	}
	fmt.Fprintf(o.f.ErrOut, "deployment %s/%s rolled back to revision %d (%s)\n", o.Namespace, o.Name, res.Revision, rollout.ImagesString(res.Images))
	return nil
}
