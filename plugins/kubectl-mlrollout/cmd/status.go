package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// StatusOptions holds the inputs of 'kubectl mlrollout status'.
type StatusOptions struct {
	f       *Factory
	Watch   bool
	Timeout time.Duration
	Output  string

	Namespace string
	Name      string
}

// NewCmdStatus returns the 'status' subcommand.
func NewCmdStatus(f *Factory) *cobra.Command {
	o := &StatusOptions{f: f}
	cmd := &cobra.Command{
		Use:   "status DEPLOYMENT",
		Short: "Show the rollout in progress (exit 5 while one runs, 4 when paused)",
		Long: `Show the rollout in progress as recorded on the Deployment: step, replicas per track, each check's
last result, and who drives it. With -w, wait until the rollout ends and exit with its outcome.

` + ExitCodes,
		Example: `  kubectl mlrollout status mlapp
  kubectl mlrollout status mlapp -w --timeout 10m
  kubectl mlrollout status mlapp -o json`,
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
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", o.Watch, "Wait until the rollout ends (promoted, rolled back, aborted or paused)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "With -w, give up after this long (exit 3); 0 waits forever")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: json")
	return cmd
}

// Complete resolves the namespace and name.
func (o *StatusOptions) Complete(args []string) error {
	var err error
	o.Namespace, o.Name, err = o.f.target(args)
	return err
}

// Validate checks the flags.
func (o *StatusOptions) Validate() error {
	if o.Timeout < 0 {
		return errors.New("--timeout must not be negative")
	}
	if o.Timeout > 0 && !o.Watch {
		return errors.New("--timeout only applies with --watch")
	}
	return printers.ValidateOutput(o.Output, "json")
}

// summarize reads the objects behind a Summary.
func (o *StatusOptions) summarize(ctx context.Context, d *appsv1.Deployment) (rollout.Summary, error) {
	c, _ := o.f.clients()
	canary, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, rollout.CanaryName(o.Name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		canary, err = nil, nil
	}
	if err != nil {
		return rollout.Summary{}, fmt.Errorf("getting deployment %q: %w", rollout.CanaryName(o.Name), err)
	}
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	if hpas, err := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(o.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
		hpa = rollout.HPAFor(hpas.Items, o.Name)
	}
	return rollout.Summarize(d, canary, hpa, o.f.Now())
}

func (o *StatusOptions) print(s rollout.Summary) error {
	if o.Output == "json" {
		return printers.PrintJSON(o.f.Out, s)
	}
	rollout.RenderStatus(o.f.Out, s, o.f.Now())
	return nil
}

// Run prints the status, or waits for the end with -w.
func (o *StatusOptions) Run(ctx context.Context) error {
	c, _ := o.f.clients()
	d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return rollout.NotFoundHint(err, o.Namespace, o.Name)
	}
	s, err := o.summarize(ctx, d)
	if err != nil {
		return err
	}
	if !o.Watch {
		if err := o.print(s); err != nil {
			return err
		}
		switch {
		case !s.InProgress:
			return nil
		case s.Phase == string(rollout.PhasePaused):
			return &cliutil.ExitError{Code: 4}
		default:
			return &cliutil.ExitError{Code: 5}
		}
	}
	return o.watch(ctx, d, s)
}

// watch follows the Deployment until the rollout ends and exits with its outcome.
func (o *StatusOptions) watch(ctx context.Context, d *appsv1.Deployment, s rollout.Summary) error {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, rollout.ErrTimeout)
		defer cancel()
	}
	c, _ := o.f.clients()
	id := s.ID
	last := ""
	for {
		st, err := rollout.ReadState(d)
		if err != nil {
			return err
		}
		if st == nil || st.Phase == rollout.PhasePaused {
			s, err := o.summarize(ctx, d)
			if err != nil {
				return err
			}
			if err := o.print(s); err != nil {
				return err
			}
			switch {
			case st != nil:
				return &cliutil.ExitError{Code: 4}
			case s.Last != nil && s.Last.ID == id && s.Last.Result == rollout.ResultRolledBack:
				return &cliutil.ExitError{Code: 2}
			}
			return nil
		}
		id = st.ID
		line := fmt.Sprintf("rollout %s: %s, step %d/%d %s", st.ID, st.Phase, min(st.Step+1, len(st.Plan.Steps)), len(st.Plan.Steps), stepName(st))
		if line != last && o.Output == "" {
			fmt.Fprintln(o.f.ErrOut, line)
			last = line
		}
		w, err := c.Kube.AppsV1().Deployments(o.Namespace).Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", o.Name).String(),
			ResourceVersion: d.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return o.watchEnded(ctx)
			}
			return fmt.Errorf("watching deployment %q: %w", o.Name, err)
		}
		next, err := nextDeployment(ctx, w)
		w.Stop()
		if ctx.Err() != nil {
			return o.watchEnded(ctx)
		}
		if err != nil {
			return err
		}
		if next == nil { // watch expired: read again
			if next, err = c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err != nil {
				return rollout.NotFoundHint(err, o.Namespace, o.Name)
			}
		}
		d = next
	}
}

func stepName(st *rollout.State) string {
	if step, ok := st.CurrentStep(); ok {
		return step.String()
	}
	return "promote"
}

func (o *StatusOptions) watchEnded(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), rollout.ErrTimeout) {
		return cliutil.Exit(3, fmt.Errorf("timed out after %s waiting for the rollout of %s/%s to end", o.Timeout, o.Namespace, o.Name))
	}
	return context.Cause(ctx)
}

// nextDeployment returns the next version of the watched Deployment (nil when the watch closed).
func nextDeployment(ctx context.Context, w watch.Interface) (*appsv1.Deployment, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, errors.New("the deployment was deleted")
			case watch.Error:
				return nil, nil
			}
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				return d, nil
			}
		}
	}
}
