package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

const ns = "ml"

func ptr[T any](v T) *T { return &v }

func deployment(name, image string, replicas int32) *appsv1.Deployment {
	lbls := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(name + "-uid"), Labels: lbls,
			Annotations: map[string]string{"deployment.kubernetes.io/revision": "1"}},
		Spec: appsv1.DeploymentSpec{
			Replicas:                ptr(replicas),
			Selector:                &metav1.LabelSelector{MatchLabels: lbls},
			ProgressDeadlineSeconds: ptr(int32(2)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: image}, {Name: "sidecar", Image: "proxy:1"}}},
			},
		},
	}
}

// fakeCluster plays the Deployment controller and kubelet for the fake clientset: every
// Deployment gets pods matching its replicas (Ready unless the image tag says otherwise) and a
// status that says so.
type fakeCluster struct {
	kube *fake.Clientset
	mu   sync.Mutex
	umu  sync.Mutex
	rv   int
}

func newFakeCluster(t *testing.T, objs ...runtime.Object) *fakeCluster {
	t.Helper()
	fc := &fakeCluster{kube: fake.NewClientset(objs...)}
	fc.kube.PrependReactor("update", "deployments", fc.updateDeployment)
	fc.kube.PrependReactor("patch", "deployments", patchLikeAPIServer(fc.kube, func() string {
		fc.umu.Lock()
		defer fc.umu.Unlock()
		fc.rv++
		return strconv.Itoa(fc.rv)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := fc.kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			fc.sync(ctx, d)
		}
	}
	go func() {
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && ev.Type != "DELETED" {
				fc.sync(ctx, d)
			}
			if d, ok := ev.Object.(*appsv1.Deployment); ok && ev.Type == "DELETED" {
				fc.deletePods(ctx, d)
			}
		}
	}()
	return fc
}

// prependReactor adds a reactor while the cluster runs: the fake clientset reads its chain under
// its lock, and PrependReactor alone does not take it.
func (fc *fakeCluster) prependReactor(verb, resource string, r k8stesting.ReactionFunc) {
	fc.kube.Lock()
	defer fc.kube.Unlock()
	fc.kube.PrependReactor(verb, resource, r)
}

// updateDeployment makes Deployment updates behave like the API server's: a resourceVersion
// precondition (409 Conflict), a new resourceVersion per write, and status writes that touch only
// the status while spec writes keep it.
func (fc *fakeCluster) updateDeployment(a k8stesting.Action) (bool, runtime.Object, error) {
	fc.umu.Lock()
	defer fc.umu.Unlock()
	u := a.(k8stesting.UpdateAction)
	obj := u.GetObject().(*appsv1.Deployment)
	gvr := appsv1.SchemeGroupVersion.WithResource("deployments")
	curObj, err := fc.kube.Tracker().Get(gvr, obj.Namespace, obj.Name)
	if err != nil {
		return true, nil, err
	}
	cur := curObj.(*appsv1.Deployment)
	var n *appsv1.Deployment
	if u.GetSubresource() == "status" {
		n = cur.DeepCopy()
		n.Status = obj.Status
	} else {
		if obj.ResourceVersion != "" && obj.ResourceVersion != cur.ResourceVersion {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, obj.Name, errors.New("the object has been modified"))
		}
		n = obj.DeepCopy()
		n.Status = cur.Status
		if !reflect.DeepEqual(n.Spec, cur.Spec) {
			n.Generation = cur.Generation + 1
		}
	}
	fc.rv++
	n.ResourceVersion = strconv.Itoa(fc.rv)
	if err := fc.kube.Tracker().Update(gvr, n, n.Namespace); err != nil {
		return true, nil, err
	}
	return true, n, nil
}

