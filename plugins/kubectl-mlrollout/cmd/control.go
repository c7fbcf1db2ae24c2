package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// ControlOptions holds the inputs of promote, pause, resume and abort.
type ControlOptions struct {
	f       *Factory
	verb    string
	Full    bool
	Timeout time.Duration
	Output  string

	Namespace string
	Name      string
}

func newControlCmd(f *Factory, verb, short, long, example string) (*cobra.Command, *ControlOptions) {
	o := &ControlOptions{f: f, verb: verb, Timeout: 30 * time.Minute}
	cmd := &cobra.Command{
		Use:               verb + " DEPLOYMENT",
		Short:             short,
		Long:              long + "\n\n" + ExitCodes,
		Example:           example,
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
	if verb != "pause" {
		cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "Give up driving after this long (exit 3, the rollout stays resumable); 0 waits forever")
		cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format of the final result: json")
	}
	return cmd, o
}

// NewCmdPromote returns the 'promote' subcommand.
func NewCmdPromote(f *Factory) *cobra.Command {
	cmd, o := newControlCmd(f, "promote", "Continue past a pause or the current step (--full: promote now)",
		`Continue a rollout past its pause step (or past the current step and its bake), then drive it on.
With --full, skip the remaining steps and promote the canary's images to the stable Deployment now.
If another live process drives the rollout, the request is handed to it: promote returns once that
process has taken it (within --timeout, else exit 3), and -o json prints the handover.`,
		`  kubectl mlrollout promote mlapp
  kubectl mlrollout promote mlapp --full`)
	cmd.Flags().BoolVar(&o.Full, "full", o.Full, "Skip all remaining steps and promote now")
	return cmd
}

// NewCmdPause returns the 'pause' subcommand.
func NewCmdPause(f *Factory) *cobra.Command {
	cmd, _ := newControlCmd(f, "pause", "Pause a rollout in progress (its driver exits with 4)",
		"Pause a progressing rollout: the process driving it stops with exit code 4 and the tracks stay as they are\nuntil `resume`, `promote` or `abort`. pause itself exits 0 once the rollout is paused.",
		"  kubectl mlrollout pause mlapp")
	return cmd
}

// NewCmdResume returns the 'resume' subcommand.
func NewCmdResume(f *Factory) *cobra.Command {
	cmd, _ := newControlCmd(f, "resume", "Resume a paused or interrupted rollout and drive it",
		`Resume a rollout that was paused (a failed check with --on-failure=pause re-runs its checks) or whose
driver went away (Ctrl-C, a timeout, a killed process: allowed once its heartbeat is stale), and drive it.`,
		"  kubectl mlrollout resume mlapp")
	return cmd
}

// NewCmdAbort returns the 'abort' subcommand.
func NewCmdAbort(f *Factory) *cobra.Command {
	cmd, _ := newControlCmd(f, "abort", "Remove the canary and restore the stable replicas",
		`Abort the rollout: remove the canary Deployment and restore the stable replicas; the stable template is
untouched. A process still driving the rollout stops with exit code 1. Exits 0 when there is nothing to abort.`,
		"  kubectl mlrollout abort mlapp")
	return cmd
}

// Complete resolves the namespace and name.
func (o *ControlOptions) Complete(args []string) error {
	var err error
	o.Namespace, o.Name, err = o.f.target(args)
	return err
}

// Validate checks the flags.
func (o *ControlOptions) Validate() error {
	if o.Timeout < 0 {
		return errors.New("--timeout must not be negative")
	}
	return printers.ValidateOutput(o.Output, "json")
}

