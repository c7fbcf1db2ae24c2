package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

// FieldManager is the field manager of every write.
const FieldManager = "kubectl-mlrollout"

// Outcome is how a run of the engine ended.
type Outcome string

// Outcomes of Engine.Run.
const (
	OutcomePromoted   Outcome = "Promoted"
	OutcomeRolledBack Outcome = "RolledBack"
	OutcomeAborted    Outcome = "Aborted"
	OutcomePaused     Outcome = "Paused"
	OutcomeTimedOut   Outcome = "TimedOut"
)

// RunResult is what Engine.Run reports.
type RunResult struct {
	Outcome Outcome `json:"outcome"`
	Message string  `json:"message"`
	// Record is the history record of a finished rollout.
	Record *Record `json:"record,omitempty"`
	// State is the state left behind by a paused or timed-out rollout.
	State *State `json:"state,omitempty"`
	// StepsRun counts the steps this process advanced.
	StepsRun int `json:"stepsRun"`
}

// ErrTimeout is the context cause the caller sets when --timeout expires.
var ErrTimeout = errors.New("timed out")

// errRetry asks the loop to reconcile again at once (state changed under us, or a step advanced).
var errRetry = errors.New("retry")

// Engine drives one rollout of the stable Deployment Name. It is watch-driven: informers on the
// namespace's Deployments, on the pods the stable selector matches, and on the HPA if one targets
// the Deployment wake it; timers wake it only for bakes, check intervals, deadlines and heartbeats.
type Engine struct {
	Kube      kubernetes.Interface
	Namespace string
	Name      string
	Owner     string
	Checker   *Checker
	// Out receives progress lines.
	Out io.Writer
	Now func() time.Time
	// Heartbeat overrides HeartbeatInterval (tests).
	Heartbeat time.Duration
	// OnWrite, when set, is called after every successful write to the stable Deployment's state.
	OnWrite func(st *State)

	mu     sync.Mutex
	stable *appsv1.Deployment
	kick   chan struct{}
	deps   cache.Indexer
	pods   cache.Indexer
	hpas   cache.Indexer
	steps  int
	id     string
	warned bool
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) heartbeat() time.Duration {
	if e.Heartbeat > 0 {
		return e.Heartbeat
	}
	return HeartbeatInterval
}

func (e *Engine) logf(format string, args ...any) {
	if e.Out != nil {
		fmt.Fprintf(e.Out, format+"\n", args...)
	}
}

func rv(o metav1.Object) uint64 {
	v, err := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// setStable keeps the newest stable Deployment seen, from our own writes or from the watch.
func (e *Engine) setStable(d *appsv1.Deployment) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stable == nil || d == nil || rv(d) == 0 || rv(d) >= rv(e.stable) {
		e.stable = d
	}
}

func (e *Engine) getStable() *appsv1.Deployment {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stable
}