// patchLikeAPIServer applies Deployment patches as the API server does in what the engine relies
// on: a JSON Patch whose test fails is refused with 422 Invalid, and every write gets a new
// resourceVersion from nextRV.
func patchLikeAPIServer(kube *fake.Clientset, nextRV func() string) k8stesting.ReactionFunc {
	apply := k8stesting.ObjectReaction(kube.Tracker())
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		_, obj, err := apply(a)
		if err != nil && strings.Contains(err.Error(), "test failed") {
			return true, nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "patch",
				schema.GroupResource{Group: "apps", Resource: "deployments"}, a.(k8stesting.PatchAction).GetName(), err.Error(), 0, false)
		}
		if err != nil {
			return true, nil, err
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		d.ResourceVersion = nextRV()
		if err := kube.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("deployments"), d, d.Namespace); err != nil {
			return true, nil, err
		}
		return true, d, nil
	}
}

func (fc *fakeCluster) deletePods(ctx context.Context, d *appsv1.Deployment) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	pods, _ := fc.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Name, d.Name+"-pod-") {
			_ = fc.kube.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{})
		}
	}
}

func (fc *fakeCluster) sync(ctx context.Context, d *appsv1.Deployment) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	want := int(specReplicas(d))
	image := d.Spec.Template.Spec.Containers[0].Image
	pods, _ := fc.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	have := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Name, d.Name+"-pod-") {
			have[p.Name] = p
		}
	}
	ready := int32(0)
	for i := 0; i < max(want, len(have)); i++ {
		name := fmt.Sprintf("%s-pod-%d", d.Name, i)
		p, exists := have[name]
		if i >= want {
			_ = fc.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
			continue
		}
		if exists && p.Spec.Containers[0].Image == image {
			if podReady(&p) {
				ready++
			}
			continue
		}
		np := fakePod(name, d, image)
		if podReady(np) {
			ready++
		}
		if exists {
			_, _ = fc.kube.CoreV1().Pods(ns).Update(ctx, np, metav1.UpdateOptions{})
		} else {
			_, _ = fc.kube.CoreV1().Pods(ns).Create(ctx, np, metav1.CreateOptions{})
		}
	}
	st := appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: int32(want), UpdatedReplicas: int32(want), ReadyReplicas: ready, AvailableReplicas: ready}
	if !reflect.DeepEqual(d.Status, st) {
		d = d.DeepCopy()
		d.Status = st
		_, _ = fc.kube.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	}
}

