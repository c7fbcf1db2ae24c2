package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// healthReport mirrors the documented JSON schema of `kubectl mlhealth -o json` (docs/mlhealth.md).
// It is decoded with unknown fields disallowed, so a change to the schema fails here.
type healthReport struct {
	Status      string    `json:"status"`
	GeneratedAt time.Time `json:"generatedAt"`
	Scope       struct {
		Namespace     string `json:"namespace"`
		AllNamespaces bool   `json:"allNamespaces"`
		App           string `json:"app"`
		Selector      string `json:"selector"`
		Since         string `json:"since"`
	} `json:"scope"`
	Workloads []healthWorkload `json:"workloads"`
	Findings  []healthFinding  `json:"findings"`
	Sources   []healthSource   `json:"sources"`
}

type healthReplicas struct {
	Desired   int32 `json:"desired"`
	Ready     int32 `json:"ready"`
	UpToDate  int32 `json:"upToDate"`
	Available int32 `json:"available"`
}

type healthMetrics struct {
	RequestRate       *float64 `json:"requestRate"`
	ErrorRatio        *float64 `json:"errorRatio"`
	LatencyP95Seconds *float64 `json:"latencyP95Seconds"`
	CPUCores          *float64 `json:"cpuCores"`
	MemoryBytes       *float64 `json:"memoryBytes"`
	GPUUtilization    *float64 `json:"gpuUtilization"`
}

type healthWorkload struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Kind      string         `json:"kind"`
	Status    string         `json:"status"`
	Replicas  healthReplicas `json:"replicas"`
	Restarts  int            `json:"restarts"`
	OOMKills  int            `json:"oomKills"`
	Images    []string       `json:"images"`
	Resources struct {
		CPURequestCores    float64 `json:"cpuRequestCores"`
		CPULimitCores      float64 `json:"cpuLimitCores"`
		MemoryRequestBytes float64 `json:"memoryRequestBytes"`
		MemoryLimitBytes   float64 `json:"memoryLimitBytes"`
		GPUs               int64   `json:"gpus"`
	} `json:"resources"`
	Metrics *healthMetrics `json:"metrics"`
	Canary  *struct {
		Name      string         `json:"name"`
		Status    string         `json:"status"`
		Replicas  healthReplicas `json:"replicas"`
		Step      *int           `json:"step"`
		Steps     *int           `json:"steps"`
		Weight    *float64       `json:"weight"`
		Phase     string         `json:"phase"`
		LastCheck string         `json:"lastCheck"`
		Metrics   *healthMetrics `json:"metrics"`
	} `json:"canary"`
}

type healthFinding struct {
	Severity  string `json:"severity"`
	Reason    string `json:"reason"`
	Object    string `json:"object"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Message   string `json:"message"`
	Hint      string `json:"hint"`
}

type healthSource struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	Requests int    `json:"requests"`
	Detail   string `json:"detail"`
}

// mlhealth runs the real `kubectl mlhealth` (kubectl finds the plugin on PATH) with extra environment.
func mlhealth(t *testing.T, e *framework.Env, env []string, args ...string) framework.Result {
	t.Helper()
	cmd := e.Command("kubectl", append([]string{"mlhealth"}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubectl mlhealth: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kubectl mlhealth %s: still running after 5m", strings.Join(args, " "))
	}
	res := framework.Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	t.Logf("$ kubectl mlhealth %s  (exit %d, %.2fs)", strings.Join(args, " "), res.Code, time.Since(start).Seconds())
	return res
}

// decodeReport decodes the report strictly.
func decodeReport(t *testing.T, out string) healthReport {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var r healthReport
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("report does not match the documented schema: %v\n%s", err, out)
	}
	return r
}

func (r healthReport) finding(reason, workload string) *healthFinding {
	for i := range r.Findings {
		if r.Findings[i].Reason == reason && (workload == "" || r.Findings[i].Workload == workload) {
			return &r.Findings[i]
		}
	}
	return nil
}

func (r healthReport) source(name string) healthSource {
	for _, s := range r.Sources {
		if s.Name == name {
			return s
		}
	}
	return healthSource{}
}

func (r healthReport) workload(name string) *healthWorkload {
	for i := range r.Workloads {
		if r.Workloads[i].Name == name {
			return &r.Workloads[i]
		}
	}
	return nil
}

// deployment renders a Deployment manifest; extra is appended under spec.template.spec.containers[0].
func deployment(name string, replicas int, image string, labels map[string]string, containerExtra string) string {
	var lb strings.Builder
	for k, v := range labels {
		fmt.Fprintf(&lb, "    %s: %q\n", k, v)
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  labels:
    app.kubernetes.io/instance: %[1]s
%[5]sspec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - name: model
        image: %[3]q
%[4]s`, name, replicas, image, containerExtra, lb.String())
}

