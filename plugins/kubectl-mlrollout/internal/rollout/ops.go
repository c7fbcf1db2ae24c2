package rollout

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

// ErrNothingInProgress says there is no rollout to act on.
var ErrNothingInProgress = errors.New("no rollout in progress")

// StartSpec describes a new rollout.
type StartSpec struct {
	Images         map[string]string
	Plan           *plan.Plan
	Mode           plan.Mode
	OnFailure      string
	PrometheusURL  string
	PrometheusAuth string
	Takeover       bool
}

// NewState builds the initial state of a rollout of d.
func NewState(d *appsv1.Deployment, spec StartSpec, owner string, now time.Time) *State {
	return &State{
		ID:             rolloutID(now),
		Phase:          PhaseProgressing,
		Images:         spec.Images,
		PreviousImages: previous(d, spec.Images),
		Plan:           *spec.Plan,
		Mode:           spec.Mode,
		OnFailure:      spec.OnFailure,
		PrometheusURL:  spec.PrometheusURL,
		PrometheusAuth: spec.PrometheusAuth,
		Replicas:       specReplicas(d),
		StepStartedAt:  now,
		Checks:         NewCheckStatuses(spec.Plan),
		Owner:          owner,
		Heartbeat:      now,
		StartedAt:      now,
	}
}

// rolloutID names a rollout by its start time (UTC, to the millisecond).
func rolloutID(now time.Time) string {
	return fmt.Sprintf("%s-%03d", now.UTC().Format("20060102-150405"), now.Nanosecond()/int(time.Millisecond))
}

func previous(d *appsv1.Deployment, images map[string]string) map[string]string {
	have := Images(&d.Spec.Template)
	out := map[string]string{}
	for c := range images {
		out[c] = have[c]
	}
	return out
}

// InProgressError names the rollout in progress and who drives it.
func InProgressError(name string, st *State, now time.Time) error {
	if st.Owner != "" && !st.Stale(now) {
		return fmt.Errorf("rollout %s of deployment %q is in progress (%s), driven by %s (heartbeat %s ago)",
			st.ID, name, st.Phase, st.Owner, now.Sub(st.Heartbeat).Round(time.Second))
	}
	who := "released by its owner"
	if st.Owner != "" {
		who = fmt.Sprintf("owner %s stopped responding %s ago", st.Owner, now.Sub(st.Heartbeat).Round(time.Second))
	}
	return fmt.Errorf("rollout %s of deployment %q is in progress (%s, %s): run `kubectl mlrollout resume %s`, `abort %s`, or start --takeover",
		st.ID, name, st.Phase, who, name, name)
}

// Claim writes the state of a new rollout on deployment name, or with spec.Takeover adopts a rollout
// in progress whose owner is gone. It fails, changing nothing, when a live owner drives one.
func Claim(ctx context.Context, kube kubernetes.Interface, ns, name, owner string, spec StartSpec, now time.Time) (*State, error) {
	var out *State
	err := Mutate(ctx, kube, ns, name, func(d *appsv1.Deployment, st *State) (*State, error) {
		if st != nil {
			if (st.Owner != "" && !st.Stale(now) && st.Owner != owner) || !spec.Takeover {
				return nil, InProgressError(name, st, now)
			}
			if !reflect.DeepEqual(st.Images, spec.Images) {
				return nil, fmt.Errorf("rollout %s in progress rolls out %s, not %s: abort it first", st.ID, ImagesString(st.Images), ImagesString(spec.Images))
			}
			st.Owner, st.Heartbeat = owner, now
			out = st
			return st, nil
		}
		out = NewState(d, spec, owner, now)
		return out, nil
	})
	return out, err
}

// Acquire makes owner the driver of the rollout in progress and applies change to its state.
// A live other owner makes it fail naming that owner, unless onLive handles it (returning the state
// to write, or errNoChange-like nil to write nothing).
func Acquire(ctx context.Context, kube kubernetes.Interface, ns, name, owner string, now time.Time,
	change func(st *State) error, onLive func(st *State) (*State, error)) (*State, bool, error) {
	var out *State
	acquired := false
	err := Mutate(ctx, kube, ns, name, func(d *appsv1.Deployment, st *State) (*State, error) {
		if st == nil {
			return nil, fmt.Errorf("%w on deployment %q", ErrNothingInProgress, name)
		}
		if st.Owner != "" && st.Owner != owner && !st.Stale(now) {
			if onLive == nil {
				return nil, InProgressError(name, st, now)
			}
			next, err := onLive(st)
			out = next
			return next, err
		}
		if err := change(st); err != nil {
			return nil, err
		}
		st.Owner, st.Heartbeat = owner, now
		out, acquired = st, true
		return st, nil
	})
	return out, acquired, err
}

// restartStep restarts the current step: new readiness deadline, checks run again.
func restartStep(st *State, now time.Time) {
	st.StepStartedAt = now
	st.ReadyAt = nil
	for i := range st.Checks {
		st.Checks[i].StepRuns, st.Checks[i].StepFailures = 0, 0
	}
}

// ResumeChange continues a paused rollout (re-running the current step's checks) or an abandoned one.
func ResumeChange(now time.Time) func(st *State) error {
	return func(st *State) error {
		switch st.Phase {
		case PhasePaused:
			st.Phase, st.Message = PhaseProgressing, ""
			if step, ok := st.CurrentStep(); ok && !step.Pause {
				restartStep(st, now)
			}
		case PhaseProgressing:
			restartStep(st, now)
		}
		return nil
	}
}

