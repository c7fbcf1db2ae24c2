package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// The operator every mlrollout command runs as: bound only to docs/rbac/mlrollout-operator.yaml.
const mlrUser = "mlrollout-operator"

const (
	mlrCanarySel = "app=mlapp,rollouts.mlplugins.io/track=canary"
	mlrStableSel = "app=mlapp,rollouts.mlplugins.io/track!=canary"
)

// mlrSetup makes a namespace with the operator Role bound to mlrUser and an mlapp Deployment.
func mlrSetup(t *testing.T, env *framework.Env, replicas int, image string) string {
	t.Helper()
	ns := env.Namespace(t)
	rbac, err := os.ReadFile(filepath.Join(env.Root, "docs", "rbac", "mlrollout-operator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	env.Apply(t, ns, string(rbac))
	env.Apply(t, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: mlapp
  labels: {app: mlapp}
spec:
  replicas: %d
  progressDeadlineSeconds: 90
  selector:
    matchLabels: {app: mlapp}
  template:
    metadata:
      labels: {app: mlapp}
    spec:
      containers:
      - name: model
        image: %s
        ports: [{containerPort: 8080}]
      - name: proxy
        image: registry.example/proxy:1
---
apiVersion: v1
kind: Service
metadata:
  name: mlapp
spec:
  selector: {app: mlapp}
  ports: [{port: 80, targetPort: 8080}]
`, replicas, image))
	if res := env.Kubectl(t, "rollout", "status", "deployment/mlapp", "-n", ns, "--timeout=180s"); res.Code != 0 {
		t.Fatalf("rollout status: %s", res.Stderr)
	}
	return ns
}

// mlr runs `kubectl mlrollout ARGS -n ns --as=mlrollout-operator` through the real kubectl.
func mlr(t *testing.T, env *framework.Env, ns string, args ...string) framework.Result {
	t.Helper()
	res := env.Kubectl(t, append([]string{"mlrollout"}, append(args, "-n", ns, "--as="+mlrUser)...)...)
	if res.Stderr != "" {
		t.Logf("stderr:\n%s", res.Stderr)
	}
	return res
}

func mlrDeployment(t *testing.T, env *framework.Env, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := env.Clientset(t).AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s: %v", name, err)
	}
	return d
}

// mlrAssertStable checks the stable Deployment's model image and replicas, and that no canary or state is left.
func mlrAssertStable(t *testing.T, env *framework.Env, ns, image string, replicas int32) *appsv1.Deployment {
	t.Helper()
	d := mlrDeployment(t, env, ns, "mlapp")
	if got := d.Spec.Template.Spec.Containers[0].Image; got != image {
		t.Errorf("stable image = %s, want %s", got, image)
	}
	if got := d.Spec.Template.Spec.Containers[1].Image; got != "registry.example/proxy:1" {
		t.Errorf("proxy image changed to %s", got)
	}
	if *d.Spec.Replicas != replicas {
		t.Errorf("stable replicas = %d, want %d", *d.Spec.Replicas, replicas)
	}
	if _, ok := d.Spec.Template.Labels["rollouts.mlplugins.io/track"]; ok {
		t.Error("stable template got the track label")
	}
	if s, ok := d.Annotations["rollouts.mlplugins.io/state"]; ok {
		t.Errorf("rollout state left behind: %s", s)
	}
	framework.Eventually(t, 30*time.Second, func() (bool, error) {
		_, err := env.Clientset(t).AppsV1().Deployments(ns).Get(context.Background(), "mlapp-canary", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	return d
}

type mlrRecord struct {
	ID     string            `json:"id"`
	Result string            `json:"result"`
	Reason string            `json:"reason"`
	Images map[string]string `json:"images"`
	Checks []struct {
		Name     string `json:"name"`
		Runs     int    `json:"runs"`
		Failures int    `json:"failures"`
	} `json:"checks"`
}

func mlrHistory(t *testing.T, env *framework.Env, ns string) []mlrRecord {
	t.Helper()
	res := mlr(t, env, ns, "history", "mlapp", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("history: exit %d: %s", res.Code, res.Stderr)
	}
	var h []mlrRecord
	if err := json.Unmarshal([]byte(res.Stdout), &h); err != nil {
		t.Fatalf("history json: %v\n%s", err, res.Stdout)
	}
	return h
}

// mlrEvent waits for an Event with reason on the stable Deployment and returns its message.
func mlrEvent(t *testing.T, env *framework.Env, ns, reason string) string {
	t.Helper()
	var msg string
	framework.Eventually(t, 20*time.Second, func() (bool, error) {
		evs, err := env.Clientset(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.Name == "mlapp" && e.Reason == reason {
				msg = e.Message
				return true, nil
			}
		}
		return false, fmt.Errorf("no %s event", reason)
	})
	return msg
}

// mlrServer is a local model server for one track: predictions (or a status), and a /metrics page.
type mlrServer struct {
	URL         string
	status      atomic.Int32
	predictions atomic.Value // string
	errors      atomic.Int64
}

func newMLRServer(t *testing.T, predictions string, status int) *mlrServer {
	t.Helper()
	s := &mlrServer{}
	s.status.Store(int32(status))
	s.predictions.Store(predictions)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprintf(w, "# TYPE e2e_mlapp_errors_total counter\ne2e_mlapp_errors_total %d\n", s.errors.Load())
		case "/v1/models/mlapp:predict":
			if r.Method != http.MethodPost {
				http.Error(w, "POST only", http.StatusMethodNotAllowed)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(s.status.Load()))
			fmt.Fprintf(w, `{"predictions": %s}`, s.predictions.Load().(string))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *mlrServer) target() string { return strings.TrimPrefix(s.URL, "http://") }

// mlrTracks starts one server per track and routes canary and stable pods to them.
func mlrTracks(t *testing.T, env *framework.Env, ns string, canary, stable *mlrServer, scrape bool) {
	t.Helper()
	env.Route(t, ns, mlrCanarySel, 8080, canary.target(), scrape)
	env.Route(t, ns, mlrStableSel, 8080, stable.target(), scrape)
}

func mlrWritePlan(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: mlrollout.aks-mlops.io/v1alpha1\nkind: RolloutPlan\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const mlrPredictCheck = `- name: predict
  http:
    port: 8080
    path: /v1/models/mlapp:predict
    method: POST
    body: '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    expectStatus: 200
    maxLatency: 5s
    compareWithStable:
      jsonPath: '$.predictions'
      tolerance: 0.01
`

// mlrRetryingPredictCheck tolerates the first measurements, taken before `platform route` has
// created the port-forward of a brand-new canary pod.
var mlrRetryingPredictCheck = strings.Replace(mlrPredictCheck, "  http:\n", "  interval: 1s\n  failureLimit: 2\n  http:\n", 1)

func TestMlrolloutPromote(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 10, "registry.example/mlapp:v1")
	mlrTracks(t, env, ns, newMLRServer(t, "[[0.1, 0.9]]", 200), newMLRServer(t, "[[0.105, 0.9]]", 200), false)
	planFile := mlrWritePlan(t, `steps:
- weight: 10
  bake: 3s
- weight: 50
  bake: 3s
- weight: 100
checks:
- name: targets-up
  interval: 1s
  prometheus:
    query: 'count(up) or vector(1)'
    min: 1
`+mlrRetryingPredictCheck)
	res := mlr(t, env, ns, "start", "mlapp", "--image", "model=registry.example/mlapp:v2", "--plan", planFile,
		"--prometheus-url", env.PrometheusURL, "-o", "json", "--timeout", "3m")
	if res.Code != 0 {
		t.Fatalf("start: exit %d", res.Code)
	}
	var out struct {
		Outcome     string `json:"outcome"`
		StepsRun    int    `json:"stepsRun"`
		APIRequests int    `json:"apiRequests"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil || out.Outcome != "Promoted" || out.StepsRun != 3 || out.APIRequests == 0 {
		t.Fatalf("start -o json = %+v (%v)\n%s", out, err, res.Stdout)
	}
	d := mlrAssertStable(t, env, ns, "registry.example/mlapp:v2", 10)
	if res := env.Kubectl(t, "rollout", "status", "deployment/mlapp", "-n", ns, "--timeout=180s"); res.Code != 0 {
		t.Fatalf("stable not rolled out: %s", res.Stderr)
	}
	if cause := d.Annotations["kubernetes.io/change-cause"]; !strings.Contains(cause, "kubectl mlrollout: promoted") {
		t.Errorf("change-cause = %q", cause)
	}
	h := mlrHistory(t, env, ns)
	if len(h) != 1 || h[0].Result != "Promoted" || h[0].Images["model"] != "registry.example/mlapp:v2" {
		t.Fatalf("history = %+v", h)
	}
	for _, c := range h[0].Checks {
		if c.Runs == 0 || (c.Name != "predict" && c.Failures != 0) {
			t.Errorf("check %s: %d runs, %d failures", c.Name, c.Runs, c.Failures)
		}
	}
	mlrEvent(t, env, ns, "CanaryStep")
	if msg := mlrEvent(t, env, ns, "CanaryPromoted"); !strings.Contains(msg, "registry.example/mlapp:v2") {
		t.Errorf("promoted event: %s", msg)
	}
	if res := mlr(t, env, ns, "status", "mlapp"); res.Code != 0 || !strings.Contains(res.Stdout, "none in progress") {
		t.Errorf("status after promotion: exit %d\n%s", res.Code, res.Stdout)
	}
}

func TestMlrolloutFailedChecksRollBack(t *testing.T) {
	env := framework.Setup(t)
	tests := []struct {
		name      string
		image     string
		canary    func(t *testing.T) *mlrServer
		checks    string
		scrape    bool
		deadline  int
		wantEvent string
	}{
		{
			name:  "prometheus error rate",
			image: "registry.example/mlapp:v2",
			canary: func(t *testing.T) *mlrServer {
				s := newMLRServer(t, "[[0.1, 0.9]]", 200)
				s.errors.Store(7)
				return s
			},
			scrape: true,
			checks: `- name: error-rate
  interval: 1s
  failureLimit: 8
  prometheus:
    query: 'sum(e2e_mlapp_errors_total{namespace="{{ .Namespace }}",pod=~"{{ .CanaryPods }}"})'
    max: 1
`,
			wantEvent: "7 > max 1",
		},
		{name: "http 500", image: "registry.example/mlapp:v2", canary: func(t *testing.T) *mlrServer { return newMLRServer(t, "[]", 500) },
			checks: mlrRetryingPredictCheck, wantEvent: "answered 500, want 200"},
		{name: "different predictions", image: "registry.example/mlapp:v2", canary: func(t *testing.T) *mlrServer { return newMLRServer(t, "[[0.7, 0.3]]", 200) },
			checks: mlrRetryingPredictCheck, wantEvent: "predictions differ from stable pod"},
		{name: "never ready", image: "registry.example/mlapp:v2-notready", canary: func(t *testing.T) *mlrServer { return newMLRServer(t, "[[0.1, 0.9]]", 200) },
			deadline: 20, wantEvent: "canary pods Ready after 20s (progressDeadlineSeconds)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")
			mlrTracks(t, env, ns, tt.canary(t), newMLRServer(t, "[[0.1, 0.9]]", 200), tt.scrape)
			if tt.deadline > 0 {
				patch := fmt.Sprintf(`{"spec":{"progressDeadlineSeconds":%d}}`, tt.deadline)
				if res := env.Kubectl(t, "patch", "deployment/mlapp", "-n", ns, "-p", patch); res.Code != 0 {
					t.Fatalf("patch: %s", res.Stderr)
				}
			}
			body := "steps:\n- weight: 25\n  bake: 30s\n- weight: 100\n"
			if tt.checks != "" {
				body += "checks:\n" + tt.checks
			}
			before := mlrDeployment(t, env, ns, "mlapp")
			res := mlr(t, env, ns, "start", "mlapp", "--image", "model="+tt.image, "--plan", mlrWritePlan(t, body),
				"--prometheus-url", env.PrometheusURL, "--timeout", "3m")
			if res.Code != 2 {
				t.Fatalf("start: exit %d, want 2", res.Code)
			}
			d := mlrAssertStable(t, env, ns, "registry.example/mlapp:v1", 4)
			if !equalTemplates(before, d) {
				t.Error("stable template changed")
			}
			if msg := mlrEvent(t, env, ns, "CanaryCheckFailed"); !strings.Contains(msg, tt.wantEvent) {
				t.Errorf("CanaryCheckFailed event = %q, want it to contain %q", msg, tt.wantEvent)
			}
			mlrEvent(t, env, ns, "CanaryRolledBack")
			if h := mlrHistory(t, env, ns); len(h) != 1 || h[0].Result != "RolledBack" || !strings.Contains(h[0].Reason, tt.wantEvent) {
				t.Errorf("history = %+v", h)
			}
		})
	}
}

func equalTemplates(a, b *appsv1.Deployment) bool {
	x, _ := json.Marshal(a.Spec.Template)
	y, _ := json.Marshal(b.Spec.Template)
	return string(x) == string(y)
}

func TestMlrolloutPauseStep(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 5, "registry.example/mlapp:v1")
	res := mlr(t, env, ns, "start", "mlapp", "--image", "model=registry.example/mlapp:v2", "--steps", "20,pause,100")
	if res.Code != 4 {
		t.Fatalf("start: exit %d, want 4", res.Code)
	}
	if d := mlrDeployment(t, env, ns, "mlapp"); *d.Spec.Replicas != 4 {
		t.Errorf("stable replicas at pause = %d, want 4", *d.Spec.Replicas)
	}
	if c := mlrDeployment(t, env, ns, "mlapp-canary"); *c.Spec.Replicas != 1 || c.Spec.Template.Labels["rollouts.mlplugins.io/track"] != "canary" ||
		len(c.OwnerReferences) != 1 || c.OwnerReferences[0].Name != "mlapp" {
		t.Errorf("canary = %d replicas, labels %v, owners %v", *c.Spec.Replicas, c.Spec.Template.Labels, c.OwnerReferences)
	}
	if res := mlr(t, env, ns, "status", "mlapp"); res.Code != 4 || !strings.Contains(res.Stdout, "Paused") {
		t.Errorf("status: exit %d\n%s", res.Code, res.Stdout)
	}
	// The tracks do not fight: the stable ReplicaSets (whose selector also matches canary pods) adopt
	// none of them, the canary pods belong to the canary's ReplicaSet, and the Service selects both.
	kube := env.Clientset(t)
	framework.Eventually(t, 60*time.Second, func() (bool, error) {
		d := mlrDeployment(t, env, ns, "mlapp")
		if d.Status.Replicas != 4 || d.Status.ReadyReplicas != 4 {
			return false, fmt.Errorf("stable status %d/%d, want 4/4", d.Status.ReadyReplicas, d.Status.Replicas)
		}
		pods, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: mlrCanarySel})
		if err != nil || len(pods.Items) != 1 {
			return false, fmt.Errorf("canary pods: %v (%d)", err, len(pods.Items))
		}
		ref := metav1.GetControllerOf(&pods.Items[0])
		if ref == nil || !strings.HasPrefix(ref.Name, "mlapp-canary-") {
			return false, fmt.Errorf("canary pod controller = %v", ref)
		}
		slices, err := kube.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=mlapp"})
		if err != nil {
			return false, err
		}
		n, canary := 0, false
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				n++
				if ep.TargetRef != nil && ep.TargetRef.Name == pods.Items[0].Name {
					canary = true
				}
			}
		}
		if n != 5 || !canary {
			return false, fmt.Errorf("service endpoints: %d, canary pod among them: %v", n, canary)
		}
		return true, nil
	})
	if res := mlr(t, env, ns, "status", "mlapp", "-w", "--timeout", "5s"); res.Code != 4 {
		t.Errorf("status -w on a paused rollout: exit %d, want 4", res.Code)
	}
	if res := mlr(t, env, ns, "promote", "mlapp"); res.Code != 0 {
		t.Fatalf("promote: exit %d", res.Code)
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v2", 5)

	// A second rollout paused the same way, then aborted: back to v2 at 5 replicas.
	if res := mlr(t, env, ns, "start", "mlapp", "--image", "model=registry.example/mlapp:v3", "--steps", "40,pause,100"); res.Code != 4 {
		t.Fatalf("second start: exit %d, want 4", res.Code)
	}
	if d := mlrDeployment(t, env, ns, "mlapp"); *d.Spec.Replicas != 3 {
		t.Errorf("stable replicas at pause = %d, want 3", *d.Spec.Replicas)
	}
	if res := mlr(t, env, ns, "abort", "mlapp"); res.Code != 0 {
		t.Fatalf("abort: exit %d", res.Code)
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v2", 5)
	mlrEvent(t, env, ns, "CanaryAborted")
	h := mlrHistory(t, env, ns)
	if len(h) != 2 || h[0].Result != "Promoted" || h[1].Result != "Aborted" {
		t.Fatalf("history = %+v", h)
	}
	// undo goes back to the template before the promotion.
	if res := mlr(t, env, ns, "undo", "mlapp"); res.Code != 0 {
		t.Fatalf("undo: exit %d", res.Code)
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v1", 5)
}

// mlrStartBackground starts `kubectl mlrollout start` as a subprocess and waits until its canary is
// Ready and baking; the process is killed at cleanup if still running.
func mlrStartBackground(t *testing.T, env *framework.Env, ns string, args ...string) (*os.Process, <-chan error) {
	t.Helper()
	cmd := env.Command("kubectl", append([]string{"mlrollout", "start", "mlapp", "-n", ns, "--as=" + mlrUser}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		t.Logf("background start stderr:\n%s", stderr.String())
	})
	framework.Eventually(t, 60*time.Second, func() (bool, error) {
		d := mlrDeployment(t, env, ns, "mlapp")
		var st struct {
			ReadyAt *time.Time `json:"readyAt"`
		}
		raw := d.Annotations["rollouts.mlplugins.io/state"]
		if raw == "" {
			return false, fmt.Errorf("no state yet")
		}
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			return false, err
		}
		return st.ReadyAt != nil, nil
	})
	return cmd.Process, done
}

func mlrKubectlPID(p *os.Process) int { return p.Pid }

func TestMlrolloutSigkillResumeAbortTakeover(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")

	for _, finish := range []string{"resume", "abort", "takeover"} {
		t.Run(finish, func(t *testing.T) {
			image := "registry.example/mlapp:v2-" + finish
			proc, done := mlrStartBackground(t, env, ns, "--image", "model="+image, "--steps", "50,100", "--bake", "20s")
			// kubectl execs the plugin in place, so the pid is the plugin's.
			if err := proc.Kill(); err != nil {
				t.Fatal(err)
			}
			<-done
			res := mlr(t, env, ns, "status", "mlapp")
			if res.Code != 5 || !strings.Contains(res.Stdout, "Progressing") || !strings.Contains(res.Stdout, fmt.Sprintf("(pid %d)", mlrKubectlPID(proc))) {
				t.Fatalf("status right after the kill: exit %d\n%s", res.Code, res.Stdout)
			}
			// While the heartbeat is fresh nobody may take over.
			if res := mlr(t, env, ns, "resume", "mlapp"); res.Code != 1 || !strings.Contains(res.Stderr, "driven by") {
				t.Fatalf("resume with a fresh heartbeat: exit %d", res.Code)
			}
			framework.Eventually(t, 40*time.Second, func() (bool, error) {
				res := mlr(t, env, ns, "status", "mlapp")
				return res.Code == 5 && strings.Contains(res.Stdout, "NOT RESPONDING"), nil
			})
			if c := mlrDeployment(t, env, ns, "mlapp-canary"); *c.Spec.Replicas != 2 {
				t.Errorf("canary replicas = %d, want 2", *c.Spec.Replicas)
			}
			if finish == "takeover" {
				res = mlr(t, env, ns, "start", "mlapp", "--image", "model="+image, "--takeover", "--timeout", "2m")
			} else {
				res = mlr(t, env, ns, finish, "mlapp", "--timeout", "2m")
			}
			if res.Code != 0 {
				t.Fatalf("%s: exit %d", finish, res.Code)
			}
			if finish == "abort" {
				mlrAssertStable(t, env, ns, "registry.example/mlapp:v2-resume", 4)
			} else {
				mlrAssertStable(t, env, ns, image, 4)
			}
		})
	}
	h := mlrHistory(t, env, ns)
	if len(h) != 3 || h[0].Result != "Promoted" || h[1].Result != "Aborted" || h[2].Result != "Promoted" {
		t.Fatalf("history = %+v", h)
	}
}

func TestMlrolloutSecondStartNamesOwner(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")
	proc, done := mlrStartBackground(t, env, ns, "--image", "model=registry.example/mlapp:v2", "--steps", "50,100", "--bake", "2m")
	before := mlrDeployment(t, env, ns, "mlapp")
	canaryBefore := mlrDeployment(t, env, ns, "mlapp-canary")
	res := mlr(t, env, ns, "start", "mlapp", "--image", "model=registry.example/mlapp:v3")
	want := fmt.Sprintf("(pid %d)", proc.Pid)
	if res.Code != 1 || !strings.Contains(res.Stderr, "is in progress") || !strings.Contains(res.Stderr, want) || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Fatalf("second start: exit %d, stderr %q (want one line naming %s)", res.Code, res.Stderr, want)
	}
	after := mlrDeployment(t, env, ns, "mlapp")
	if !equalTemplates(before, after) || *after.Spec.Replicas != *before.Spec.Replicas || mlrState(after)["id"] != mlrState(before)["id"] || mlrState(after)["owner"] != mlrState(before)["owner"] {
		t.Error("the second start changed the stable deployment")
	}
	if c := mlrDeployment(t, env, ns, "mlapp-canary"); c.Spec.Template.Spec.Containers[0].Image != canaryBefore.Spec.Template.Spec.Containers[0].Image {
		t.Error("the second start changed the canary")
	}
	if res := mlr(t, env, ns, "status", "mlapp", "-w", "--timeout", "3s"); res.Code != 3 || !strings.Contains(res.Stderr, "timed out") {
		t.Errorf("status -w while baking: exit %d, want 3", res.Code)
	}
	// abort from a second terminal stops the first driver (exit 1) and restores the Deployment.
	if res := mlr(t, env, ns, "abort", "mlapp"); res.Code != 0 {
		t.Fatalf("abort: exit %d", res.Code)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("the aborted driver exited 0")
		}
	case <-time.After(30 * time.Second):
		t.Error("the aborted driver did not stop")
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v1", 4)
}