func (e *Engine) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// start runs the informers until stop is closed.
func (e *Engine) start(ctx context.Context, stop <-chan struct{}) error {
	d, err := e.Kube.AppsV1().Deployments(e.Namespace).Get(ctx, e.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("getting deployment %q: %w", e.Name, err)
	}
	e.setStable(d)
	e.kick = make(chan struct{}, 1)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { e.poke() },
		UpdateFunc: func(_, _ any) { e.poke() },
		DeleteFunc: func(any) { e.poke() },
	}
	apps, core := e.Kube.AppsV1().Deployments(e.Namespace), e.Kube.CoreV1().Pods(e.Namespace)
	depInf := e.newInformer(&appsv1.Deployment{}, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return apps.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return apps.Watch(ctx, o) })
	_, _ = depInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { e.onDeployment(o) },
		UpdateFunc: func(_, o any) { e.onDeployment(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if dd, ok := o.(*appsv1.Deployment); ok && dd.Name == e.Name {
				e.mu.Lock()
				e.stable = nil
				e.mu.Unlock()
			}
			e.poke()
		},
	})
	sel := metav1.FormatLabelSelector(d.Spec.Selector)
	podInf := e.newInformer(&corev1.Pod{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return core.List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return core.Watch(ctx, o)
		})
	_, _ = podInf.AddEventHandler(handler)
	e.deps, e.pods = depInf.GetIndexer(), podInf.GetIndexer()
	informersToRun := []cache.SharedIndexInformer{depInf, podInf}

	hpaClient := e.Kube.AutoscalingV2().HorizontalPodAutoscalers(e.Namespace)
	// From the watch cache: a consistent list waits for the cache to catch up with the writes just
	// made to other resources (80 ms here); whether an HPA targets the Deployment is not that fresh.
	hpas, err := hpaClient.List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	switch {
	case err != nil && !apierrors.IsForbidden(err):
		return fmt.Errorf("listing horizontalpodautoscalers: %w", err)
	case err == nil:
		if h := HPAFor(hpas.Items, e.Name); h != nil {
			byName := fields.OneTermEqualSelector("metadata.name", h.Name).String()
			hinf := e.newInformer(&autoscalingv2.HorizontalPodAutoscaler{},
				func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
					o.FieldSelector = byName
					return hpaClient.List(ctx, o)
				},
				func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
					o.FieldSelector = byName
					return hpaClient.Watch(ctx, o)
				})
			_, _ = hinf.AddEventHandler(handler)
			e.hpas = hinf.GetIndexer()
			informersToRun = append(informersToRun, hinf)
		}
	}
	for _, inf := range informersToRun {
		go inf.Run(stop)
	}
	// cache.WaitForCacheSync polls every 100 ms: a tenth of a second lost before every rollout.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		synced := true
		for _, inf := range informersToRun {
			synced = synced && inf.HasSynced()
		}
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("watching deployment %q: %w", e.Name, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// newInformer is a shared informer over one list/watch (client-go's informer factory would link
// every API group's informers into the binary).
func (e *Engine) newInformer(obj runtime.Object, list cache.ListWithContextFunc, w cache.WatchFuncWithContext) cache.SharedIndexInformer {
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: w}, e.Kube)
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
}

func (e *Engine) onDeployment(o any) {
	if d, ok := o.(*appsv1.Deployment); ok && d.Name == e.Name {
		e.setStable(d)
	}
	e.poke()
}

func (e *Engine) canary() *appsv1.Deployment {
	o, ok, _ := e.deps.GetByKey(e.Namespace + "/" + CanaryName(e.Name))
	if !ok {
		return nil
	}
	return o.(*appsv1.Deployment)
}

