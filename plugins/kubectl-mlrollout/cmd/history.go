package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// HistoryOptions holds the inputs of 'kubectl mlrollout history'.
type HistoryOptions struct {
	f         *Factory
	Output    string
	Namespace string
	Name      string
}

// NewCmdHistory returns the 'history' subcommand.
func NewCmdHistory(f *Factory) *cobra.Command {
	o := &HistoryOptions{f: f}
	cmd := &cobra.Command{
		Use:               "history DEPLOYMENT",
		Short:             fmt.Sprintf("List the last %d rollouts with their check results", rollout.HistoryLimit),
		Example:           "  kubectl mlrollout history mlapp -o json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Namespace, o.Name, err = f.target(args); err != nil {
				return err
			}
			if err := printers.ValidateOutput(o.Output, "json"); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: json")
	return cmd
}

// Run prints the history, oldest first.
func (o *HistoryOptions) Run(ctx context.Context) error {
	c, _ := o.f.clients()
	d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return rollout.NotFoundHint(err, o.Namespace, o.Name)
	}
	h, err := rollout.ReadHistory(d)
	if err != nil {
		return err
	}
	if o.Output == "json" {
		if h == nil {
			h = []rollout.Record{}
		}
		return printers.PrintJSON(o.f.Out, h)
	}
	if len(h) == 0 {
		fmt.Fprintf(o.f.ErrOut, "No rollouts recorded on %s/%s.\n", o.Namespace, o.Name)
		return nil
	}
	tw := printers.NewTable(o.f.Out)
	fmt.Fprintln(tw, "ID\tRESULT\tSTEPS\tIMAGES\tFINISHED\tBY\tCHECKS\tREASON")
	now := o.f.Now()
	for _, r := range h {
		checks := 0
		failed := 0
		for _, c := range r.Checks {
			checks += c.Runs
			failed += c.Failures
		}
		steps := "-"
		if r.Steps > 0 {
			steps = fmt.Sprintf("%d/%d", r.StepsReached, r.Steps)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\t%d runs, %d failed\t%s\n", r.ID, r.Result, steps, rollout.ImagesString(r.Images),
			rollout.Age(now.Sub(r.FinishedAt)), r.By, checks, failed, orDash(r.Reason))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