// TestMlrolloutPromoteHandedToDriver: promote from a second terminal while start drives the rollout.
// The request is handed over; promote returns once the driver took it (-o json says so) and the
// driver finishes the promotion itself, exiting 0.
func TestMlrolloutPromoteHandedToDriver(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")
	proc, done := mlrStartBackground(t, env, ns, "--image", "model=registry.example/mlapp:v2", "--steps", "25,50,100", "--bake", "10m")
	res := mlr(t, env, ns, "promote", "mlapp", "--full", "-o", "json", "--timeout", "1m")
	if res.Code != 0 {
		t.Fatalf("promote: exit %d\n%s", res.Code, res.Stderr)
	}
	var h struct {
		Rollout, Promote, DrivenBy, Phase string
		Taken                             bool
	}
	if err := json.Unmarshal([]byte(res.Stdout), &h); err != nil {
		t.Fatalf("promote -o json: %v\n%s", err, res.Stdout)
	}
	if !h.Taken || h.Promote != "full" || !strings.Contains(h.DrivenBy, fmt.Sprintf("(pid %d)", proc.Pid)) || h.Rollout == "" {
		t.Fatalf("handover = %+v", h)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the driver ended with %v after the promotion", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the driver did not finish the promotion")
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v2", 4)
}

func mlrState(d *appsv1.Deployment) map[string]any {
	var m map[string]any
	_ = json.Unmarshal([]byte(d.Annotations["rollouts.mlplugins.io/state"]), &m)
	return m
}

