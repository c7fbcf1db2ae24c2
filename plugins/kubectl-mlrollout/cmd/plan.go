package cmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// PlanOptions holds the inputs of 'kubectl mlrollout plan'.
type PlanOptions struct {
	f *Factory
	planFlags
	ImageFlags []string
	Output     string

	Namespace string
	Name      string
	Images    map[string]string
}

// planView is the -o json shape of plan.
type planView struct {
	Namespace  string            `json:"namespace"`
	Deployment string            `json:"deployment"`
	Replicas   int32             `json:"replicas"`
	Mode       plan.Mode         `json:"mode"`
	Images     map[string]string `json:"images"`
	Steps      []plan.StepTarget `json:"steps"`
	Checks     []plan.Check      `json:"checks,omitempty"`
}

// NewCmdPlan returns the 'plan' subcommand.
func NewCmdPlan(f *Factory) *cobra.Command {
	o := &PlanOptions{f: f}
	cmd := &cobra.Command{
		Use:   "plan DEPLOYMENT --image CONTAINER=IMAGE [--plan FILE | --steps ...]",
		Short: "Print the replicas and traffic weight each step can actually reach; changes nothing",
		Example: `  # What would 10,25,50,100 do to a 4-replica Deployment?
  kubectl mlrollout plan mlapp --image model=mlapp:v2 --steps 10,25,50,100`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringArrayVar(&o.ImageFlags, "image", o.ImageFlags, "New image of a container, CONTAINER=IMAGE (repeatable)")
	o.planFlags.add(cmd)
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: json")
	return cmd
}

// Complete resolves the namespace and name.
func (o *PlanOptions) Complete(args []string) error {
	var err error
	o.Namespace, o.Name, err = o.f.target(args)
	return err
}

// Validate checks the flags.
func (o *PlanOptions) Validate() error {
	var err error
	if o.Images, err = parseImages(o.ImageFlags); err != nil {
		return err
	}
	if err := o.planFlags.validate(); err != nil {
		return err
	}
	return printers.ValidateOutput(o.Output, "json")
}

// Run prints the step targets.
func (o *PlanOptions) Run(ctx context.Context) error {
	p, err := o.planFlags.load()
	if err != nil {
		return err
	}
	c, _ := o.f.clients()
	d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return rollout.NotFoundHint(err, o.Namespace, o.Name)
	}
	if err := rollout.ValidateImages(d, o.Images); err != nil {
		return err
	}
	mode := o.planFlags.mode()
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if hpas, err := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(o.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
		if h := rollout.HPAFor(hpas.Items, o.Name); h != nil {
			mode = plan.HPA
			if h.Status.DesiredReplicas > 0 {
				replicas = h.Status.DesiredReplicas
			}
		}
	}
	v := planView{Namespace: o.Namespace, Deployment: o.Name, Replicas: replicas, Mode: mode, Images: o.Images,
		Steps: plan.Targets(p, replicas, mode), Checks: p.Checks}
	if o.Output == "json" {
		return printers.PrintJSON(o.f.Out, v)
	}
	fmt.Fprintf(o.f.Out, "Deployment %s/%s, %d replicas, %s: %s\n", o.Namespace, o.Name, replicas, mode, rollout.ImagesString(o.Images))
	renderTargets(o.f.Out, v.Steps)
	for _, ch := range p.Checks {
		fmt.Fprintf(o.f.Out, "check %s (%s, every %s while baking, failureLimit %d)\n", ch.Name, ch.Kind(), ch.EffectiveInterval(), ch.FailureLimit)
	}
	return nil
}

// renderTargets writes the step table.
func renderTargets(w io.Writer, steps []plan.StepTarget) {
	tw := printers.NewTable(w)
	fmt.Fprintln(tw, "STEP\tACTION\tCANARY\tSTABLE\tTRAFFIC\tBAKE")
	for _, s := range steps {
		if s.Step.Pause {
			fmt.Fprintf(tw, "%d\tpause (wait for promote)\t%d\t%d\t%.1f%%\t-\n", s.Index+1, s.Target.Canary, s.Target.Stable, s.Target.Weight)
			continue
		}
		bake := "-"
		if s.Step.Bake > 0 {
			bake = time.Duration(s.Step.Bake).String()
		}
		action := fmt.Sprintf("weight %d%%", s.Step.Weight)
		if s.Target.Weight != float64(s.Step.Weight) {
			action += fmt.Sprintf(" (reaches %.1f%%)", s.Target.Weight)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.1f%%\t%s\n", s.Index+1, action, s.Target.Canary, s.Target.Stable, s.Target.Weight, bake)
	}
	fmt.Fprintf(tw, "%d\tpromote: stable takes the new images, canary removed\t\t\t\t\n", len(steps)+1)
	_ = tw.Flush()
}