func fakePod(name string, d *appsv1.Deployment, image string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	ready := corev1.ConditionTrue
	cs := corev1.ContainerStatus{Name: "model", Image: image, Ready: true}
	switch {
	case strings.HasSuffix(image, "-notready"):
		ready, cs.Ready = corev1.ConditionFalse, false
	case strings.HasSuffix(image, "-crashloop"):
		ready, cs.Ready = corev1.ConditionFalse, false
		cs.RestartCount = 3
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
	return p
}

func mustPlan(t *testing.T, steps string, bake time.Duration, checks ...plan.Check) *plan.Plan {
	t.Helper()
	s, err := plan.ParseSteps(steps, bake)
	if err != nil {
		t.Fatal(err)
	}
	return &plan.Plan{Steps: s, Checks: checks}
}

func promCheck(name string, max float64) plan.Check {
	return plan.Check{Name: name, Interval: plan.Duration(50 * time.Millisecond), Prometheus: &plan.PrometheusCheck{Query: `x{pod=~"{{ .CanaryPods }}"}`, Max: &max}}
}

// constQuery answers every query with v and records the rendered queries.
type constQuery struct {
	mu      sync.Mutex
	v       float64
	err     error
	queries []string
}

func (q *constQuery) fn(_ context.Context, query string) ([]Sample, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queries = append(q.queries, query)
	if q.err != nil {
		return nil, q.err
	}
	return []Sample{{Value: q.v}}, nil
}

type harness struct {
	t    *testing.T
	fc   *fakeCluster
	out  bytes.Buffer
	q    constQuery
	http PodHTTPFunc
}

func (h *harness) engine(owner string) *Engine {
	return &Engine{
		Kube: h.fc.kube, Namespace: ns, Name: "mlapp", Owner: owner, Out: &syncWriter{w: &h.out},
		Checker:   &Checker{Query: h.q.fn, PodHTTP: h.http},
		Heartbeat: 200 * time.Millisecond,
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (h *harness) start(spec StartSpec, owner string) *State {
	h.t.Helper()
	if spec.Images == nil {
		spec.Images = map[string]string{"model": "mlapp:v2"}
	}
	if spec.Mode == "" {
		spec.Mode = plan.ConstantCapacity
	}
	if spec.OnFailure == "" {
		spec.OnFailure = "rollback"
	}
	st, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", owner, spec, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) run(e *Engine, timeout time.Duration) (*RunResult, error) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, ErrTimeout)
	defer cancel()
	return e.Run(ctx)
}

func (h *harness) stable() *appsv1.Deployment {
	d, err := h.fc.kube.AppsV1().Deployments(ns).Get(context.Background(), "mlapp", metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) assertCanaryGone() {
	h.t.Helper()
	_, err := h.fc.kube.AppsV1().Deployments(ns).Get(context.Background(), "mlapp-canary", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		h.t.Fatalf("canary still there: %v", err)
	}
}

func (h *harness) events() []string {
	evs, err := h.fc.kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Reason)
	}
	return out
}

func newHarness(t *testing.T, objs ...runtime.Object) *harness {
	if len(objs) == 0 {
		objs = []runtime.Object{deployment("mlapp", "mlapp:v1", 10)}
	}
	return &harness{t: t, fc: newFakeCluster(t, objs...)}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestPromote(t *testing.T) {
	h := newHarness(t)
	h.q.v = 0.1
	h.start(StartSpec{Plan: mustPlan(t, "10,50,100", 0, promCheck("errors", 0.5))}, "me")
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, h.out.String())
	}
	if res.Outcome != OutcomePromoted || res.StepsRun != 3 {
		t.Fatalf("result = %+v\n%s", res, h.out.String())
	}
	d := h.stable()
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "mlapp:v2" || *d.Spec.Replicas != 10 {
		t.Fatalf("stable = %s x%d", img, *d.Spec.Replicas)
	}
	if d.Spec.Template.Spec.Containers[1].Image != "proxy:1" {
		t.Fatal("sidecar image changed")
	}
	if _, ok := d.Annotations[AnnotationState]; ok {
		t.Fatal("state left behind")
	}
	hist, _ := ReadHistory(d)
	if len(hist) != 1 || hist[0].Result != ResultPromoted || hist[0].PreviousImages["model"] != "mlapp:v1" {
		t.Fatalf("history = %+v", hist)
	}
	h.assertCanaryGone()
	evs := h.events()
	if !contains(evs, "CanaryStep") || !contains(evs, "CanaryPromoted") {
		t.Fatalf("events = %v", evs)
	}
	if len(h.q.queries) == 0 || !strings.Contains(h.q.queries[0], "mlapp-canary-pod-0") {
		t.Fatalf("queries = %q", h.q.queries)
	}
}

func TestRollbackOnFailedCheck(t *testing.T) {
	tests := []struct {
		name   string
		image  string
		v      float64
		qerr   error
		reason string
	}{
		{name: "prometheus above max", image: "mlapp:v2", v: 3, reason: "check errors failed at step 1/2: 3 > max 0.5"},
		{name: "prometheus error", image: "mlapp:v2", qerr: errors.New("bad_data: parse error"), reason: "failed measurement: bad_data: parse error"},
		{name: "not ready", image: "mlapp:v2-notready", reason: "check canary-ready failed at step 1/2: 0 of 1 canary pods Ready after 2s (progressDeadlineSeconds)"},
		{name: "crashloop", image: "mlapp:v2-crashloop", reason: `check canary-containers failed at step 1/2: container "model" of pod "mlapp-canary-pod-0" is in CrashLoopBackOff`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.q.v, h.q.err = tt.v, tt.qerr
			h.start(StartSpec{Images: map[string]string{"model": tt.image}, Plan: mustPlan(t, "10", 0, promCheck("errors", 0.5))}, "me")
			res, err := h.run(h.engine("me"), 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != OutcomeRolledBack || !strings.Contains(res.Record.Reason, tt.reason) {
				t.Fatalf("result = %+v, record %+v\nwant reason %q", res, res.Record, tt.reason)
			}
			d := h.stable()
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "mlapp:v1" || *d.Spec.Replicas != 10 {
				t.Fatalf("stable = %s x%d", img, *d.Spec.Replicas)
			}
			h.assertCanaryGone()
			if evs := h.events(); !contains(evs, "CanaryCheckFailed") || !contains(evs, "CanaryRolledBack") {
				t.Fatalf("events = %v", evs)
			}
		})
	}
}

func TestOnFailurePause(t *testing.T) {
	h := newHarness(t)
	h.q.v = 3
	h.start(StartSpec{Plan: mustPlan(t, "10", 0, promCheck("errors", 0.5)), OnFailure: "pause"}, "me")
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePaused {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	st, _ := ReadState(h.stable())
	if st.Phase != PhasePaused || st.Owner != "" {
		t.Fatalf("state = %+v", st)
	}
	// resume re-runs the checks, which now pass
	h.q.v = 0.1
	if _, _, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "you", time.Now(), ResumeChange(time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	res, err = h.run(h.engine("you"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v\n%s", res, err, h.out.String())
	}
}

func TestPauseStepThenPromote(t *testing.T) {
	h := newHarness(t)
	h.start(StartSpec{Plan: mustPlan(t, "20,pause,100", 0)}, "me")
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePaused {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	d := h.stable()
	if *d.Spec.Replicas != 8 {
		t.Fatalf("stable replicas at pause = %d, want 8", *d.Spec.Replicas)
	}
	st, _ := ReadState(d)
	if st.Step != 1 || st.Owner != "" {
		t.Fatalf("state = %+v", st)
	}
	if _, _, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "you", time.Now(), PromoteChange(false, time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	res, err = h.run(h.engine("you"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v\n%s", res, err, h.out.String())
	}
	h.assertCanaryGone()
}

func TestAbortRestores(t *testing.T) {
	h := newHarness(t)
	h.start(StartSpec{Plan: mustPlan(t, "30,pause,100", 0)}, "me")
	if res, err := h.run(h.engine("me"), 20*time.Second); err != nil || res.Outcome != OutcomePaused {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	if _, _, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "you", time.Now(), AbortChange("you"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.run(h.engine("you"), 20*time.Second)
	if err != nil || res.Outcome != OutcomeAborted {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	d := h.stable()
	if *d.Spec.Replicas != 10 || d.Spec.Template.Spec.Containers[0].Image != "mlapp:v1" {
		t.Fatalf("stable not restored: %d %s", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image)
	}
	h.assertCanaryGone()
	hist, _ := ReadHistory(d)
	if len(hist) != 1 || hist[0].Result != ResultAborted || hist[0].By != "you" {
		t.Fatalf("history = %+v", hist)
	}
}

func TestInterruptAndResume(t *testing.T) {
	h := newHarness(t)
	h.q.v = 0.1
	h.start(StartSpec{Plan: mustPlan(t, "10,100", 2*time.Second, promCheck("errors", 0.5))}, "me")
	ctx, cancel := context.WithCancel(context.Background())
	e := h.engine("me")
	var readyOnce sync.Once
	e.OnWrite = func(st *State) {
		if st != nil && st.ReadyAt != nil {
			readyOnce.Do(cancel)
		}
	}
	_, err := e.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "interrupted at step 1/2") {
		t.Fatalf("err = %v", err)
	}
	st, _ := ReadState(h.stable())
	if st == nil || st.Owner != "" || st.Step != 0 || st.ReadyAt == nil {
		t.Fatalf("state after interrupt = %+v", st)
	}
	if _, err := h.fc.kube.AppsV1().Deployments(ns).Get(context.Background(), "mlapp-canary", metav1.GetOptions{}); err != nil {
		t.Fatalf("canary should be left in place: %v", err)
	}
	if _, _, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "you", time.Now(), ResumeChange(time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.run(h.engine("you"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
}

func TestTimeoutLeavesRollout(t *testing.T) {
	h := newHarness(t)
	h.start(StartSpec{Plan: mustPlan(t, "10,100", time.Hour)}, "me")
	res, err := h.run(h.engine("me"), 500*time.Millisecond)
	if err != nil || res.Outcome != OutcomeTimedOut {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	st, _ := ReadState(h.stable())
	if st == nil || st.Owner != "" || st.Phase != PhaseProgressing {
		t.Fatalf("state = %+v", st)
	}
}

func TestClaimOwnership(t *testing.T) {
	h := newHarness(t)
	spec := StartSpec{Images: map[string]string{"model": "mlapp:v2"}, Plan: mustPlan(t, "10", 0), Mode: plan.ConstantCapacity}
	now := time.Now()
	if _, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", "alice@host (pid 1)", spec, now); err != nil {
		t.Fatal(err)
	}
	before := h.stable().Annotations[AnnotationState]
	_, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", "bob@host (pid 2)", spec, now.Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "driven by alice@host (pid 1)") {
		t.Fatalf("err = %v", err)
	}
	spec.Takeover = true
	if _, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", "bob@host (pid 2)", spec, now.Add(time.Second)); err == nil {
		t.Fatal("takeover of a live owner allowed")
	}
	if after := h.stable().Annotations[AnnotationState]; after != before {
		t.Fatal("failed claims changed the state")
	}
	st, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", "bob@host (pid 2)", spec, now.Add(StaleAfter+time.Second))
	if err != nil || st.Owner != "bob@host (pid 2)" {
		t.Fatalf("stale takeover: %+v, %v", st, err)
	}
	spec.Images = map[string]string{"model": "mlapp:v3"}
	if _, err := Claim(context.Background(), h.fc.kube, ns, "mlapp", "carol", spec, now.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "abort it first") {
		t.Fatalf("takeover with other images: %v", err)
	}
}

func TestConflictsAreRetried(t *testing.T) {
	h := newHarness(t)
	var conflicts atomic.Int32
	h.fc.prependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.UpdateAction)
		if u.GetSubresource() == "" && u.GetObject().(*appsv1.Deployment).Name == "mlapp" && conflicts.Add(1)%3 == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "mlapp", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	// State writes are patches: every third is refused as if its test had failed (422).
	var refusals atomic.Int32
	h.fc.prependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.PatchAction).GetName() == "mlapp" && refusals.Add(1)%3 == 1 {
			return true, nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "patch", schema.GroupResource{Group: "apps", Resource: "deployments"}, "mlapp", "test failed", 0, false)
		}
		return false, nil, nil
	})
	h.start(StartSpec{Plan: mustPlan(t, "10,50,100", 0)}, "me")
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	if refusals.Load() < 2 {
		t.Fatalf("only %d state patches: the refusal path was not exercised", refusals.Load())
	}
	if conflicts.Load() < 3 {
		t.Fatalf("only %d updates went through the conflict reactor", conflicts.Load())
	}
}

func TestExternalPauseStopsDriver(t *testing.T) {
	h := newHarness(t)
	h.start(StartSpec{Plan: mustPlan(t, "10,100", time.Hour)}, "me")
	e := h.engine("me")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = Pause(context.Background(), h.fc.kube, ns, "mlapp", "bob", time.Now())
	}()
	res, err := h.run(e, 20*time.Second)
	if err != nil || res.Outcome != OutcomePaused || !strings.Contains(res.Message, "paused by bob") {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
}

func TestPromoteRequestFromOtherProcess(t *testing.T) {
	h := newHarness(t)
	h.start(StartSpec{Plan: mustPlan(t, "10,100", time.Hour)}, "me")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, acquired, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "bob", time.Now(), PromoteChange(true, time.Now()), PromoteRequest(true))
		if err != nil || acquired {
			panic(fmt.Sprintf("acquired=%v err=%v", acquired, err))
		}
	}()
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
}

func TestHPAIsRespected(t *testing.T) {
	d := deployment("mlapp", "mlapp:v1", 4)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "mlapp", Namespace: ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "mlapp"},
			MaxReplicas:    10,
		},
		Status: autoscalingv2.HorizontalPodAutoscalerStatus{DesiredReplicas: 4},
	}
	h := newHarness(t, d, hpa)
	var stableWritten atomic.Bool
	h.fc.prependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.UpdateAction)
		if dd := u.GetObject().(*appsv1.Deployment); dd.Name == "mlapp" && u.GetSubresource() == "" && *dd.Spec.Replicas != 4 {
			stableWritten.Store(true)
		}
		return false, nil, nil
	})
	h.start(StartSpec{Plan: mustPlan(t, "25,pause,100", 0), Mode: plan.HPA}, "me")
	res, err := h.run(h.engine("me"), 20*time.Second)
	if err != nil || res.Outcome != OutcomePaused {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	c, err := h.fc.kube.AppsV1().Deployments(ns).Get(context.Background(), "mlapp-canary", metav1.GetOptions{})
	if err != nil || *c.Spec.Replicas != 1 {
		t.Fatalf("canary = %v, %v", c, err)
	}
	if _, _, err := Acquire(context.Background(), h.fc.kube, ns, "mlapp", "me", time.Now(), PromoteChange(false, time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	if res, err := h.run(h.engine("me"), 20*time.Second); err != nil || res.Outcome != OutcomePromoted {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	if stableWritten.Load() {
		t.Fatal("the stable replicas were changed although an HPA owns them")
	}
}

func TestHTTPCheck(t *testing.T) {
	tests := []struct {
		name        string
		canary      string
		status      int
		wantOutcome Outcome
		reason      string
	}{
		{"agrees", `{"predictions":[0.1,0.9]}`, 200, OutcomePromoted, ""},
		{"answers 500", `{}`, 500, OutcomeRolledBack, "answered 500, want 200"},
		{"different predictions", `{"predictions":[0.5,0.5]}`, 200, OutcomeRolledBack, "predictions differ from stable pod mlapp-pod-0: $.predictions[0]: canary 0.5, stable 0.1 (tolerance 0.01)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.http = func(_ context.Context, _, pod string, port int, req *http.Request) (*HTTPResponse, error) {
				if port != 8080 || req.Method != "POST" {
					return nil, fmt.Errorf("unexpected %s on %d", req.Method, port)
				}
				if strings.Contains(pod, "canary") {
					return &HTTPResponse{Status: tt.status, Body: []byte(tt.canary)}, nil
				}
				return &HTTPResponse{Status: 200, Body: []byte(`{"predictions":[0.1,0.9]}`)}, nil
			}
			check := plan.Check{Name: "predict", HTTP: &plan.HTTPCheck{Port: 8080, Path: "/predict", Method: "POST", Body: "{}", ExpectStatus: 200,
				CompareWithStable: &plan.Compare{JSONPath: "$.predictions", Tolerance: 0.01}}}
			h.start(StartSpec{Plan: mustPlan(t, "10", 0, check)}, "me")
			res, err := h.run(h.engine("me"), 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tt.wantOutcome || (tt.reason != "" && !strings.Contains(res.Record.Reason, tt.reason)) {
				t.Fatalf("res = %+v, record = %+v", res, res.Record)
			}
		})
	}
}

func TestUndo(t *testing.T) {
	d := deployment("mlapp", "mlapp:v2", 3)
	d.Annotations["deployment.kubernetes.io/revision"] = "2"
	rs := func(rev, image string) *appsv1.ReplicaSet {
		old := deployment("mlapp", image, 3)
		old.Spec.Template.Labels = map[string]string{"app": "mlapp", "pod-template-hash": "h" + rev}
		return &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "mlapp-" + rev, Namespace: ns, Labels: map[string]string{"app": "mlapp"},
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": rev},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "mlapp", UID: d.UID, Controller: ptr(true)}}},
			Spec: appsv1.ReplicaSetSpec{Template: old.Spec.Template},
		}
	}
	h := newHarness(t, d, rs("1", "mlapp:v1"), rs("2", "mlapp:v2"))
	res, err := Undo(context.Background(), h.fc.kube, ns, "mlapp", 0, "me", false, time.Now())
	if err != nil || res.Revision != 1 || res.Skipped {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	got := h.stable()
	if got.Spec.Template.Spec.Containers[0].Image != "mlapp:v1" || got.Spec.Template.Labels["pod-template-hash"] != "" {
		t.Fatalf("template = %+v", got.Spec.Template)
	}
	if _, err := Undo(context.Background(), h.fc.kube, ns, "mlapp", 7, "me", false, time.Now()); err == nil || err.Error() != `deployment "mlapp" has no revision 7` {
		t.Fatalf("err = %v", err)
	}
}

// gatedQuery answers with no series before open (a canary pod Prometheus has not scraped yet) and
// with v afterwards, and records when each query ran.
type gatedQuery struct {
	mu    sync.Mutex
	open  time.Time
	v     float64
	times []time.Time
}

func (q *gatedQuery) fn(_ context.Context, _ string) ([]Sample, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	q.times = append(q.times, now)
	if now.Before(q.open) {
		return nil, nil
	}
	return []Sample{{Value: q.v}}, nil
}

func (q *gatedQuery) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.times)
}

