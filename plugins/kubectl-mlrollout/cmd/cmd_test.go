package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/pkg/shared/testutil"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/kube"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// clock is the pinned time of every command test.
var clock = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func stable(replicas int32) *appsv1.Deployment {
	lbls := map[string]string{"app": "mlapp"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mlapp", Namespace: "ml", UID: "uid-1", Annotations: map[string]string{}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "mlapp:v1"}}},
			},
		},
		Status: appsv1.DeploymentStatus{ReadyReplicas: replicas},
	}
}

type fixture struct {
	kube   *fake.Clientset
	out    *bytes.Buffer
	errOut *bytes.Buffer
	f      *Factory
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	kc := fake.NewClientset(objs...)
	kc.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = true
		return true, r, nil
	})
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	f := NewFactory(streams)
	f.Clients = &kube.Clients{Kube: kc, Namespace: "ml"}
	f.Now = func() time.Time { return clock }
	f.Owner = "alice@laptop (pid 42)"
	return &fixture{kube: kc, out: out, errOut: errOut, f: f}
}

func (fx *fixture) run(args ...string) (int, error) {
	root := newRoot(fx.f)
	root.SetArgs(args)
	err := root.Execute()
	return cliutil.ExitCode(err), err
}

// inProgress returns the stable Deployment at step 2/4 of a rollout, and its canary.
func inProgress(t *testing.T, owner string, heartbeat time.Time) (*appsv1.Deployment, *appsv1.Deployment) {
	t.Helper()
	d := stable(8)
	steps, _ := plan.ParseSteps("20,50,pause,100", 5*time.Minute)
	p := &plan.Plan{Steps: steps, Checks: []plan.Check{{Name: "error-rate", Prometheus: &plan.PrometheusCheck{Query: "up", Max: ptr(0.5)}}}}
	st := rollout.NewState(d, rollout.StartSpec{Images: map[string]string{"model": "mlapp:v2"}, Plan: p, Mode: plan.ConstantCapacity, OnFailure: "rollback"}, owner, clock.Add(-10*time.Minute))
	st.Replicas = 10
	st.Step = 1
	ready := clock.Add(-2 * time.Minute)
	st.ReadyAt = &ready
	st.Heartbeat = heartbeat
	st.Checks[0].Runs, st.Checks[0].Last = 2, &rollout.Measurement{Time: ready, Passed: true, Message: "5/5 canary pods Ready"}
	st.Checks[2].Runs, st.Checks[2].Failures = 4, 1
	st.Checks[2].Last = &rollout.Measurement{Time: clock.Add(-30 * time.Second), Passed: true, Message: "value 0.02 within bounds"}
	b, _ := json.Marshal(st)
	d.Annotations[rollout.AnnotationState] = string(b)
	d.Spec.Replicas = ptr(int32(5))
	d.Status.ReadyReplicas = 5
	c := rollout.NewCanary(d, st.Images, 5, st.ID)
	c.Status.ReadyReplicas = 5
	return d, c
}

func TestStatusGolden(t *testing.T) {
	tests := []struct {
		name, golden string
		heartbeat    time.Time
		args         []string
		code         int
	}{
		{name: "live owner", golden: "status-progressing.golden", heartbeat: clock.Add(-2 * time.Second), args: []string{"status", "mlapp"}, code: 5},
		{name: "dead owner", golden: "status-stale.golden", heartbeat: clock.Add(-5 * time.Minute), args: []string{"status", "mlapp"}, code: 5},
		{name: "json", golden: "status.json.golden", heartbeat: clock.Add(-2 * time.Second), args: []string{"status", "mlapp", "-o", "json"}, code: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, c := inProgress(t, "bob@ci (pid 7)", tt.heartbeat)
			fx := newFixture(t, d, c)
			code, err := fx.run(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d (%v), want %d", code, err, tt.code)
			}
			testutil.Golden(t, filepath.Join("testdata", tt.golden), fx.out.Bytes(), *update)
		})
	}
}

