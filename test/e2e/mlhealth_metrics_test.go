package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/prom"
	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// rolloutState is a rollout in progress as `kubectl mlrollout` writes it on the stable Deployment:
// a 0-based step into plan.steps, and the last result of each check.
const rolloutState = `{"id":"r-e2e","phase":"Progressing","images":{"model":"example.com/llm:v2"},"previousImages":{"model":"example.com/llm:v1"},` +
	`"plan":{"steps":[{"weight":10,"bake":"1m"},{"weight":33,"bake":"5m"},{"pause":true},{"weight":100}]},"mode":"scale","onFailure":"rollback","replicas":3,` +
	`"step":1,"stepStartedAt":"2026-11-26T03:00:00Z","checks":[{"name":"error-ratio","kind":"prometheus","runs":3,"failures":0,"stepRuns":1,"stepFailures":0,` +
	`"last":{"time":"2026-11-26T03:01:00Z","passed":true,"message":"0.9% <= 5%"}}],"owner":"e2e","heartbeat":"2026-11-26T03:01:00Z","startedAt":"2026-11-26T03:00:00Z"}`

// canaryApp creates the stable Deployment "llm" (2 pods) with the rollout state, and the canary
// "llm-canary" (1 pod) the way `kubectl mlrollout start` makes it, and returns the pod names per track.
func canaryApp(t *testing.T, e *framework.Env, ns string) (stable, canary []string) {
	t.Helper()
	e.Apply(t, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: llm
  labels: {app.kubernetes.io/instance: llm}
  annotations:
    rollouts.mlplugins.io/state: '%s'
spec:
  replicas: 2
  selector: {matchLabels: {app: llm}}
  template:
    metadata: {labels: {app: llm}}
    spec:
      containers:
      - name: model
        image: example.com/llm:v1
        resources:
          requests: {cpu: 500m, memory: 512Mi}
          limits: {memory: 1Gi}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: llm-canary
  labels: {app.kubernetes.io/instance: llm, rollouts.mlplugins.io/track: canary}
spec:
  replicas: 1
  selector: {matchLabels: {app: llm, rollouts.mlplugins.io/track: canary}}
  template:
    metadata: {labels: {app: llm, rollouts.mlplugins.io/track: canary}}
    spec:
      containers:
      - name: model
        image: example.com/llm:v2
        resources:
          requests: {cpu: 500m, memory: 512Mi}
          limits: {memory: 1Gi}
`, rolloutState))
	cs := e.Clientset(t)
	framework.Eventually(t, 2*time.Minute, func() (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=llm"})
		if err != nil {
			return false, err
		}
		stable, canary = nil, nil
		for _, p := range pods.Items {
			if p.Status.Phase != "Running" || p.DeletionTimestamp != nil {
				return false, nil
			}
			if p.Labels["rollouts.mlplugins.io/track"] == "canary" {
				canary = append(canary, p.Name)
			} else {
				stable = append(stable, p.Name)
			}
		}
		return len(stable) == 2 && len(canary) == 1, nil
	})
	sort.Strings(stable)
	return stable, canary
}

// podTraffic is what the exporter reports for one pod.
type podTraffic struct {
	rps, errShare, cpu, memory, gpu float64
	buckets                         []float64 // cumulative shares for bucketBounds
	restartEvery                    time.Duration
}

var bucketBounds = []string{"0.05", "0.1", "0.25", "0.5", "1", "+Inf"}

// exporter serves cAdvisor, kube-state-metrics, DCGM and request-histogram series for pods, with
// the labels AKS's managed Prometheus gives them (job="cadvisor", job="kube-state-metrics").
// Counters grow with the time since start, so rates are steady.
func exporter(t *testing.T, ns string, pods map[string]podTraffic) *httptest.Server {
	t.Helper()
	start := time.Now().Add(-10 * time.Minute)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		el := time.Since(start).Seconds()
		var b strings.Builder
		names := make([]string, 0, len(pods))
		for p := range pods {
			names = append(names, p)
		}
		sort.Strings(names)
		for _, pod := range names {
			tr := pods[pod]
			l := fmt.Sprintf(`namespace=%q,pod=%q`, ns, pod)
			fmt.Fprintf(&b, "container_cpu_usage_seconds_total{job=\"cadvisor\",%s,container=\"model\"} %g\n", l, tr.cpu*el)
			fmt.Fprintf(&b, "container_cpu_usage_seconds_total{job=\"cadvisor\",%s,container=\"POD\"} %g\n", l, 5*el)
			fmt.Fprintf(&b, "container_memory_working_set_bytes{job=\"cadvisor\",%s,container=\"model\"} %g\n", l, tr.memory)
			fmt.Fprintf(&b, "DCGM_FI_DEV_GPU_UTIL{%s,gpu=\"0\"} %g\n", l, tr.gpu)
			restarts := 0.0
			if tr.restartEvery > 0 {
				restarts = math.Floor(time.Since(start).Seconds() / tr.restartEvery.Seconds())
			}
			fmt.Fprintf(&b, "kube_pod_container_status_restarts_total{job=\"kube-state-metrics\",%s,container=\"model\"} %g\n", l, restarts)
			for _, code := range []string{"200", "500"} {
				share := 1 - tr.errShare
				if code == "500" {
					share = tr.errShare
				}
				count := tr.rps * share * el
				for i, le := range bucketBounds {
					fmt.Fprintf(&b, "http_request_duration_seconds_bucket{%s,code=%q,le=%q} %g\n", l, code, le, count*tr.buckets[i])
				}
				fmt.Fprintf(&b, "http_request_duration_seconds_count{%s,code=%q} %g\n", l, code, count)
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, b.String())
	}))
	t.Cleanup(srv.Close)
	return srv
}

// freePort returns a free 127.0.0.1 port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs a Prometheus that scrapes target every second, keeping the exposed labels
// (honor_labels), and stops it at cleanup.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (the platform installs Debian's package): %v", err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
- job_name: exporter
  honor_labels: true
  static_configs: [{targets: [%q]}]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
		})
	})
	url := "http://" + addr
	framework.Eventually(t, time.Minute, func() (bool, error) {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return url
}

// scalar runs q at at and returns the single value (NaN when the result is empty).
func scalar(t *testing.T, c *prom.Client, q string, at time.Time) float64 {
	t.Helper()
	v, _, err := c.Query(context.Background(), q, at)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(v) != 1 {
		return math.NaN()
	}
	return v[0].Value
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

func TestMLHealthMetricsMatchPromQL(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	stable, canary := canaryApp(t, e, ns)
	fast := []float64{0.2, 0.5, 0.8, 0.95, 0.99, 1}
	slow := []float64{0.05, 0.2, 0.5, 0.8, 0.9, 1}
	traffic := map[string]podTraffic{
		stable[0]: {rps: 5, errShare: 0.01, cpu: 0.25, memory: 300 << 20, gpu: 40, buckets: fast, restartEvery: 3 * time.Second},
		stable[1]: {rps: 7, errShare: 0.002, cpu: 0.35, memory: 310 << 20, gpu: 50, buckets: fast},
		canary[0]: {rps: 3, errShare: 0.2, cpu: 0.45, memory: 600 << 20, gpu: 70, buckets: slow},
	}
	exp := exporter(t, ns, traffic)
	promURL := startPrometheus(t, strings.TrimPrefix(exp.URL, "http://"))
	pc, err := prom.New(promURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Rates need a few scrapes.
	framework.Eventually(t, time.Minute, func() (bool, error) {
		v := scalar(t, pc, fmt.Sprintf(`min(count_over_time(http_request_duration_seconds_count{namespace=%q}[5m]))`, ns), time.Time{})
		return v >= 4, nil
	})

	res := mlhealth(t, e, nil, "llm", "-n", ns, "--prometheus-url", promURL, "--metrics-profile", "azure", "-o", "json")
	r := decodeReport(t, res.Stdout)
	if res.Code != 2 || r.source("prometheus").Status != "ok" {
		t.Fatalf("exit %d, sources %+v, stderr %q", res.Code, r.Sources, res.Stderr)
	}
	w := r.workload("llm")
	if w == nil || w.Metrics == nil || w.Canary == nil || w.Canary.Metrics == nil {
		t.Fatalf("workload = %+v", w)
	}

	// The same PromQL, per track, at the report's evaluation time.
	at := r.GeneratedAt
	check := func(track string, pods []string, m *healthMetrics, restarts *int) {
		sel := fmt.Sprintf(`namespace=%q, pod=~%q`, ns, strings.Join(pods, "|"))
		want := map[string]float64{
			"requestRate":       scalar(t, pc, fmt.Sprintf(`sum(rate(http_request_duration_seconds_count{%s}[5m]))`, sel), at),
			"errorRatio":        scalar(t, pc, fmt.Sprintf(`sum(rate(http_request_duration_seconds_count{%[1]s, code=~"5.."}[5m])) / sum(rate(http_request_duration_seconds_count{%[1]s}[5m]))`, sel), at),
			"latencyP95Seconds": scalar(t, pc, fmt.Sprintf(`histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{%s}[5m])))`, sel), at),
			"cpuCores":          scalar(t, pc, fmt.Sprintf(`sum(rate(container_cpu_usage_seconds_total{job="cadvisor", container!="", container!="POD", %s}[5m]))`, sel), at),
			"memoryBytes":       scalar(t, pc, fmt.Sprintf(`sum(container_memory_working_set_bytes{job="cadvisor", container!="", container!="POD", %s})`, sel), at),
			"gpuUtilization":    scalar(t, pc, fmt.Sprintf(`avg(DCGM_FI_DEV_GPU_UTIL{%s})`, sel), at),
		}
		got := map[string]*float64{"requestRate": m.RequestRate, "errorRatio": m.ErrorRatio, "latencyP95Seconds": m.LatencyP95Seconds,
			"cpuCores": m.CPUCores, "memoryBytes": m.MemoryBytes, "gpuUtilization": m.GPUUtilization}
		for k, v := range want {
			if got[k] == nil || !near(*got[k], v) || math.IsNaN(v) {
				t.Errorf("%s %s: mlhealth %v, PromQL %v", track, k, deref(got[k]), v)
			} else {
				t.Logf("%s %s: %v = %v", track, k, *got[k], v)
			}
		}
		if restarts != nil {
			v := scalar(t, pc, fmt.Sprintf(`sum(increase(kube_pod_container_status_restarts_total{job="kube-state-metrics", %s}[1h]))`, sel), at)
			if *restarts != int(math.Round(v)) || v < 1 {
				t.Errorf("%s restarts: mlhealth %d, PromQL %v", track, *restarts, v)
			}
		}
	}
	check("stable", stable, w.Metrics, &w.Restarts)
	check("canary", canary, w.Canary.Metrics, nil)

	// The canary in progress: its line, the rollout state, and the comparison with stable.
	c := w.Canary
	if c.Name != "llm-canary" || c.Step == nil || *c.Step != 2 || c.Steps == nil || *c.Steps != 4 || c.Weight == nil || *c.Weight != 33 ||
		c.Phase != "Progressing" || !strings.Contains(c.LastCheck, "error-ratio passed") || c.Replicas.Ready != 1 {
		t.Errorf("canary = %+v", c)
	}
	if f := r.finding("CanaryWorseThanStable", "llm"); f == nil || f.Severity != "critical" || f.Object != "deployment/llm-canary" {
		t.Errorf("CanaryWorseThanStable = %+v", f)
	}
	table := mlhealth(t, e, nil, "llm", "-n", ns, "--prometheus-url", promURL)
	for _, want := range []string{"RPS", "P95", "└ llm-canary", "Canary " + ns + "/llm-canary of llm: step 2/4, weight 33%, Progressing"} {
		if !strings.Contains(table.Stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, table.Stdout)
		}
	}

	// An unreachable Prometheus is a source error; the Kubernetes part is still reported.
	down := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	res = mlhealth(t, e, nil, "llm", "-n", ns, "--prometheus-url", down, "-o", "json")
	r = decodeReport(t, res.Stdout)
	p := r.source("prometheus")
	if res.Code != 1 || p.Status != "error" || !strings.Contains(p.Error, "connection refused") || r.source("kubernetes").Status != "ok" ||
		r.workload("llm") == nil || r.workload("llm").Replicas.Ready != 2 || r.workload("llm").Metrics != nil {
		t.Errorf("unreachable prometheus: exit %d, report %+v, stderr %q", res.Code, r, res.Stderr)
	}
	if !strings.HasPrefix(res.Stderr, "error: prometheus source failed: ") || strings.Count(res.Stderr, "\n") != 1 {
		t.Errorf("stderr = %q", res.Stderr)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