func TestInitialDelay(t *testing.T) {
	const delay = 400 * time.Millisecond
	tests := []struct {
		name        string
		bake        time.Duration
		open        time.Duration // series appear this long after the test starts
		wantOutcome Outcome
		minQueries  int
		maxQueries  int
		reason      string
	}{
		// With failureLimit 0 a measurement taken before the delay would see no series and roll back.
		{name: "no bake", open: delay, wantOutcome: OutcomePromoted, minQueries: 2, maxQueries: 2},
		// The delay outlasts the bake: the check still runs once per step, after the delay.
		{name: "delay longer than bake", bake: 100 * time.Millisecond, open: delay, wantOutcome: OutcomePromoted, minQueries: 2, maxQueries: 2},
		// The bake outlasts the delay: the first measurement waits, the next ones follow every interval.
		{name: "bake longer than delay", bake: delay + 300*time.Millisecond, open: delay, wantOutcome: OutcomePromoted, minQueries: 3, maxQueries: 12},
		// An empty result after the delay is still a failed measurement, never a pass.
		{name: "still empty after delay", open: time.Hour, wantOutcome: OutcomeRolledBack, minQueries: 1, maxQueries: 1, reason: "check errors failed at step 1/2: failed measurement: query returned no data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := promCheck("errors", 0.5)
			c.Interval = plan.Duration(100 * time.Millisecond)
			c.InitialDelay = plan.Duration(delay)
			begin := time.Now()
			q := &gatedQuery{open: begin.Add(tt.open), v: 0.1}
			h.start(StartSpec{Plan: mustPlan(t, "10,100", tt.bake, c)}, "me")
			e := h.engine("me")
			e.Checker.Query = q.fn
			res, err := h.run(e, 20*time.Second)
			if err != nil {
				t.Fatalf("%v\n%s", err, h.out.String())
			}
			if res.Outcome != tt.wantOutcome {
				t.Fatalf("result = %+v\n%s", res, h.out.String())
			}
			if tt.reason != "" && (res.Record == nil || !strings.Contains(res.Record.Reason, tt.reason)) {
				t.Fatalf("record = %+v, want reason %q", res.Record, tt.reason)
			}
			if n := q.count(); n < tt.minQueries || n > tt.maxQueries {
				t.Fatalf("%d measurements, want %d..%d\n%s", n, tt.minQueries, tt.maxQueries, h.out.String())
			}
			if first := q.times[0].Sub(begin); first < delay {
				t.Fatalf("first measurement %s after the start, before the initialDelay %s", first, delay)
			}
		})
	}
}
