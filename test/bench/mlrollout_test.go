//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

const mlrPlanInstantCheck = `apiVersion: mlrollout.aks-mlops.io/v1alpha1
kind: RolloutPlan
steps:
%s
checks:
- name: instant
  prometheus:
    query: 'vector(0)'
    max: 1
`

func mlrBenchDeployment(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  replicas: %[2]d
  progressDeadlineSeconds: 300
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: model
        image: registry.example/bench:v1
`, name, replicas)
}

func mlrPlanFile(t *testing.T, weights []int) string {
	var b strings.Builder
	for _, w := range weights {
		fmt.Fprintf(&b, "- weight: %d\n", w)
	}
	path := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(mlrPlanInstantCheck, strings.TrimRight(b.String(), "\n"))), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type mlrStartJSON struct {
	Outcome            string  `json:"outcome"`
	StepsRun           int     `json:"stepsRun"`
	APIRequests        int     `json:"apiRequests"`
	APIRequestsPerStep float64 `json:"apiRequestsPerStep"`
}

// stepLatencies watches the namespace like the tool does and measures, for every step, the time from
// "the canary pods of the step are all Ready" to "the rollout state on the stable Deployment moved on".
type stepLatencies struct {
	mu        sync.Mutex
	latencies []time.Duration
}

func (s *stepLatencies) watch(ctx context.Context, t *testing.T, kube kubernetes.Interface, ns, name string) {
	pw, err := kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=" + name + ",rollouts.mlplugins.io/track=canary"})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer pw.Stop()
		defer dw.Stop()
		ready := map[string]bool{}
		var canaryReplicas, condReplicas int32
		step := -1
		var condAt time.Time
		check := func(now time.Time) {
			n := int32(0)
			for _, r := range ready {
				if r {
					n++
				}
			}
			if condAt.IsZero() && canaryReplicas > condReplicas && n >= canaryReplicas {
				condAt, condReplicas = now, canaryReplicas
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-pw.ResultChan():
				if !ok {
					return
				}
				now := time.Now()
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				ready[p.Name] = ev.Type != watch.Deleted && p.DeletionTimestamp == nil && mlrPodReady(p)
				check(now)
			case ev, ok := <-dw.ResultChan():
				if !ok {
					return
				}
				now := time.Now()
				d, ok := ev.Object.(*appsv1.Deployment)
				if !ok {
					continue
				}
				switch d.Name {
				case name + "-canary":
					if ev.Type == watch.Deleted {
						canaryReplicas = 0
					} else if d.Spec.Replicas != nil {
						canaryReplicas = *d.Spec.Replicas
					}
					check(now)
				case name:
					var st struct {
						Step  int    `json:"step"`
						Phase string `json:"phase"`
					}
					raw := d.Annotations["rollouts.mlplugins.io/state"]
					if raw == "" || json.Unmarshal([]byte(raw), &st) != nil {
						continue
					}
					if st.Step > step || st.Phase == "Promoting" {
						if step >= 0 && !condAt.IsZero() {
							s.mu.Lock()
							s.latencies = append(s.latencies, now.Sub(condAt))
							s.mu.Unlock()
						}
						step, condAt = st.Step, time.Time{}
						if st.Phase == "Promoting" {
							step = 1 << 30
						}
					}
				}
			}
		}
	}()
}

// mlrSettle waits until every pod of ns is Ready and none is being deleted, then half a second more.
func mlrSettle(t *testing.T, kube kubernetes.Interface, ns string) {
	t.Helper()
	framework.Eventually(t, time.Minute, func() (bool, error) {
		pods, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; p.DeletionTimestamp != nil || !mlrPodReady(p) {
				return false, fmt.Errorf("pod %s not settled", p.Name)
			}
		}
		return true, nil
	})
	time.Sleep(500 * time.Millisecond)
}

func mlrPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *stepLatencies) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.latencies...)
}

func mlrStart(t *testing.T, env *framework.Env, ns, name, planFile string) (mlrStartJSON, time.Duration) {
	t.Helper()
	start := time.Now()
	res := env.Kubectl(t, "mlrollout", "start", name, "-n", ns, "--image", "model=registry.example/bench:v2",
		"--plan", planFile, "--prometheus-url", env.PrometheusURL, "--timeout", "4m", "-o", "json")
	took := time.Since(start)
	if res.Code != 0 {
		t.Fatalf("mlrollout start: exit %d\n%s", res.Code, res.Stderr)
	}
	var out mlrStartJSON
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil || out.Outcome != "Promoted" {
		t.Fatalf("start result %+v (%v)\n%s", out, err, res.Stdout)
	}
	return out, took
}

func TestMlrolloutBenchmark(t *testing.T) {
	env := framework.Setup(t)
	kube := env.Clientset(t)

	// 1. Watch-driven reaction: 20 steps of a 20-replica Deployment, each adding one canary pod.
	ns := env.Namespace(t)
	env.Apply(t, ns, mlrBenchDeployment("lat", 20))
	if res := env.Kubectl(t, "rollout", "status", "deployment/lat", "-n", ns, "--timeout=300s"); res.Code != 0 {
		t.Fatalf("rollout status: %s", res.Stderr)
	}
	var weights []int
	for w := 5; w <= 100; w += 5 {
		weights = append(weights, w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lat := &stepLatencies{}
	lat.watch(ctx, t, kube, ns, "lat")
	latOut, latTook := mlrStart(t, env, ns, "lat", mlrPlanFile(t, weights))
	cancel()
	ls := lat.get()
	// A step is measured only when this watch sees its pods Ready before it sees the state move on;
	// the two arrive on separate watches, so once in a while the order flips and that step (one
	// mlrollout reacted to faster than this watch) is not counted. Most must be.
	if len(ls) < 15 {
		t.Fatalf("measured %d of 20 steps, want >= 15: %v", len(ls), ls)
	}
	med := Median(ls)
	maxL := ls[0]
	for _, l := range ls {
		maxL = max(maxL, l)
	}

	// 2. A 4-step canary of a 10-replica Deployment vs kubectl set image + rollout status, side by side,
	// in 6 rounds on fresh Deployments (medians). The two take turns going first, so that whatever
	// the first leaves behind in the control plane (informers catching up, garbage collection) does
	// not always land on the same side.
	const rounds = 6
	var plains, canaries []time.Duration
	var canOut mlrStartJSON
	planFile := mlrPlanFile(t, []int{25, 50, 75, 100})
	for r := 1; r <= rounds; r++ {
		canaryName, plainName := fmt.Sprintf("canary10-%d", r), fmt.Sprintf("plain10-%d", r)
		env.Apply(t, ns, mlrBenchDeployment(canaryName, 10))
		env.Apply(t, ns, mlrBenchDeployment(plainName, 10))
		for _, d := range []string{canaryName, plainName} {
			if res := env.Kubectl(t, "rollout", "status", "deployment/"+d, "-n", ns, "--timeout=300s"); res.Code != 0 {
				t.Fatalf("rollout status: %s", res.Stderr)
			}
		}
		plain := func() {
			start := time.Now()
			if res := env.Kubectl(t, "set", "image", "deployment/"+plainName, "-n", ns, "model=registry.example/bench:v2"); res.Code != 0 {
				t.Fatalf("set image: %s", res.Stderr)
			}
			if res := env.Kubectl(t, "rollout", "status", "deployment/"+plainName, "-n", ns, "--timeout=300s"); res.Code != 0 {
				t.Fatalf("rollout status: %s", res.Stderr)
			}
			plains = append(plains, time.Since(start))
		}
		canary := func() {
			out, took := mlrStart(t, env, ns, canaryName, planFile)
			canaries, canOut = append(canaries, took), out
		}
		first, second, order := plain, canary, "rolling update first"
		if r%2 == 0 {
			first, second, order = canary, plain, "canary first"
		}
		// Each side starts on a quiet namespace: no pod of an earlier rollout still going away, every
		// pod Ready, and a moment for the controllers to go idle.
		mlrSettle(t, kube, ns)
		first()
		mlrSettle(t, kube, ns)
		second()
		t.Logf("round %d (%s): rolling update %s, canary %s", r, order, plains[r-1].Round(time.Millisecond), canaries[r-1].Round(time.Millisecond))
	}
	plain, canTook := Median(plains), Median(canaries)
	ratio := canTook.Seconds() / plain.Seconds()

	latOK, ratioOK := med <= 50*time.Millisecond, ratio <= 2
	md := fmt.Sprintf(`### kubectl mlrollout

Command: `+"`make bench`"+` (`+"`go test -tags bench ./test/bench/... -run TestMlrolloutBenchmark`"+`), on the local platform (kwok nodes).

**Watch-driven steps.** `+"`kubectl mlrollout start lat --plan <20 steps 5,10,...,100> --prometheus-url $PROMETHEUS_URL`"+` on a
20-replica Deployment (one more canary pod per step, one instant Prometheus check, no bake). Latency is measured by an independent
watch from "all canary pods of the step are Ready" to "the rollout state on the Deployment moved to the next step" (a step
whose pods' Ready event reaches that watch only after the state moved on is not counted).

| steps measured | median | max | goal | met |
| --- | --- | --- | --- | --- |
| %d | %s | %s | median <= 50 ms | %s |

API requests: %d for %d steps, **%.1f per step** (counted from the claim of the rollout on: informer lists and watches, state writes, canary scaling, events; the validation before it is not counted).

**4-step canary vs a plain rolling update**, same image change on two identical 10-replica Deployments, side by side
in one run, %d rounds on fresh Deployments, taking turns going first, each side started on a settled namespace (medians):

| command | time |
| --- | --- |
| `+"`kubectl set image deployment/plain10 ... && kubectl rollout status deployment/plain10`"+` | %s |
| `+"`kubectl mlrollout start canary10 --image model=... --plan <25,50,75,100 + 1 instant check>`"+` | %s |
| ratio | **%.2fx** (goal <= 2x: %s) |

The canary run includes the promotion (the stable Deployment's own rolling update) and removing the canary;
%d API requests, %.1f per step.
`, len(ls), med.Round(time.Millisecond), maxL.Round(time.Millisecond), mlrYes(latOK),
		latOut.APIRequests, latOut.StepsRun, latOut.APIRequestsPerStep, rounds,
		plain.Round(10*time.Millisecond), canTook.Round(10*time.Millisecond), ratio, mlrYes(ratioOK),
		canOut.APIRequests, canOut.APIRequestsPerStep)
	t.Log("\n" + md)
	t.Logf("20-step run took %s; latencies %v", latTook, ls)
	if err := WriteSection("mlrollout", md); err != nil {
		t.Fatal(err)
	}
	if !latOK {
		t.Errorf("median condition-to-write latency %s > 50ms", med)
	}
	if !ratioOK {
		t.Errorf("canary/rolling-update ratio %.2f > 2", ratio)
	}
}

func mlrYes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