func TestMlrolloutHPA(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")
	env.Apply(t, ns, `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: mlapp
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: mlapp}
  minReplicas: 4
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
`)
	res := mlr(t, env, ns, "plan", "mlapp", "--image", "model=registry.example/mlapp:v2", "--steps", "25,pause,100")
	if res.Code != 0 || !strings.Contains(res.Stdout, "hpa") {
		t.Fatalf("plan: exit %d\n%s", res.Code, res.Stdout)
	}
	if res := mlr(t, env, ns, "start", "mlapp", "--image", "model=registry.example/mlapp:v2", "--steps", "25,pause,100"); res.Code != 4 {
		t.Fatalf("start: exit %d, want 4", res.Code)
	}
	// Documented: with an HPA the stable replicas are left to it; the canary is sized from its desired count.
	if d := mlrDeployment(t, env, ns, "mlapp"); *d.Spec.Replicas != 4 {
		t.Errorf("stable replicas = %d, want 4 (left to the HPA)", *d.Spec.Replicas)
	}
	if c := mlrDeployment(t, env, ns, "mlapp-canary"); *c.Spec.Replicas != 1 {
		t.Errorf("canary replicas = %d, want 1 (25%% of 4 on top)", *c.Spec.Replicas)
	}
	if res := mlr(t, env, ns, "status", "mlapp"); res.Code != 4 || !strings.Contains(res.Stdout, "HPA:") {
		t.Errorf("status: exit %d\n%s", res.Code, res.Stdout)
	}
	if res := mlr(t, env, ns, "promote", "mlapp", "--timeout", "2m"); res.Code != 0 {
		t.Fatalf("promote: exit %d", res.Code)
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v2", 4)
	hpa, err := env.Clientset(t).AutoscalingV2().HorizontalPodAutoscalers(ns).Get(context.Background(), "mlapp", metav1.GetOptions{})
	if err != nil || hpa.Spec.ScaleTargetRef.Name != "mlapp" {
		t.Fatalf("hpa after promotion: %v", err)
	}
}

func TestMlrolloutBadInput(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 3, "registry.example/mlapp:v1")
	badPlan := mlrWritePlan(t, "steps:\n- weight: 10\n  bake: 2m\n  bak: 1m\n")
	badVar := mlrWritePlan(t, "steps:\n- weight: 10\nchecks:\n- name: e\n  prometheus:\n    query: 'up{pod=~\"{{ .CanaryPod }}\"}'\n    max: 1\n")
	promPlan := mlrWritePlan(t, "steps:\n- weight: 10\nchecks:\n- name: e\n  prometheus:\n    query: 'sum(rate(x{namespace=\"{{ .Namespace }}\"}[1m]'\n    max: 1\n")
	goodProm := mlrWritePlan(t, "steps:\n- weight: 10\nchecks:\n- name: e\n  prometheus:\n    query: 'vector(0)'\n    max: 1\n")
	tests := []struct {
		name string
		as   string
		args []string
		want string
	}{
		{name: "unknown deployment", args: []string{"start", "nope", "--image", "model=x:2"}, want: `error: deployment "nope" not found in namespace "` + ns + `"`},
		{name: "unknown container", args: []string{"start", "mlapp", "--image", "modle=x:2"}, want: `error: deployment "mlapp" has no container "modle" (containers: model, proxy)`},
		{name: "malformed steps", args: []string{"start", "mlapp", "--image", "model=x:2", "--steps", "10,abc"}, want: `error: malformed --steps "10,abc": "abc" is neither a weight nor "pause"`},
		{name: "bad plan file", args: []string{"start", "mlapp", "--image", "model=x:2", "--plan", badPlan}, want: `line 6: unknown field "bak" in step`},
		{name: "unknown template variable", args: []string{"start", "mlapp", "--image", "model=x:2", "--plan", badVar}, want: `line 8: unknown template variable {{ .CanaryPod }}`},
		{name: "unreachable prometheus", args: []string{"start", "mlapp", "--image", "model=x:2", "--plan", goodProm, "--prometheus-url", "http://127.0.0.1:1"}, want: `error: check "e": prometheus at http://127.0.0.1:1:`},
		{name: "rejected query", args: []string{"start", "mlapp", "--image", "model=x:2", "--plan", promPlan, "--prometheus-url", env.PrometheusURL}, want: `bad_data`},
		{name: "missing rbac", as: "nobody", args: []string{"start", "mlapp", "--image", "model=x:2"}, want: `error: `},
		{name: "missing rbac write", as: "mlrollout-reader", args: []string{"start", "mlapp", "--image", "model=x:2"}, want: `error: missing permission in namespace "` + ns + `": cannot create deployments, create events, delete deployments, patch deployments, update deployments`},
	}
	env.Apply(t, ns, `apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mlrollout-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: mlrollout-reader}]
`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mlrDeployment(t, env, ns, "mlapp")
			as := tt.as
			if as == "" {
				as = mlrUser
			}
			res := env.Kubectl(t, append([]string{"mlrollout"}, append(tt.args, "-n", ns, "--as="+as)...)...)
			lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
			if res.Code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("exit %d, stderr %q; want one line containing %q", res.Code, res.Stderr, tt.want)
			}
			after := mlrDeployment(t, env, ns, "mlapp")
			if after.ResourceVersion != before.ResourceVersion {
				t.Error("the stable deployment changed")
			}
			if _, err := env.Clientset(t).AppsV1().Deployments(ns).Get(context.Background(), "mlapp-canary", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("a canary exists: %v", err)
			}
		})
	}
}

