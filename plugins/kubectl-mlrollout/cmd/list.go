package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// ListOptions holds the inputs of 'kubectl mlrollout list'.
type ListOptions struct {
	f             *Factory
	AllNamespaces bool
	Output        string
}

// NewCmdList returns the 'list' subcommand.
func NewCmdList(f *Factory) *cobra.Command {
	o := &ListOptions{f: f}
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the rollouts in progress",
		Example: "  kubectl mlrollout list -A",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := printers.ValidateOutput(o.Output, "json"); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "List rollouts in every namespace")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: json")
	return cmd
}

// Run lists the Deployments that carry a rollout state.
func (o *ListOptions) Run(ctx context.Context) error {
	c, err := o.f.clients()
	if err != nil {
		return err
	}
	ns := c.Namespace
	if o.AllNamespaces {
		ns = ""
	}
	deps, err := c.Kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing deployments: %w", err)
	}
	byName := map[string]int{}
	for i, d := range deps.Items {
		byName[d.Namespace+"/"+d.Name] = i
	}
	out := []rollout.Summary{}
	now := o.f.Now()
	for i := range deps.Items {
		d := &deps.Items[i]
		if _, ok := d.Annotations[rollout.AnnotationState]; !ok {
			continue
		}
		var canary *appsv1.Deployment
		if j, ok := byName[d.Namespace+"/"+rollout.CanaryName(d.Name)]; ok {
			canary = &deps.Items[j]
		}
		s, err := rollout.Summarize(d, canary, nil, now)
		if err != nil {
			return err
		}
		out = append(out, s)
	}
	if o.Output == "json" {
		return printers.PrintJSON(o.f.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(o.f.ErrOut, "No rollouts in progress.")
		return nil
	}
	tw := printers.NewTable(o.f.Out)
	fmt.Fprintln(tw, "NAMESPACE\tDEPLOYMENT\tROLLOUT\tPHASE\tSTEP\tTRAFFIC\tCANARY\tOWNER\tAGE")
	for _, s := range out {
		owner := s.Owner
		switch {
		case owner == "":
			owner = "-"
		case !s.OwnerAlive:
			owner += " (not responding)"
		}
		canary := "-"
		if s.Canary != nil {
			canary = fmt.Sprintf("%d/%d", s.Canary.Ready, s.Canary.Replicas)
		}
		age := "-"
		if s.StartedAt != nil {
			age = rollout.Age(now.Sub(*s.StartedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%.1f%%\t%s\t%s\t%s\n", s.Namespace, s.Deployment, s.ID, s.Phase, s.Step, s.Steps, s.ActualWeight, canary, owner, age)
	}
	return tw.Flush()
}
