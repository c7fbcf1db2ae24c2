package rollout

import (
	"context"
	"errors"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func withState(d *appsv1.Deployment, s *State) *appsv1.Deployment {
	d = d.DeepCopy()
	writeState(d, s)
	return d
}

func TestAnnotationPatch(t *testing.T) {
	base := withState(deployment("model", "m:1", 3), &State{ID: "a", Phase: PhaseProgressing})
	next := withState(base, &State{ID: "a", Phase: PhasePaused})
	if _, ok := annotationPatch(base, next); !ok {
		t.Fatal("state-only change: no patch")
	}
	spec := next.DeepCopy()
	spec.Spec.Replicas = ptr(int32(5))
	if _, ok := annotationPatch(base, spec); ok {
		t.Error("a spec change was turned into an annotation patch")
	}
	if _, ok := annotationPatch(deployment("model", "m:1", 3), next); ok {
		t.Error("a base without state has nothing to test, yet a patch was made")
	}
}

// State writes are JSON patches guarded by a test on the state: they go through while only the
// resourceVersion moved (the Deployment controller's status writes), and are refused (errRetry,
// nothing written) when somebody else changed the state.
func TestStateWriteIsAGuardedPatch(t *testing.T) {
	ctx := context.Background()
	base := withState(deployment("model", "m:1", 3), &State{ID: "a", Phase: PhaseProgressing, Step: 0})
	base.ResourceVersion = "1"
	kube := fake.NewClientset(base)
	rv := 1
	kube.PrependReactor("patch", "deployments", patchLikeAPIServer(kube, func() string { rv++; return strconv.Itoa(rv) }))
	e := &Engine{Kube: kube, Namespace: ns, Name: "model"}

	if err := e.write(ctx, base, &State{ID: "a", Phase: PhaseProgressing, Step: 1}, nil); err != nil {
		t.Fatal(err)
	}
	var verbs []string
	for _, a := range kube.Actions() {
		verbs = append(verbs, a.GetVerb())
		if p, ok := a.(k8stesting.PatchAction); ok && p.GetPatchType() != "application/json-patch+json" {
			t.Errorf("patch type %s", p.GetPatchType())
		}
	}
	if len(verbs) != 1 || verbs[0] != "patch" {
		t.Fatalf("actions = %v, want one patch", verbs)
	}
	got, _ := kube.AppsV1().Deployments(ns).Get(ctx, "model", metav1.GetOptions{})
	if st, _ := ReadState(got); st == nil || st.Step != 1 {
		t.Fatalf("state after the write = %+v", st)
	}

	// Somebody else takes over; a write from the old base must not land.
	other := withState(got, &State{ID: "b", Phase: PhaseProgressing})
	if _, err := kube.AppsV1().Deployments(ns).Update(ctx, other, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.write(ctx, got, &State{ID: "a", Phase: PhaseProgressing, Step: 2}, nil); !errors.Is(err, errRetry) {
		t.Fatalf("write over a changed state: %v, want errRetry", err)
	}
	now, _ := kube.AppsV1().Deployments(ns).Get(ctx, "model", metav1.GetOptions{})
	if st, _ := ReadState(now); st == nil || st.ID != "b" {
		t.Fatalf("state after the refused write = %+v, want rollout b's", st)
	}

	// A write that changes the spec is an update (a concurrent spec edit must conflict).
	kube.ClearActions()
	if err := e.write(ctx, now, nil, func(x *appsv1.Deployment) { x.Spec.Replicas = ptr(int32(4)) }); err != nil {
		t.Fatal(err)
	}
	if a := kube.Actions(); len(a) != 1 || a[0].GetVerb() != "update" {
		t.Fatalf("actions = %v, want one update", a)
	}
}