// PromoteChange skips the current step (or all of them with full).
func PromoteChange(full bool, now time.Time) func(st *State) error {
	return func(st *State) error {
		switch st.Phase {
		case PhaseRollingBack, PhaseAborting:
			return fmt.Errorf("rollout %s is being rolled back (%s)", st.ID, st.Phase)
		case PhasePromoting:
			return nil
		}
		st.Phase, st.Message = PhaseProgressing, ""
		if full {
			st.Phase = PhasePromoting
			return nil
		}
		st.Step++
		restartStep(st, now)
		if st.Step >= len(st.Plan.Steps) {
			st.Phase = PhasePromoting
		}
		return nil
	}
}

// PromoteRequest asks the live owner to promote.
func PromoteRequest(full bool) func(st *State) (*State, error) {
	return func(st *State) (*State, error) {
		switch st.Phase {
		case PhaseRollingBack, PhaseAborting:
			return nil, fmt.Errorf("rollout %s is being rolled back (%s)", st.ID, st.Phase)
		}
		st.PromoteRequest = "step"
		if full {
			st.PromoteRequest = "full"
		}
		return st, nil
	}
}

// AbortChange marks the rollout for abort; the caller's engine then removes the canary.
func AbortChange(by string) func(st *State) error {
	return func(st *State) error {
		if st.Phase == PhasePromoting {
			return fmt.Errorf("rollout %s is already promoting the stable deployment; wait for it and use `kubectl mlrollout undo`", st.ID)
		}
		if st.Phase != PhaseRollingBack {
			st.Phase = PhaseAborting
			st.Message = "aborted by " + by
		}
		return nil
	}
}

// Pause pauses a progressing rollout; its driver stops with exit code 4.
func Pause(ctx context.Context, kube kubernetes.Interface, ns, name, by string, now time.Time) (*State, error) {
	var out *State
	err := Mutate(ctx, kube, ns, name, func(d *appsv1.Deployment, st *State) (*State, error) {
		if st == nil {
			return nil, fmt.Errorf("%w on deployment %q", ErrNothingInProgress, name)
		}
		out = st
		switch st.Phase {
		case PhasePaused:
			return nil, errNoChange
		case PhaseProgressing:
			st.Phase = PhasePaused
			st.Message = fmt.Sprintf("paused by %s: run `kubectl mlrollout resume %s` or `promote %s`", by, name, name)
			_ = Emit(ctx, kube, d, corev1.EventTypeNormal, "CanaryPaused", st.Message, now)
			return st, nil
		default:
			return nil, fmt.Errorf("rollout %s is %s and cannot be paused", st.ID, st.Phase)
		}
	})
	return out, err
}

// revisionOf reads an object's deployment.kubernetes.io/revision annotation.
func revisionOf(o metav1.Object) int64 {
	v, _ := strconv.ParseInt(o.GetAnnotations()["deployment.kubernetes.io/revision"], 10, 64)
	return v
}

// UndoResult says what Undo did.
type UndoResult struct {
	Revision int64             `json:"revision"`
	Images   map[string]string `json:"images"`
	Skipped  bool              `json:"skipped"`
}

// Undo restores the pod template of a previous ReplicaSet revision of deployment name, like
// `kubectl rollout undo` (toRevision 0 = the previous revision). It refuses while a rollout runs.
func Undo(ctx context.Context, kube kubernetes.Interface, ns, name string, toRevision int64, by string, dryRun bool, now time.Time) (*UndoResult, error) {
	var res *UndoResult
	err := Mutate(ctx, kube, ns, name, func(d *appsv1.Deployment, st *State) (*State, error) {
		if st != nil {
			return nil, fmt.Errorf("rollout %s is in progress on deployment %q: abort it instead", st.ID, name)
		}
		if d.Spec.Paused {
			return nil, fmt.Errorf("deployment %q is paused (spec.paused); resume it with `kubectl rollout resume` first", name)
		}
		rss, err := kube.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
		if err != nil {
			return nil, fmt.Errorf("listing replicasets: %w", err)
		}
		var owned []*appsv1.ReplicaSet
		for i := range rss.Items {
			if ref := metav1.GetControllerOf(&rss.Items[i]); ref != nil && ref.UID == d.UID {
				owned = append(owned, &rss.Items[i])
			}
		}
		sort.Slice(owned, func(i, j int) bool { return revisionOf(owned[i]) > revisionOf(owned[j]) })
		current := revisionOf(d)
		var pick *appsv1.ReplicaSet
		for _, rs := range owned {
			r := revisionOf(rs)
			if (toRevision == 0 && r < current) || (toRevision != 0 && r == toRevision) {
				pick = rs
				break
			}
		}
		if pick == nil {
			if toRevision == 0 {
				return nil, fmt.Errorf("deployment %q has no revision before %d", name, current)
			}
			return nil, fmt.Errorf("deployment %q has no revision %d", name, toRevision)
		}
		tmpl := *pick.Spec.Template.DeepCopy()
		delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
		res = &UndoResult{Revision: revisionOf(pick), Images: Images(&tmpl)}
		cur := d.Spec.Template.DeepCopy()
		delete(cur.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
		if reflect.DeepEqual(cur, &tmpl) {
			res.Skipped = true
			return nil, errNoChange
		}
		if dryRun {
			return nil, errNoChange
		}
		rec := Record{ID: rolloutID(now), Result: ResultUndone, Images: res.Images, PreviousImages: Images(&d.Spec.Template),
			Reason: fmt.Sprintf("restored revision %d", res.Revision), StartedAt: now, FinishedAt: now, By: by}
		d.Spec.Template = tmpl
		if err := appendHistory(d, rec); err != nil {
			return nil, err
		}
		_ = Emit(ctx, kube, d, corev1.EventTypeNormal, "CanaryUndo", fmt.Sprintf("restored revision %d (%s)", res.Revision, ImagesString(res.Images)), now)
		return nil, nil
	})
	return res, err
}