// Run performs the verb.
func (o *ControlOptions) Run(ctx context.Context) error {
	c, _ := o.f.clients()
	now := o.f.Now()
	if o.verb == "pause" {
		st, err := rollout.Pause(ctx, c.Kube, o.Namespace, o.Name, o.f.Owner, now)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.f.ErrOut, "rollout %s of %s/%s paused\n", st.ID, o.Namespace, o.Name)
		return nil
	}
	var change func(*rollout.State) error
	var onLive func(*rollout.State) (*rollout.State, error)
	switch o.verb {
	case "promote":
		change, onLive = rollout.PromoteChange(o.Full, now), rollout.PromoteRequest(o.Full)
	case "resume":
		change = rollout.ResumeChange(now)
	case "abort":
		change = rollout.AbortChange(o.f.Owner)
		onLive = func(st *rollout.State) (*rollout.State, error) {
			if err := change(st); err != nil {
				return nil, err
			}
			st.Owner, st.Heartbeat = o.f.Owner, now
			return st, nil
		}
	}
	if err := o.f.checkAccess(ctx, o.Namespace, driveAccess(&rollout.State{})); err != nil {
		return err
	}
	st, acquired, err := rollout.Acquire(ctx, c.Kube, o.Namespace, o.Name, o.f.Owner, now, change, onLive)
	if errors.Is(err, rollout.ErrNothingInProgress) && o.verb == "abort" {
		fmt.Fprintf(o.f.ErrOut, "no rollout in progress on %s/%s: nothing to abort\n", o.Namespace, o.Name)
		return nil
	}
	if err != nil {
		return err
	}
	if !acquired && o.verb == "promote" {
		return o.handedOff(ctx, st)
	}
	if o.verb == "abort" && !acquired {
		st.Owner = o.f.Owner
	}
	fmt.Fprintf(o.f.ErrOut, "%s: rollout %s of %s/%s, step %d/%d (%s)\n", o.verb, st.ID, o.Namespace, o.Name,
		min(st.Step+1, len(st.Plan.Steps)), len(st.Plan.Steps), st.Phase)
	before := o.f.Requests()
	res, err := o.f.drive(ctx, o.Namespace, o.Name, st, o.Timeout)
	if err != nil {
		return err
	}
	return finish(o.f, o.Output, o.Namespace, o.Name, res, o.f.Requests()-before)
}

// handoff is what `promote -o json` prints when another process drives the rollout.
type handoff struct {
	Namespace  string `json:"namespace"`
	Deployment string `json:"deployment"`
	Rollout    string `json:"rollout"`
	Promote    string `json:"promote"`  // step or full
	DrivenBy   string `json:"drivenBy"` // the process that took the request
	Taken      bool   `json:"taken"`
	Phase      string `json:"phase"` // after the driver took the request
	Step       int    `json:"step"`  // 1-based, after the driver took the request
	Steps      int    `json:"steps"`
}

// handedOff waits, within --timeout, for the live driver to take the promote request: the request
// disappears from the state (or the rollout ends). A driver that goes away first is an error.
func (o *ControlOptions) handedOff(ctx context.Context, st *rollout.State) error {
	fmt.Fprintf(o.f.ErrOut, "promotion of rollout %s requested; %s drives it\n", st.ID, st.Owner)
	h := handoff{Namespace: o.Namespace, Deployment: o.Name, Rollout: st.ID, Promote: st.PromoteRequest, DrivenBy: st.Owner}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, rollout.ErrTimeout)
		defer cancel()
	}
	c, _ := o.f.clients()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			cur, rerr := rollout.ReadState(d)
			if rerr != nil {
				return rerr
			}
			switch {
			case cur == nil || cur.ID != st.ID || cur.PromoteRequest == "":
				h.Taken = true
				if cur != nil && cur.ID == st.ID {
					h.Phase, h.Step, h.Steps = string(cur.Phase), min(cur.Step+1, len(cur.Plan.Steps)), len(cur.Plan.Steps)
				} else {
					h.Phase = "Ended"
				}
				fmt.Fprintf(o.f.ErrOut, "%s took the promotion (rollout %s: %s)\n", st.Owner, st.ID, h.Phase)
				if o.Output == "json" {
					return printers.PrintJSON(o.f.Out, h)
				}
				return nil
			case cur.Stale(o.f.Now()):
				return fmt.Errorf("promotion of rollout %s was requested but %s stopped driving it before taking it; run `kubectl mlrollout promote %s` again to drive it here", st.ID, st.Owner, o.Name)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), rollout.ErrTimeout) {
				return cliutil.Exit(3, fmt.Errorf("timed out after %s waiting for %s to take the promotion of rollout %s (the request stays in place)", o.Timeout, st.Owner, st.ID))
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}