func TestStatusIdleAndHistory(t *testing.T) {
	d := stable(3)
	d.Annotations[rollout.AnnotationHistory] = `[{"id":"20261125-090000","result":"RolledBack","reason":"check error-rate failed at step 1/3: 3 > max 0.5","images":{"model":"mlapp:v2"},"previousImages":{"model":"mlapp:v1"},"stepsReached":1,"steps":3,"checks":[{"name":"error-rate","kind":"prometheus","runs":1,"failures":1,"stepRuns":1,"stepFailures":1}],"startedAt":"2026-11-25T09:00:00Z","finishedAt":"2026-11-25T09:01:00Z","by":"bob@ci (pid 7)"}]`
	fx := newFixture(t, d)
	if code, err := fx.run("status", "mlapp"); code != 0 {
		t.Fatalf("status exit %d: %v", code, err)
	}
	if code, err := fx.run("history", "mlapp"); code != 0 {
		t.Fatalf("history exit %d: %v", code, err)
	}
	testutil.Golden(t, filepath.Join("testdata", "status-idle-history.golden"), fx.out.Bytes(), *update)
}

func TestPlanGolden(t *testing.T) {
	fx := newFixture(t, stable(4))
	if code, err := fx.run("plan", "mlapp", "--image", "model=mlapp:v2", "--steps", "10,25,pause,50", "--bake", "1m"); code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	if code, err := fx.run("plan", "mlapp", "--image", "model=mlapp:v2", "--steps", "10,50", "--surge"); code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	testutil.Golden(t, filepath.Join("testdata", "plan.golden"), fx.out.Bytes(), *update)
	for _, a := range fx.kube.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			t.Errorf("plan changed something: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestStartBadInput(t *testing.T) {
	dir := t.TempDir()
	badPlan := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(badPlan, []byte("apiVersion: mlrollout.aks-mlops.io/v1alpha1\nkind: RolloutPlan\nsteps:\n- weight: 10\n  bake: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, _ := inProgress(t, "bob@ci (pid 7)", clock.Add(-time.Second))
	busy.Name = "busy"
	paused := stable(3)
	paused.Name, paused.Spec.Paused = "paused", true
	zero := stable(0)
	zero.Name = "zero"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown deployment", []string{"start", "nope", "--image", "model=x:2"}, `deployment "nope" not found in namespace "ml"`},
		{"unknown container", []string{"start", "mlapp", "--image", "modle=x:2"}, `deployment "mlapp" has no container "modle" (containers: model)`},
		{"malformed image", []string{"start", "mlapp", "--image", "x:2"}, `malformed --image "x:2" (want CONTAINER=IMAGE)`},
		{"no image", []string{"start", "mlapp"}, `at least one --image CONTAINER=IMAGE is required`},
		{"malformed steps", []string{"start", "mlapp", "--image", "model=x:2", "--steps", "50,20"}, `malformed --steps "50,20": step 2: weight 20 does not grow (previous weight 50)`},
		{"bad plan", []string{"start", "mlapp", "--image", "model=x:2", "--plan", badPlan}, `plan file "` + badPlan + `": line 5: bake: bad duration "soon" (want e.g. 30s, 2m, 1h)`},
		{"same image", []string{"start", "mlapp", "--image", "model=mlapp:v1"}, `deployment "mlapp" already runs model=mlapp:v1`},
		{"bad on-failure", []string{"start", "mlapp", "--image", "model=x:2", "--on-failure", "ignore"}, `unknown --on-failure "ignore" (want rollback or pause)`},
		{"paused deployment", []string{"start", "paused", "--image", "model=x:2"}, "deployment \"paused\" is paused (spec.paused); resume it with `kubectl rollout resume` first"},
		{"zero replicas", []string{"start", "zero", "--image", "model=x:2"}, `deployment "zero" is scaled to 0 replicas; there is no traffic to canary`},
		{"bad dry-run", []string{"start", "mlapp", "--image", "model=x:2", "--dry-run=yes"}, `unknown --dry-run "yes" (want client or server)`},
		{"plan and steps", []string{"start", "mlapp", "--image", "model=x:2", "--steps", "10", "--plan", badPlan}, `--plan and --steps are mutually exclusive (put the steps in the plan file)`},
		{"bad output", []string{"start", "mlapp", "--image", "model=x:2", "-o", "yaml"}, `unknown output format "yaml" (want one of: json)`},
		{"prometheus auth without url", []string{"start", "mlapp", "--image", "model=x:2", "--prometheus-auth", "azure"}, `--prometheus-auth needs --prometheus-url`},
		{"password in prometheus url", []string{"start", "mlapp", "--image", "model=x:2", "--prometheus-url", "https://u:s3cret@p.example"}, `--prometheus-url must not contain a password: it is recorded on the Deployment (use --prometheus-auth azure, or a URL without credentials)`},
		{"azure credential without azure monitor", []string{"start", "mlapp", "--image", "model=x:2", "--prometheus-url", "http://prom:9090", "--azure-credential", "azure-cli"}, `--azure-credential is for Prometheus checks against Azure Monitor: use it with an Azure Monitor --prometheus-url or --prometheus-auth azure`},
		{"azure credential without prometheus", []string{"start", "mlapp", "--image", "model=x:2", "--azure-credential", "azure-cli"}, `--azure-credential is for Prometheus checks against Azure Monitor: use it with an Azure Monitor --prometheus-url or --prometheus-auth azure`},
		{"in progress", []string{"start", "busy", "--image", "model=x:2"}, `rollout 20261126-095000-000 of deployment "busy" is in progress (Progressing), driven by bob@ci (pid 7) (heartbeat 1s ago)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, stable(3), busy, paused, zero)
			code, err := fx.run(tt.args...)
			if code != 1 || err == nil || err.Error() != tt.want {
				t.Fatalf("exit %d, err %v\nwant %s", code, err, tt.want)
			}
			for _, a := range fx.kube.Actions() {
				if v := a.GetVerb(); v != "get" && v != "list" && !(v == "create" && a.GetResource().Resource == "selfsubjectaccessreviews") {
					t.Errorf("bad input changed the cluster: %s %s", v, a.GetResource().Resource)
				}
			}
		})
	}
}

func TestStartDryRunChangesNothing(t *testing.T) {
	fx := newFixture(t, stable(4))
	code, err := fx.run("start", "mlapp", "--image", "model=mlapp:v2", "--dry-run=client")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	if !strings.Contains(fx.out.String(), "name: mlapp-canary") || !strings.Contains(fx.out.String(), "rollouts.mlplugins.io/track: canary") {
		t.Fatalf("dry run printed:\n%s", fx.out.String())
	}
	for _, a := range fx.kube.Actions() {
		if v := a.GetVerb(); v == "update" || v == "delete" || (v == "create" && a.GetResource().Resource == "deployments") {
			t.Errorf("dry run changed the cluster: %s %s", v, a.GetResource().Resource)
		}
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	fx := newFixture(t)
	root := newRoot(fx.f)
	for _, c := range append([]*cobra.Command{root}, root.Commands()...) {
		switch c.Name() {
		case "start", "status", "promote", "resume", "abort", "kubectl-mlrollout":
			if !strings.Contains(c.Long, "3  timed out; the rollout is left as it is, resumable") {
				t.Errorf("%s --help lacks the exit code table", c.Name())
			}
		}
	}
}

func TestControlWithoutRollout(t *testing.T) {
	fx := newFixture(t, stable(3))
	if code, err := fx.run("abort", "mlapp"); code != 0 {
		t.Fatalf("abort with nothing in progress: exit %d: %v", code, err)
	}
	if code, err := fx.run("resume", "mlapp"); code != 1 || err.Error() != `no rollout in progress on deployment "mlapp"` {
		t.Fatalf("resume: exit %d: %v", code, err)
	}
	if code, err := fx.run("list"); code != 0 || !strings.Contains(fx.errOut.String(), "No rollouts in progress.") {
		t.Fatalf("list: exit %d: %v", code, err)
	}
}

func TestPrometheusFlagsReachTheClient(t *testing.T) {
	planFile := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(planFile, []byte("apiVersion: mlrollout.aks-mlops.io/v1alpha1\nkind: RolloutPlan\nsteps:\n- weight: 10\nchecks:\n- name: e\n  prometheus:\n    query: 'x{namespace=\"{{ .Namespace }}\"}'\n    max: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		wantAuth string
		wantErr  string
	}{
		{[]string{"--prometheus-url", "https://ws.eastus.prometheus.monitor.azure.com", "--prometheus-auth", "azure"}, "azure", `check "e": prometheus at https://ws.eastus.prometheus.monitor.azure.com: unreachable`},
		{[]string{"--prometheus-url", "http://prom:9090"}, "", `check "e": prometheus at http://prom:9090: unreachable`},
		{nil, "-", `check "e" is a prometheus check: --prometheus-url is required`},
	}
	for _, tt := range tests {
		fx := newFixture(t, stable(3))
		gotAuth, gotQuery := "-", ""
		fx.f.NewQuery = func(url, auth string) (rollout.QueryFunc, error) {
			gotAuth = auth
			return func(_ context.Context, q string) ([]rollout.Sample, error) {
				gotQuery = q
				return nil, errors.New("unreachable")
			}, nil
		}
		code, err := fx.run(append([]string{"start", "mlapp", "--image", "model=mlapp:v2", "--plan", planFile}, tt.args...)...)
		if code != 1 || err == nil || err.Error() != tt.wantErr {
			t.Fatalf("%v: exit %d, err %v, want %s", tt.args, code, err, tt.wantErr)
		}
		if gotAuth != tt.wantAuth {
			t.Errorf("%v: auth %q, want %q", tt.args, gotAuth, tt.wantAuth)
		}
		if tt.wantAuth != "-" && gotQuery != `x{namespace="ml"}` {
			t.Errorf("probe query = %q", gotQuery)
		}
	}
}

func TestAzureCredentialOnlyWhereUsed(t *testing.T) {
	for _, verb := range []string{"status", "abort", "pause", "history", "list", "undo", "plan"} {
		fx := newFixture(t, stable(3))
		args := []string{verb, "mlapp", "--azure-credential", "azure-cli"}
		if verb == "list" {
			args = []string{verb, "--azure-credential", "azure-cli"}
		}
		code, err := fx.run(args...)
		want := "--azure-credential is used only by start, resume and promote (for Prometheus checks against Azure Monitor); " + verb + " makes no Azure call"
		if code != 1 || err == nil || err.Error() != want {
			t.Errorf("%s: exit %d, err %v", verb, code, err)
		}
	}
	// Where it is used, it reaches the factory.
	fx := newFixture(t, stable(3))
	if code, err := fx.run("resume", "mlapp", "--azure-credential", "azure-cli"); code != 1 || err.Error() != `no rollout in progress on deployment "mlapp"` {
		t.Fatalf("resume: exit %d: %v", code, err)
	}
	if fx.f.AzureCredential != "azure-cli" {
		t.Fatalf("AzureCredential = %q", fx.f.AzureCredential)
	}
}

// promote handed to a live driver waits for it to take the request (-o json says so), and gives
// up with exit 3 after --timeout, leaving the request in place.
func TestPromoteHandedToLiveDriver(t *testing.T) {
	d, c := inProgress(t, "bob@ci (pid 7)", clock.Add(-time.Second))
	fx := newFixture(t, d, c)
	// The live driver: it takes any promote request it sees.
	taken := make(chan struct{})
	go func() {
		defer close(taken)
		for i := 0; i < 400; i++ {
			time.Sleep(10 * time.Millisecond)
			cur, err := fx.kube.AppsV1().Deployments("ml").Get(context.Background(), "mlapp", metav1.GetOptions{})
			if err != nil {
				continue
			}
			st, _ := rollout.ReadState(cur)
			if st == nil || st.PromoteRequest == "" {
				continue
			}
			st.PromoteRequest = ""
			st.Step++
			b, _ := json.Marshal(st)
			cur.Annotations[rollout.AnnotationState] = string(b)
			if _, err := fx.kube.AppsV1().Deployments("ml").Update(context.Background(), cur, metav1.UpdateOptions{}); err == nil {
				return
			}
		}
	}()
	code, err := fx.run("promote", "mlapp", "-o", "json", "--timeout", "10s")
	<-taken
	if code != 0 {
		t.Fatalf("exit %d: %v\n%s", code, err, fx.errOut.String())
	}
	var h handoff
	if err := json.Unmarshal(fx.out.Bytes(), &h); err != nil {
		t.Fatalf("-o json: %v\n%s", err, fx.out.String())
	}
	if !h.Taken || h.DrivenBy != "bob@ci (pid 7)" || h.Promote != "step" || h.Step != 3 || h.Steps != 4 || h.Phase != "Progressing" {
		t.Fatalf("handoff = %+v", h)
	}

	// Nobody takes it: exit 3 after --timeout, the request stays.
	d, c = inProgress(t, "bob@ci (pid 7)", clock.Add(-time.Second))
	fx = newFixture(t, d, c)
	start := time.Now()
	code, err = fx.run("promote", "mlapp", "--full", "--timeout", "600ms")
	if code != 3 || err == nil || !strings.Contains(err.Error(), "timed out after 600ms waiting for bob@ci (pid 7) to take the promotion") {
		t.Fatalf("exit %d: %v", code, err)
	}
	if took := time.Since(start); took < 600*time.Millisecond || took > 5*time.Second {
		t.Fatalf("gave up after %s", took)
	}
	cur, _ := fx.kube.AppsV1().Deployments("ml").Get(context.Background(), "mlapp", metav1.GetOptions{})
	if st, _ := rollout.ReadState(cur); st == nil || st.PromoteRequest != "full" {
		t.Fatalf("the request did not stay in place: %+v", st)
	}
}