func TestMlrolloutLeastPrivilegeCommands(t *testing.T) {
	env := framework.Setup(t)
	ns := mlrSetup(t, env, 4, "registry.example/mlapp:v1")
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"version", "--short"}, 0, ""},
		{[]string{"plan", "mlapp", "--image", "model=registry.example/mlapp:v2", "--steps", "10,60,100"}, 0, "weight 10% (reaches 25.0%)"},
		{[]string{"list"}, 0, ""},
		{[]string{"start", "mlapp", "--image", "model=registry.example/mlapp:v2", "--dry-run=server"}, 0, "name: mlapp-canary"},
		{[]string{"start", "mlapp", "--image", "model=registry.example/mlapp:v2", "--steps", "50,pause,100", "-o", "json"}, 4, `"outcome": "Paused"`},
		{[]string{"list", "-o", "json"}, 0, `"phase": "Paused"`},
		{[]string{"status", "mlapp", "-o", "json"}, 4, `"inProgress": true`},
		{[]string{"resume", "mlapp"}, 4, ""},
		{[]string{"promote", "mlapp", "-o", "json"}, 0, `"outcome": "Promoted"`},
		{[]string{"status", "mlapp", "-w", "--timeout", "10s"}, 0, "none in progress"},
		{[]string{"history", "mlapp"}, 0, "Promoted"},
		{[]string{"start", "mlapp", "--image", "model=registry.example/mlapp:v3", "--steps", "50,100", "--bake", "1h", "--timeout", "5s"}, 3, ""},
		{[]string{"pause", "mlapp"}, 0, ""},
		{[]string{"status", "mlapp"}, 4, "Paused"},
		{[]string{"abort", "mlapp"}, 0, ""},
		{[]string{"undo", "mlapp", "--to-revision", "1"}, 0, ""},
	}
	for _, s := range steps {
		res := mlr(t, env, ns, s.args...)
		if res.Code != s.code || !strings.Contains(res.Stdout, s.out) {
			t.Fatalf("kubectl mlrollout %s: exit %d (want %d), stdout:\n%s", strings.Join(s.args, " "), res.Code, s.code, res.Stdout)
		}
	}
	mlrAssertStable(t, env, ns, "registry.example/mlapp:v1", 4)
	// Shell completion goes through cobra's __complete (kubectl's kubectl_complete-mlrollout helper calls it).
	res := env.Kubectl(t, "mlrollout", "__complete", "-n", ns, "--as="+mlrUser, "status", "")
	if res.Code != 0 || !strings.Contains(res.Stdout, "mlapp\n") || strings.Contains(res.Stdout, "mlapp-canary") {
		t.Fatalf("__complete: exit %d\n%s", res.Code, res.Stdout)
	}
}