func TestMLHealthHealthyApp(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, deployment("sentiment", 2, "example.com/sentiment:v1", map[string]string{"app.kubernetes.io/name": "sentiment-api"}, `        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {memory: 256Mi}
`)+`---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: sentiment}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: sentiment}}
`)

	res := mlhealth(t, e, nil, "sentiment", "-n", ns, "--wait-healthy", "--timeout", "2m", "--interval", "1s", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("--wait-healthy: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, app := range []string{"sentiment", "sentiment-api"} {
		res = mlhealth(t, e, nil, app, "-n", ns, "-o", "json")
		if res.Code != 0 || res.Stderr != "" {
			t.Fatalf("exit %d, stderr %q", res.Code, res.Stderr)
		}
		r := decodeReport(t, res.Stdout)
		if r.Status != "Healthy" || len(r.Workloads) != 1 || r.Workloads[0].Name != "sentiment" || r.Scope.Namespace != ns || r.Scope.App != app {
			t.Fatalf("report = %+v", r)
		}
		w := r.Workloads[0]
		if w.Status != "Healthy" || w.Replicas != (healthReplicas{Desired: 2, Ready: 2, UpToDate: 2, Available: 2}) || w.Kind != "Deployment" ||
			w.Resources.CPURequestCores != 0.2 || w.Resources.MemoryLimitBytes != 512*1024*1024 {
			t.Errorf("workload = %+v", w)
		}
		for _, f := range r.Findings {
			if f.Severity != "info" {
				t.Errorf("unexpected finding %+v", f)
			}
		}
		k := r.source("kubernetes")
		if k.Status != "ok" || k.Requests != 9 {
			t.Errorf("kubernetes source = %+v, want ok with 9 requests (8 lists + the namespace)", k)
		}
		if r.source("prometheus").Status != "disabled" || r.source("log-analytics").Status != "disabled" {
			t.Errorf("sources = %+v", r.Sources)
		}
		if time.Since(r.GeneratedAt) > time.Minute {
			t.Errorf("generatedAt = %s", r.GeneratedAt)
		}
	}

	res = mlhealth(t, e, nil, "sentiment", "-n", ns)
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, "Healthy  namespace "+ns+", app sentiment, window 1h") || strings.Contains(res.Stdout, "\x1b[") {
		t.Fatalf("table: exit %d\n%s", res.Code, res.Stdout)
	}
	for _, l := range strings.Split(res.Stdout, "\n") {
		if n := len([]rune(l)); n > 120 {
			t.Errorf("table line of %d columns: %q", n, l)
		}
	}
	if res = mlhealth(t, e, nil, "sentiment", "-n", ns, "-o", "yaml"); res.Code != 0 || !strings.Contains(res.Stdout, "status: Healthy\n") {
		t.Errorf("yaml: exit %d\n%s", res.Code, res.Stdout)
	}

	// A Warning event from ten minutes ago is trouble inside --since for a report, but does not
	// hold --wait-healthy, which asks whether the app is healthy from now on.
	at := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
	e.Apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Event
metadata: {name: sentiment.probe}
involvedObject: {apiVersion: apps/v1, kind: Deployment, name: sentiment, namespace: %s}
type: Warning
reason: ProgressDeadlineExceeded
message: earlier rollout stalled
count: 2
firstTimestamp: %q
lastTimestamp: %q
source: {component: e2e}
`, ns, at, at))
	if res = mlhealth(t, e, nil, "sentiment", "-n", ns, "--fail-on", "warning"); res.Code != 2 || !strings.Contains(res.Stdout, "2 Warning events in the last 1h: ProgressDeadlineExceeded") {
		t.Errorf("report with an old Warning event: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if res = mlhealth(t, e, nil, "sentiment", "-n", ns, "--wait-healthy", "--timeout", "30s", "--interval", "1s"); res.Code != 0 {
		t.Errorf("--wait-healthy held by a Warning event from before the wait: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
}

func TestMLHealthFindings(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, strings.Join([]string{
		deployment("gpu", 1, "example.com/llm:v1", nil, `        resources:
          limits: {nvidia.com/gpu: "1"}