func (e *Engine) podList() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range e.pods.List() {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

func (e *Engine) hpa() *autoscalingv2.HorizontalPodAutoscaler {
	if e.hpas == nil {
		return nil
	}
	var list []*autoscalingv2.HorizontalPodAutoscaler
	for _, o := range e.hpas.List() {
		list = append(list, o.(*autoscalingv2.HorizontalPodAutoscaler))
	}
	return FindHPA(list, e.Name)
}

// Run drives the rollout until it is promoted, rolled back, aborted, paused, or ctx ends. The
// caller must own the rollout (see Claim). On a pause, a timeout or an interruption the ownership is
// released so that another process may resume without --takeover.
func (e *Engine) Run(ctx context.Context) (*RunResult, error) {
	stop := make(chan struct{})
	defer close(stop)
	if err := e.start(ctx, stop); err != nil {
		return nil, err
	}
	for {
		res, wake, err := e.reconcile(ctx)
		if errors.Is(err, errRetry) {
			continue
		}
		if err == nil && res == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil && ctx.Err() != nil {
			return e.interrupted(ctx)
		}
		if err != nil {
			e.release()
			return nil, err
		}
		if res != nil {
			res.StepsRun = e.steps
			if res.Outcome == OutcomePaused {
				e.release()
			}
			return res, nil
		}
		d := time.Until(wake)
		if wake.IsZero() || d > time.Hour {
			d = time.Hour
		}
		timer := time.NewTimer(max(d, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return e.interrupted(ctx)
		case <-e.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// interrupted releases ownership and reports a timeout or an interruption.
func (e *Engine) interrupted(ctx context.Context) (*RunResult, error) {
	st := e.release()
	where := ""
	if st != nil {
		where = fmt.Sprintf(" at step %d/%d", min(st.Step+1, len(st.Plan.Steps)), len(st.Plan.Steps))
	}
	if errors.Is(context.Cause(ctx), ErrTimeout) {
		msg := fmt.Sprintf("timed out%s; the rollout is left as it is: run `kubectl mlrollout resume %s` or `abort %s`", where, e.Name, e.Name)
		e.logf("%s", msg)
		return &RunResult{Outcome: OutcomeTimedOut, State: st, StepsRun: e.steps, Message: msg}, nil
	}
	return nil, fmt.Errorf("interrupted%s; the rollout is left as it is: run `kubectl mlrollout resume %s` or `abort %s`", where, e.Name, e.Name)
}

// release clears the owner so another process may continue without --takeover.
func (e *Engine) release() *State {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var left *State
	_ = Mutate(ctx, e.Kube, e.Namespace, e.Name, func(_ *appsv1.Deployment, st *State) (*State, error) {
		if st == nil || st.Owner != e.Owner {
			left = st
			return nil, errNoChange
		}
		st.Owner = ""
		left = st
		return st, nil
	})
	return left
}

// write stores next (nil removes the state) and applies mutate to the stable Deployment, with
// optimistic concurrency: on a conflict it re-reads, and re-applies the change only if nobody else
// changed the state meanwhile (otherwise it returns errRetry to reconcile against the new state).
func (e *Engine) write(ctx context.Context, base *appsv1.Deployment, next *State, mutate func(*appsv1.Deployment)) error {
	baseState := base.Annotations[AnnotationState]
	obj := base
	for attempt := 0; ; attempt++ {
		d := obj.DeepCopy()
		writeState(d, next)
		if mutate != nil {
			mutate(d)
		}
		var res *appsv1.Deployment
		var err error
		patch, patched := annotationPatch(obj, d)
		if patched {
			res, err = e.Kube.AppsV1().Deployments(e.Namespace).Patch(ctx, e.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		} else {
			res, err = e.Kube.AppsV1().Deployments(e.Namespace).Update(ctx, d, metav1.UpdateOptions{FieldManager: FieldManager})
		}
		if err == nil {
			e.setStable(res)
			if e.OnWrite != nil {
				e.OnWrite(next)
			}
			return nil
		}
		// A patch whose test failed (the state changed since obj was read) is refused as invalid.
		stale := apierrors.IsConflict(err) || (patched && apierrors.IsInvalid(err))
		if !stale || attempt >= 10 {
			return fmt.Errorf("updating deployment %q: %w", e.Name, err)
		}
		fresh, err := e.Kube.AppsV1().Deployments(e.Namespace).Get(ctx, e.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("getting deployment %q: %w", e.Name, err)
		}
		e.setStable(fresh)
		if fresh.Annotations[AnnotationState] != baseState {
			return errRetry
		}
		obj = fresh
	}
}

// reconcile looks at the current objects and takes the next action. It returns a result when the
// run is over, or the time it next needs to wake up without a watch event.
func (e *Engine) reconcile(ctx context.Context) (*RunResult, time.Time, error) {
	now := e.now()
	d := e.getStable()
	if d == nil {
		return nil, time.Time{}, fmt.Errorf("deployment %q was deleted", e.Name)
	}
	st, err := ReadState(d)
	if err != nil {
		return nil, time.Time{}, err
	}
	if st == nil {
		return e.finishedElsewhere(d)
	}
	if st.Owner != e.Owner {
		if st.Phase == PhaseAborting {
			return nil, time.Time{}, fmt.Errorf("rollout %s is being aborted by %s", st.ID, st.Owner)
		}
		return nil, time.Time{}, fmt.Errorf("rollout %s was taken over by %s", st.ID, orNobody(st.Owner))
	}
	e.id = st.ID
	next := st.clone()
	wake := st.Heartbeat.Add(e.heartbeat())
	if !now.Before(wake) {
		next.Heartbeat = now
		wake = now.Add(e.heartbeat())
	}
	switch st.Phase {
	case PhasePaused:
		if next.Heartbeat != st.Heartbeat {
			if err := e.write(ctx, d, next, nil); err != nil {
				return nil, time.Time{}, err
			}
		}
		e.logf("%s", st.Message)
		return &RunResult{Outcome: OutcomePaused, Message: st.Message, State: st}, time.Time{}, nil
	case PhaseRollingBack, PhaseAborting:
		res, err := e.finishAbort(ctx, d, st)
		return res, time.Time{}, err
	case PhasePromoting:
		return e.promote(ctx, d, st, next, wake)
	}
	return e.progress(ctx, d, st, next, now, wake)
}

func orNobody(s string) string {
	if s == "" {
		return "nobody (released)"
	}
	return s
}

// finishedElsewhere reports a rollout whose state another process removed.
func (e *Engine) finishedElsewhere(d *appsv1.Deployment) (*RunResult, time.Time, error) {
	h, _ := ReadHistory(d)
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].ID == e.id {
			r := h[i]
			return nil, time.Time{}, fmt.Errorf("rollout %s was %s by %s", r.ID, lower(r.Result), orNobody(r.By))
		}
	}
	return nil, time.Time{}, fmt.Errorf("no rollout in progress on deployment %q any more", e.Name)
}

func lower(r Result) string {
	switch r {
	case ResultRolledBack:
		return "rolled back"
	default:
		return string(r[0]+'a'-'A') + string(r[1:])
	}
}

func (e *Engine) target(d *appsv1.Deployment, st *State, weight int) (plan.Target, plan.Mode) {
	mode, n := st.Mode, st.Replicas
	if h := e.hpa(); h != nil {
		mode, n = plan.HPA, hpaReplicas(h, d)
	}
	return plan.TargetFor(weight, n, mode), mode
}

// progress drives a Progressing rollout at its current step.
func (e *Engine) progress(ctx context.Context, d *appsv1.Deployment, st, next *State, now, wake time.Time) (*RunResult, time.Time, error) {
	total := len(st.Plan.Steps)
	if st.PromoteRequest != "" {
		next.PromoteRequest = ""
		if st.PromoteRequest == "full" {
			next.Phase = PhasePromoting
			e.logf("promote --full requested: promoting now")
		} else {
			e.logf("promote requested: skipping the rest of step %d/%d", st.Step+1, total)
			e.advance(next, now)
		}
		if err := e.write(ctx, d, next, nil); err != nil {
			return nil, time.Time{}, err
		}
		return nil, time.Time{}, errRetry
	}
	step, ok := st.CurrentStep()
	if !ok {
		next.Phase = PhasePromoting
		if err := e.write(ctx, d, next, nil); err != nil {
			return nil, time.Time{}, err
		}
		return nil, time.Time{}, errRetry
	}
	if step.Pause {
		next.Phase = PhasePaused
		next.Message = fmt.Sprintf("paused at step %d/%d: run `kubectl mlrollout promote %s` to continue or `abort %s` to roll back", st.Step+1, total, e.Name, e.Name)
		if err := e.write(ctx, d, next, nil); err != nil {
			return nil, time.Time{}, err
		}
		e.event(ctx, d, corev1.EventTypeNormal, "CanaryPaused", next.Message)
		e.logf("step %d/%d: %s", st.Step+1, total, next.Message)
		return &RunResult{Outcome: OutcomePaused, Message: next.Message, State: next}, time.Time{}, nil
	}
	t, mode := e.target(d, st, step.Weight)

	// Scale the stable track down before the canary grows (constant capacity: no surge).
	if mode != plan.HPA && specReplicas(d) != t.Stable {
		want := t.Stable
		if err := e.write(ctx, d, next, func(x *appsv1.Deployment) { x.Spec.Replicas = &want }); err != nil {
			return nil, time.Time{}, err
		}
		return nil, time.Time{}, errRetry
	}
	canary := e.canary()
	switch {
	case canary == nil:
		c := NewCanary(d, st.Images, t.Canary, st.ID)
		created, err := e.Kube.AppsV1().Deployments(e.Namespace).Create(ctx, c, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			return e.flush(ctx, d, st, next, now.Add(time.Second)) // the watch has not delivered it yet
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("creating canary deployment %q: %w", c.Name, err)
		}
		// Our write is newer than the cache; keep it so the next pass does not create it again.
		_ = e.deps.Add(created)
		e.logf("created canary deployment %s (%s)", c.Name, ImagesString(st.Images))
		msg := fmt.Sprintf("step %d/%d: %s: canary %d, stable %d pods (%.1f%% of traffic)", st.Step+1, total, step, t.Canary, t.Stable, t.Weight)
		e.event(ctx, d, corev1.EventTypeNormal, "CanaryStep", msg)
		e.logf("%s", msg)
		return nil, time.Time{}, errRetry
	case canary.Annotations[AnnotationRolloutID] != st.ID:
		return nil, time.Time{}, fmt.Errorf("deployment %q exists but belongs to no rollout %s; delete it or abort", canary.Name, st.ID)
	case specReplicas(canary) != t.Canary:
		c := canary.DeepCopy()
		c.Spec.Replicas = &t.Canary
		updated, err := e.Kube.AppsV1().Deployments(e.Namespace).Update(ctx, c, metav1.UpdateOptions{FieldManager: FieldManager})
		if apierrors.IsConflict(err) {
			return e.flush(ctx, d, st, next, now.Add(time.Second)) // wait for the watch to bring the newer canary
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("scaling canary deployment %q: %w", c.Name, err)
		}
		// Our write is newer than the cache; keep it so the next pass does not scale again.
		_ = e.deps.Update(updated)
		return nil, time.Time{}, errRetry
	}

	cpods, spods := splitPods(e.podList(), d)
	for _, p := range cpods {
		if prob := ContainerProblem(p); prob != "" {
			return e.fail(ctx, d, st, next, now, CheckCanaryContainers, prob)
		}
	}
	cready := readyPods(cpods)
	if int32(len(cready)) < t.Canary {
		deadline := st.StepStartedAt.Add(time.Duration(progressDeadline(d)) * time.Second)
		if !now.Before(deadline) {
			return e.fail(ctx, d, st, next, now, CheckCanaryReady,
				fmt.Sprintf("%d of %d canary pods Ready after %ds (progressDeadlineSeconds)", len(cready), t.Canary, progressDeadline(d)))
		}
		if deadline.Before(wake) {
			wake = deadline
		}
		return e.flush(ctx, d, st, next, wake)
	}
	if st.ReadyAt == nil {
		at := now
		next.ReadyAt = &at
		next.observe(CheckCanaryReady, Measurement{Time: now, Passed: true, Message: fmt.Sprintf("%d/%d canary pods Ready", len(cready), t.Canary)})
		next.observe(CheckCanaryContainers, Measurement{Time: now, Passed: true, Message: "no restarts, OOMKills or back-offs"})
		e.logf("step %d/%d: canary ready (%d/%d pods), traffic %.1f%%", st.Step+1, total, len(cready), t.Canary, t.Weight)
	}
	readyAt := *next.ReadyAt
	bakeEnd := readyAt.Add(time.Duration(step.Bake))
	baking := now.Before(bakeEnd)
	target := checkTarget{
		Namespace:  e.Namespace,
		NoStable:   t.Stable == 0,
		CanaryPods: names(cready),
		StablePods: names(readyPods(spods)),
		Vars: plan.Vars{
			Namespace: e.Namespace, Deployment: e.Name, CanaryDeployment: CanaryName(e.Name),
			CanaryPods: plan.PodRegex(names(cpods)), StablePods: plan.PodRegex(names(spods)),
		},
	}
	delayed := false // a check still waits for its initialDelay
	for _, c := range st.Plan.Checks {
		cs := next.check(c.Name)
		if first := readyAt.Add(time.Duration(c.InitialDelay)); cs.StepRuns == 0 && now.Before(first) {
			delayed = true
			if first.Before(wake) {
				wake = first
			}
			continue
		}
		due := cs.StepRuns == 0 || (baking && cs.Last != nil && !now.Before(cs.Last.Time.Add(c.EffectiveInterval())))
		if !due {
			if baking && cs.Last != nil {
				if t := cs.Last.Time.Add(c.EffectiveInterval()); t.Before(wake) {
					wake = t
				}
			}
			continue
		}
		m := e.Checker.Run(ctx, c, target)
		if ctx.Err() != nil {
			return nil, time.Time{}, ctx.Err()
		}
		m.Time = now
		cs = next.observe(c.Name, m)
		verdict := "passed"
		if !m.Passed {
			verdict = "failed"
		}
		e.logf("step %d/%d: check %s %s: %s", st.Step+1, total, c.Name, verdict, m.Message)
		if cs.StepFailures > c.FailureLimit {
			return e.fail(ctx, d, st, next, now, c.Name, m.Message)
		}
		if baking {
			if t := now.Add(c.EffectiveInterval()); t.Before(wake) {
				wake = t
			}
		}
	}
	if baking && bakeEnd.Before(wake) {
		wake = bakeEnd
	}
	if baking || delayed {
		return e.flush(ctx, d, st, next, wake)
	}
	e.advance(next, now)
	if err := e.write(ctx, d, next, nil); err != nil {
		return nil, time.Time{}, err
	}
	e.steps++
	if s, ok := next.CurrentStep(); ok {
		nt, _ := e.target(d, next, next.Weight())
		msg := fmt.Sprintf("step %d/%d: %s", next.Step+1, total, s)
		if !s.Pause {
			msg += fmt.Sprintf(": canary %d, stable %d pods (%.1f%% of traffic)", nt.Canary, nt.Stable, nt.Weight)
		}
		e.event(ctx, d, corev1.EventTypeNormal, "CanaryStep", msg)
		e.logf("%s", msg)
	}
	return nil, time.Time{}, errRetry
}

// advance moves next to the following step (or to Promoting after the last one).
func (e *Engine) advance(next *State, now time.Time) {
	next.Step++
	next.StepStartedAt = now
	next.ReadyAt = nil
	next.Message = ""
	for i := range next.Checks {
		next.Checks[i].StepRuns, next.Checks[i].StepFailures = 0, 0
	}
	if next.Step >= len(next.Plan.Steps) {
		next.Phase = PhasePromoting
	}
}

// flush writes next if it differs from st (check results, readiness, heartbeat) and waits.
func (e *Engine) flush(ctx context.Context, d *appsv1.Deployment, st, next *State, wake time.Time) (*RunResult, time.Time, error) {
	if !sameState(st, next) {
		if err := e.write(ctx, d, next, nil); err != nil {
			return nil, time.Time{}, err
		}
	}
	return nil, wake, nil
}

func sameState(a, b *State) bool {
	if a.Heartbeat != b.Heartbeat || (a.ReadyAt == nil) != (b.ReadyAt == nil) || len(a.Checks) != len(b.Checks) {
		return false
	}
	for i := range a.Checks {
		if a.Checks[i].Runs != b.Checks[i].Runs {
			return false
		}
	}
	return true
}

// fail handles a failed check: roll back, or pause with --on-failure=pause.
func (e *Engine) fail(ctx context.Context, d *appsv1.Deployment, st, next *State, now time.Time, check, msg string) (*RunResult, time.Time, error) {
	if check == CheckCanaryReady || check == CheckCanaryContainers {
		next.observe(check, Measurement{Time: now, Passed: false, Message: msg})
	}
	total := len(st.Plan.Steps)
	reason := fmt.Sprintf("check %s failed at step %d/%d: %s", check, st.Step+1, total, msg)
	e.event(ctx, d, corev1.EventTypeWarning, "CanaryCheckFailed", reason)
	if st.OnFailure == "pause" {
		next.Phase = PhasePaused
		next.Message = reason + fmt.Sprintf("; run `kubectl mlrollout resume %s` to re-run the checks, `promote` to continue or `abort` to roll back", e.Name)
		if err := e.write(ctx, d, next, nil); err != nil {
			return nil, time.Time{}, err
		}
		e.logf("%s", next.Message)
		return &RunResult{Outcome: OutcomePaused, Message: next.Message, State: next}, time.Time{}, nil
	}
	next.Phase = PhaseRollingBack
	next.Message = reason
	e.logf("%s: rolling back", reason)
	if err := e.write(ctx, d, next, nil); err != nil {
		return nil, time.Time{}, err
	}
	return nil, time.Time{}, errRetry
}

// deleteCanary removes the canary Deployment if it exists.
func (e *Engine) deleteCanary(ctx context.Context) error {
	bg := metav1.DeletePropagationBackground
	err := e.Kube.AppsV1().Deployments(e.Namespace).Delete(ctx, CanaryName(e.Name), metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting canary deployment %q: %w", CanaryName(e.Name), err)
	}
	return nil
}

// finishAbort removes the canary, restores the stable replicas and records the outcome.
func (e *Engine) finishAbort(ctx context.Context, d *appsv1.Deployment, st *State) (*RunResult, error) {
	if err := e.deleteCanary(ctx); err != nil {
		return nil, err
	}
	result, outcome, reason, evType := ResultRolledBack, OutcomeRolledBack, "CanaryRolledBack", corev1.EventTypeWarning
	if st.Phase == PhaseAborting {
		result, outcome, reason, evType = ResultAborted, OutcomeAborted, "CanaryAborted", corev1.EventTypeNormal
	}
	rec := st.record(result, st.Message, e.Owner, e.now())
	restore := st.Mode != plan.HPA && e.hpa() == nil
	err := e.write(ctx, d, nil, func(x *appsv1.Deployment) {
		_ = appendHistory(x, rec)
		if restore {
			r := st.Replicas
			x.Spec.Replicas = &r
		}
	})
	if err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("rollout %s %s: canary removed, stable %s kept", st.ID, lower(result), ImagesString(st.PreviousImages))
	if restore {
		msg += fmt.Sprintf(" at %d replicas", st.Replicas)
	}
	if st.Message != "" {
		msg += " (" + st.Message + ")"
	}
	e.event(ctx, d, evType, reason, msg)
	e.logf("%s", msg)
	return &RunResult{Outcome: outcome, Message: msg, Record: &rec}, nil
}

// promote rolls the stable Deployment to the canary's images, waits for it, then removes the canary.
func (e *Engine) promote(ctx context.Context, d *appsv1.Deployment, st, next *State, wake time.Time) (*RunResult, time.Time, error) {
	have := Images(&d.Spec.Template)
	changed := false
	for c, img := range st.Images {
		if have[c] != img {
			changed = true
		}
	}
	restore := st.Mode != plan.HPA && e.hpa() == nil
	if changed || (restore && specReplicas(d) != st.Replicas) {
		err := e.write(ctx, d, next, func(x *appsv1.Deployment) {
			x.Spec.Template = withImages(x.Spec.Template, st.Images)
			if restore {
				r := st.Replicas
				x.Spec.Replicas = &r
			}
			x.Annotations["kubernetes.io/change-cause"] = fmt.Sprintf("kubectl mlrollout: promoted rollout %s (%s)", st.ID, ImagesString(st.Images))
		})
		if err != nil {
			return nil, time.Time{}, err
		}
		e.logf("promoting: deployment %s rolls out %s", e.Name, ImagesString(st.Images))
		return nil, time.Time{}, errRetry
	}
	if !rolledOut(d) {
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
				return nil, time.Time{}, fmt.Errorf("promoting: deployment %q exceeded its progress deadline (%s); the canary is kept, run `kubectl mlrollout undo %s` to go back", e.Name, c.Message, e.Name)
			}
		}
		return e.flush(ctx, d, st, next, wake)
	}
	if err := e.deleteCanary(ctx); err != nil {
		return nil, time.Time{}, err
	}
	rec := st.record(ResultPromoted, "", e.Owner, e.now())
	if err := e.write(ctx, d, nil, func(x *appsv1.Deployment) { _ = appendHistory(x, rec) }); err != nil {
		return nil, time.Time{}, err
	}
	msg := fmt.Sprintf("rollout %s promoted: deployment %s runs %s, canary removed", st.ID, e.Name, ImagesString(st.Images))
	e.event(ctx, d, corev1.EventTypeNormal, "CanaryPromoted", msg)
	e.logf("%s", msg)
	return &RunResult{Outcome: OutcomePromoted, Message: msg, Record: &rec}, time.Time{}, nil
}

// event records a Kubernetes Event on the stable Deployment; failures only warn once.
func (e *Engine) event(ctx context.Context, d *appsv1.Deployment, typ, reason, msg string) {
	if err := Emit(ctx, e.Kube, d, typ, reason, msg, e.now()); err != nil && !e.warned {
		e.warned = true
		e.logf("warning: recording event: %v", err)
	}
}

// Emit creates a core/v1 Event about d.
func Emit(ctx context.Context, kube kubernetes.Interface, d *appsv1.Deployment, typ, reason, msg string, now time.Time) error {
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	t := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", d.Name, time.Now().UnixNano()), Namespace: d.Namespace},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, Namespace: d.Namespace, UID: d.UID,
		},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: FieldManager},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
		ReportingController: "mlplugins.io/" + FieldManager,
		ReportingInstance:   FieldManager,
	}
	_, err := kube.CoreV1().Events(d.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// errNoChange tells Mutate to leave the Deployment as it is.
var errNoChange = errors.New("no change")

// Mutate changes the rollout state of deployment name with optimistic concurrency: fn gets the
// current Deployment and state (nil when none) and returns the new state (nil removes it) or an
// error; on a conflict it re-reads and calls fn again.
func Mutate(ctx context.Context, kube kubernetes.Interface, ns, name string, fn func(d *appsv1.Deployment, st *State) (*State, error)) error {
	for attempt := 0; ; attempt++ {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return NotFoundHint(err, ns, name)
		}
		st, err := ReadState(d)
		if err != nil {
			return err
		}
		next, err := fn(d, st)
		if errors.Is(err, errNoChange) {
			return nil
		}
		if err != nil {
			return err
		}
		writeState(d, next)
		_, err = kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: FieldManager})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 10 {
			return fmt.Errorf("updating deployment %q: %w", name, err)
		}
	}
}

// NotFoundHint turns a NotFound error for deployment name into a clear message.
func NotFoundHint(err error, ns, name string) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("deployment %q not found in namespace %q", name, ns)
	}
	return fmt.Errorf("getting deployment %q: %w", name, err)
}