`),
		deployment("crash", 1, "example.com/llm:v1-crashloop", nil, ""),
		deployment("pull", 1, "example.com/llm:v1-imagepull", nil, ""),
		strings.Replace(deployment("stalled", 1, "example.com/llm:v1-notready", nil, ""), "spec:\n  replicas: 1", "spec:\n  progressDeadlineSeconds: 5\n  replicas: 1", 1),
	}, "---\n"))

	tests := []struct {
		app, reason, severity, object, message string
	}{
		{"gpu", "Unschedulable", "critical", "pod/gpu-", "Insufficient nvidia.com/gpu"},
		{"crash", "CrashLoopBackOff", "critical", "pod/crash-", `container "model" restarted`},
		{"pull", "ImagePullBackOff", "critical", "pod/pull-", `cannot pull "example.com/llm:v1-imagepull"`},
		{"stalled", "ProgressDeadlineExceeded", "critical", "deployment/stalled", "has timed out progressing"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			var last healthReport
			var code int
			framework.Eventually(t, 2*time.Minute, func() (bool, error) {
				res := mlhealth(t, e, nil, tt.app, "-n", ns, "-o", "json", "--fail-on", "critical")
				code = res.Code
				last = decodeReport(t, res.Stdout)
				return last.finding(tt.reason, tt.app) != nil, nil
			})
			f := last.finding(tt.reason, tt.app)
			if code != 2 || last.Status != "Critical" || f.Severity != tt.severity || !strings.HasPrefix(f.Object, tt.object) ||
				!strings.Contains(f.Message, tt.message) || f.Hint == "" || f.Namespace != ns {
				t.Errorf("exit %d, status %s, finding %+v", code, last.Status, f)
			}
			if r := mlhealth(t, e, nil, tt.app, "-n", ns, "--fail-on", "never", "-o", "json"); r.Code != 0 {
				t.Errorf("--fail-on never: exit %d", r.Code)
			}
		})
	}
	if gpu := mlhealth(t, e, nil, "gpu", "-n", ns); !strings.Contains(gpu.Stdout, "no node has a free nvidia.com/gpu") {
		t.Errorf("table lacks the GPU hint:\n%s", gpu.Stdout)
	}
	// The stalled pods run but never become ready; after the grace period that is its own finding.
	framework.Eventually(t, time.Minute, func() (bool, error) {
		r := decodeReport(t, mlhealth(t, e, nil, "stalled", "-n", ns, "-o", "json").Stdout)
		return r.finding("ReadinessFailing", "stalled") != nil, nil
	})
	// The whole namespace at once: every workload is reported, -A too.
	all := decodeReport(t, mlhealth(t, e, nil, "-n", ns, "-o", "json").Stdout)
	if len(all.Workloads) != 4 || all.Status != "Critical" {
		t.Errorf("namespace report: %d workloads, status %s", len(all.Workloads), all.Status)
	}
	res := mlhealth(t, e, nil, "-A", "-l", "app.kubernetes.io/instance in (crash,pull)", "-o", "json")
	everywhere := decodeReport(t, res.Stdout)
	if res.Code != 2 || !everywhere.Scope.AllNamespaces || len(everywhere.Workloads) < 2 {
		t.Errorf("-A: exit %d, %d workloads", res.Code, len(everywhere.Workloads))
	}
}

func TestMLHealthBadInput(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-n", "no-such-namespace-mlhealth"}, `error: namespace not found: "no-such-namespace-mlhealth"`},
		{[]string{"-n", ns, "-l", "a=(b"}, `error: invalid selector "a=(b": `},
		{[]string{"-n", ns, "--since", "yesterday"}, `error: invalid --since "yesterday": want a positive duration such as 30m, 2h or 1d`},
		{[]string{"-n", ns, "-o", "xml"}, `error: unknown output format "xml" (want one of: table, wide, json, yaml)`},
		{[]string{"nothing-here", "-n", ns}, `error: no Deployment matches "nothing-here"`},
	}
	for _, tt := range tests {
		res := mlhealth(t, e, nil, tt.args...)
		lines := strings.Split(strings.TrimSuffix(res.Stderr, "\n"), "\n")
		if res.Code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], tt.want) || res.Stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and one line %q", tt.args, res.Code, res.Stdout, res.Stderr, tt.want)
		}
	}
}

func TestMLHealthLeastPrivilege(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, deployment("reader-app", 1, "example.com/app:v1", nil, ""))
	if r := e.Kubectl(t, "apply", "-n", ns, "-f", e.Root+"/docs/rbac/mlhealth-reader.yaml"); r.Code != 0 {
		t.Fatalf("apply rbac: %s", r.Stderr)
	}
	t.Cleanup(func() { e.Kubectl(t, "delete", "clusterrole", "mlhealth-cluster-reader", "--ignore-not-found") })
	user := "mlhealth-viewer-" + ns
	if r := e.Kubectl(t, "create", "rolebinding", "viewer", "-n", ns, "--role=mlhealth-reader", "--user="+user); r.Code != 0 {
		t.Fatalf("rolebinding: %s", r.Stderr)
	}
	// The user can read what mlhealth needs and nothing more.
	if r := e.Kubectl(t, "auth", "can-i", "list", "secrets", "-n", ns, "--as", user); strings.TrimSpace(r.Stdout) != "no" {
		t.Fatalf("the Role grants secrets: %q", r.Stdout)
	}
	for _, l := range strings.Split(e.Kubectl(t, "auth", "can-i", "--list", "-n", ns, "--as", user).Stdout, "\n") {
		if strings.HasPrefix(l, "selfsubject") { // every authenticated user may ask what it may do
			continue
		}
		verbs := l[strings.LastIndex(l, "[")+1:]
		for _, verb := range []string{"create", "update", "patch", "delete", "*"} {
			if strings.Contains(verbs, verb) {
				t.Errorf("the Role grants %s: %q", verb, l)
			}
		}
	}
	var rep healthReport
	framework.Eventually(t, time.Minute, func() (bool, error) {
		res := mlhealth(t, e, nil, "reader-app", "-n", ns, "--as", user, "-o", "json")
		if res.Code != 0 {
			return false, nil
		}
		rep = decodeReport(t, res.Stdout)
		return rep.Status == "Healthy", nil
	})
	k := rep.source("kubernetes")
	if k.Status != "ok" || !strings.Contains(k.Detail, "skipped nodes: forbidden") {
		t.Errorf("kubernetes source as %s = %+v", user, k)
	}
	// Without the binding the same command fails with the API's reason and exit 1.
	res := mlhealth(t, e, nil, "reader-app", "-n", ns, "--as", "nobody-"+ns, "-o", "json")
	r := decodeReport(t, res.Stdout)
	if res.Code != 1 || r.Status != "Unknown" || r.source("kubernetes").Status != "error" || !strings.Contains(r.source("kubernetes").Error, "forbidden") {
		t.Errorf("as nobody: exit %d, source %+v, stderr %q", res.Code, r.source("kubernetes"), res.Stderr)
	}
}

func TestMLHealthWatch(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, deployment("watched", 1, "example.com/app:v1", nil, ""))
	res := mlhealth(t, e, nil, "watched", "-n", ns, "--wait-healthy", "--timeout", "1m", "--interval", "1s")
	if res.Code != 0 {
		t.Fatalf("wait: exit %d %s", res.Code, res.Stderr)
	}

	// On a pipe, -w appends one report per refresh, without escape sequences.
	res = mlhealth(t, e, nil, "watched", "-n", ns, "-w", "--timeout", "3500ms", "--interval", "1s")
	if n := strings.Count(res.Stdout, "Healthy  namespace "+ns); res.Code != 0 || n < 2 || strings.Contains(res.Stdout, "\x1b") {
		t.Errorf("pipe: exit %d, %d reports:\n%q", res.Code, n, res.Stdout)
	}

	// On a terminal (script(1) gives the command a pseudo-terminal), it redraws in place, in colour.
	cmd := e.Command("script", "-qec", "kubectl mlhealth watched -n "+ns+" -w --timeout 3500ms --interval 1s", "/dev/null")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("script: %v", err)
	}
	if n := strings.Count(string(out), "\x1b[H\x1b[2J"); n < 2 || !strings.Contains(string(out), "\x1b[32mHealthy\x1b[0m") {
		t.Errorf("terminal: %d redraws:\n%q", n, out)
	}
}
