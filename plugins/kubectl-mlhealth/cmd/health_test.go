package cmd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/pkg/shared/testutil"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/fixture"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/sources"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fakeMetrics returns fixed samples, or fails.
type fakeMetrics struct {
	samples health.Samples
	err     string
	queries []sources.MetricsQuery
}

func (f *fakeMetrics) Collect(_ context.Context, q sources.MetricsQuery) (health.Samples, health.Source) {
	f.queries = append(f.queries, q)
	if f.err != "" {
		return nil, health.Source{Name: "prometheus", Status: health.SourceError, Error: f.err}
	}
	return f.samples, health.Source{Name: "prometheus", Status: health.SourceOK, Requests: 22, Detail: "fake"}
}

// newOptions returns options over a fake clientset holding the scenario's objects and namespace ml.
func newOptions(t *testing.T, scenario string) (*HealthOptions, *bytes.Buffer, *bytes.Buffer, *fixture.Scenario) {
	t.Helper()
	s, err := fixture.Load(scenario)
	if err != nil {
		t.Fatal(err)
	}
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	o := NewHealthOptions(genericclioptions.NewConfigFlags(false), streams)
	o.Kube = &sources.Kubernetes{Client: k8sfake.NewClientset(scenarioObjects(s)...)}
	o.Namespace = "ml"
	o.Now = func() time.Time { return now }
	return o, out, errOut, s
}

// scenarioObjects is the namespace ml, the scenario's objects and extra, for a fake clientset.
func scenarioObjects(s *fixture.Scenario, extra ...runtime.Object) []runtime.Object {
	objs := append([]runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}}, extra...)
	k := s.Kube
	for i := range k.Deployments {
		objs = append(objs, &k.Deployments[i])
	}
	for i := range k.ReplicaSets {
		objs = append(objs, &k.ReplicaSets[i])
	}
	for i := range k.Pods {
		objs = append(objs, &k.Pods[i])
	}
	for i := range k.HPAs {
		objs = append(objs, &k.HPAs[i])
	}
	for i := range k.PDBs {
		objs = append(objs, &k.PDBs[i])
	}
	for i := range k.PVCs {
		objs = append(objs, &k.PVCs[i])
	}
	for i := range k.Nodes {
		objs = append(objs, &k.Nodes[i])
	}
	for i := range k.Events {
		objs = append(objs, &k.Events[i])
	}
	return objs
}

func run(o *HealthOptions, args ...string) error {
	cmd := NewCmdHealth(o)
	cmd.SetArgs(append([]string{}, args...))
	return cmd.ExecuteContext(context.Background())
}

func TestGoldenOutput(t *testing.T) {
	tests := []struct {
		name, scenario string
		args           []string
		metrics        bool
		wantCode       int
	}{
		{name: "healthy.txt", scenario: "healthy", args: []string{"sentiment"}, wantCode: 0},
		{name: "broken.txt", scenario: "broken", wantCode: 2},
		{name: "broken-wide.txt", scenario: "broken", args: []string{"-o", "wide"}, wantCode: 2},
		{name: "broken-warning.txt", scenario: "broken", args: []string{"scaled", "--fail-on", "warning"}, wantCode: 2},
		{name: "broken-never.txt", scenario: "broken", args: []string{"--fail-on", "never", "-l", "app.kubernetes.io/instance in (scaled,nopdb)"}, wantCode: 0},
		{name: "metrics.txt", scenario: "metrics", args: []string{"llm"}, metrics: true, wantCode: 2},
		{name: "metrics.json", scenario: "metrics", args: []string{"llm", "-o", "json"}, metrics: true, wantCode: 2},
		{name: "metrics.yaml", scenario: "metrics", args: []string{"llm", "-o", "yaml"}, metrics: true, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, out, errOut, s := newOptions(t, tt.scenario)
			if tt.metrics {
				o.Metrics = &fakeMetrics{samples: s.Samples}
			}
			err := run(o, tt.args...)
			if got := cliutil.ExitCode(err); got != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d; stderr %q", got, err, tt.wantCode, errOut.String())
			}
			if errOut.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", errOut.String())
			}
			if !strings.HasSuffix(tt.name, ".json") && !strings.HasSuffix(tt.name, ".yaml") && !strings.Contains(tt.name, "wide") {
				for _, l := range strings.Split(out.String(), "\n") {
					if n := len([]rune(l)); n > MaxTableWidth {
						t.Errorf("line wider than %d (%d): %q", MaxTableWidth, n, l)
					}
				}
			}
			if strings.Contains(out.String(), "\x1b[") {
				t.Error("colour written to a non-terminal")
			}
			testutil.Golden(t, filepath.Join("testdata", tt.name), out.Bytes(), *update)
		})
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--since", "abc"}, `invalid --since "abc": want a positive duration such as 30m, 2h or 1d`},
		{[]string{"--since", "-5m"}, `invalid --since "-5m": want a positive duration such as 30m, 2h or 1d`},
		{[]string{"-o", "xml"}, `unknown output format "xml" (want one of: table, wide, json, yaml)`},
		{[]string{"-l", "a=(b"}, `invalid selector "a=(b": `},
		{[]string{"--fail-on", "sometimes"}, `invalid --fail-on "sometimes" (want one of: critical, warning, never)`},
		{[]string{"--metrics-profile", "x"}, `invalid --metrics-profile "x" (want one of: azure, kube-prometheus)`},
		{[]string{"--prometheus-auth", "azure"}, `--prometheus-auth needs --prometheus-url`},
		{[]string{"--prometheus-url", "ftp://x"}, `prometheus url "ftp://x" must be an absolute http or https URL`},
		{[]string{"nosuchapp"}, `no Deployment matches "nosuchapp" by app.kubernetes.io/instance, app.kubernetes.io/name or name in namespace "ml"`},
		{[]string{"--interval", "0s", "-w"}, `invalid --interval 0s: want a positive duration`},
		{[]string{"--timeout", "1m"}, `--interval and --timeout apply only with -w or --wait-healthy`},
		{[]string{"--interval", "2s"}, `--interval and --timeout apply only with -w or --wait-healthy`},
		{[]string{"--azure-credential", "cli"}, `invalid --azure-credential "cli"`},
		{[]string{"a", "b"}, `accepts at most 1 arg(s), received 2`},
		{[]string{"--log-analytics-workspace", "myworkspace"}, `invalid --log-analytics-workspace "myworkspace": want the workspace ID, a GUID`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, out, _, _ := newOptions(t, "healthy")
			err := run(o, tt.args...)
			if cliutil.ExitCode(err) != ExitError || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %v (code %d), want one line starting %q, exit 1", err, cliutil.ExitCode(err), tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", out.String())
			}
		})
	}
}

func TestUnknownNamespace(t *testing.T) {
	o, _, _, _ := newOptions(t, "healthy")
	o.Namespace = "nope"
	err := run(o)
	if cliutil.ExitCode(err) != ExitError || err.Error() != `namespace not found: "nope"` {
		t.Errorf("error = %v", err)
	}
}

func TestFailedSourceStillReports(t *testing.T) {
	o, out, _, _ := newOptions(t, "healthy")
	o.Metrics = &fakeMetrics{err: "22 of 22 queries failed: connection refused"}
	err := run(o, "sentiment", "-o", "json")
	if cliutil.ExitCode(err) != ExitError || !strings.Contains(err.Error(), "prometheus source failed: 22 of 22 queries failed: connection refused") {
		t.Errorf("error = %v", err)
	}
	if !strings.Contains(out.String(), `"status": "Healthy"`) || !strings.Contains(out.String(), `"name": "sentiment"`) {
		t.Errorf("report missing: %s", out.String())
	}
}

func TestRequestMetricsFollowAnnotations(t *testing.T) {
	o, _, _, s := newOptions(t, "metrics")
	m := &fakeMetrics{samples: s.Samples}
	o.Metrics = m
	d := &s.Kube.Deployments[0]
	d.Annotations[health.AnnotationRequestMetric] = "request_predict_seconds"
	o.Kube = &sources.Kubernetes{Client: k8sfake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, d)}
	_ = run(o, "llm")
	if len(m.queries) != 1 || strings.Join(m.queries[0].RequestMetrics, ",") != "request_predict_seconds" || m.queries[0].Namespace != "ml" || m.queries[0].Since != time.Hour {
		t.Errorf("queries = %+v", m.queries)
	}
}

func TestWaitHealthy(t *testing.T) {
	o, out, errOut, _ := newOptions(t, "broken")
	err := run(o, "crash", "--wait-healthy", "--timeout", "300ms", "--interval", "100ms")
	var ee *cliutil.ExitError
	if !errors.As(err, &ee) || ee.Code != ExitTimeout || !strings.Contains(err.Error(), `timed out after 300ms waiting for app "crash" in namespace "ml" to be healthy: Critical`) {
		t.Errorf("error = %v", err)
	}
	// The OOM kill before the wait does not count; the crash loop going on does.
	if !strings.Contains(errOut.String(), `waiting for app "crash" in namespace "ml": Critical (2 critical, 0 warning: CrashLoopBackOff, ReplicasUnavailable)`) {
		t.Errorf("stderr = %q", errOut.String())
	}
	if strings.Count(errOut.String(), "waiting for") != 1 {
		t.Errorf("progress repeated: %q", errOut.String())
	}
	if !strings.HasPrefix(out.String(), "Critical  namespace ml, app crash") {
		t.Errorf("final report missing: %q", out.String())
	}

	o, out, _, _ = newOptions(t, "healthy")
	if err := run(o, "sentiment", "--wait-healthy", "--timeout", "5s", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), `"generatedAt"`) != 1 {
		t.Errorf("want one report, got %s", out.String())
	}
}

// TestWaitHealthyIgnoresTroubleBeforeTheWait: a Warning event from before the wait makes a
// one-shot report Warning, but does not hold --wait-healthy until it leaves --since.
func TestWaitHealthyIgnoresTroubleBeforeTheWait(t *testing.T) {
	event := func(at time.Time) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "probe", Namespace: "ml"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "sentiment-7d9f-aaaaa", Namespace: "ml"},
			Type:           corev1.EventTypeWarning, Reason: "Unhealthy", Message: "Readiness probe failed: connection refused",
			Count: 3, LastTimestamp: metav1.NewTime(at),
		}
	}
	withEvent := func(o *HealthOptions, s *fixture.Scenario, at time.Time) {
		o.Kube = &sources.Kubernetes{Client: k8sfake.NewClientset(scenarioObjects(s, event(at))...)}
	}

	o, out, _, s := newOptions(t, "healthy")
	withEvent(o, s, now.Add(-10*time.Minute))
	err := run(o, "sentiment", "--fail-on", "warning")
	if cliutil.ExitCode(err) != ExitFindings || !strings.Contains(out.String(), "3 Warning events in the last 1h: Unhealthy") {
		t.Fatalf("one-shot report: err %v\n%s", err, out.String())
	}

	o, out, _, s = newOptions(t, "healthy")
	withEvent(o, s, now.Add(-10*time.Minute))
	if err := run(o, "sentiment", "--wait-healthy", "--timeout", "2s", "--interval", "50ms"); err != nil {
		t.Fatalf("--wait-healthy held by an event from before the wait: %v\n%s", err, out.String())
	}

	// Trouble after the wait began still holds it.
	o, out, _, s = newOptions(t, "healthy")
	withEvent(o, s, now.Add(time.Second))
	calls := 0
	o.Now = func() time.Time {
		calls++
		if calls == 1 {
			return now // the wait begins
		}
		return now.Add(2 * time.Second)
	}
	err = run(o, "sentiment", "--wait-healthy", "--timeout", "300ms", "--interval", "50ms")
	if cliutil.ExitCode(err) != ExitTimeout || !strings.Contains(out.String(), "Warning events in the last 2s: Unhealthy") {
		t.Errorf("trouble after the wait began: err %v\n%s", err, out.String())
	}
}

func TestWaitHealthyInterruptedIsNotATimeout(t *testing.T) {
	o, _, _, _ := newOptions(t, "broken")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx, cancelNow := context.WithCancel(ctx)
	time.AfterFunc(150*time.Millisecond, cancelNow)
	cmd := NewCmdHealth(o)
	cmd.SetArgs([]string{"crash", "--wait-healthy", "--interval", "50ms"})
	err := cmd.ExecuteContext(ctx)
	if cliutil.ExitCode(err) != ExitError || !strings.HasPrefix(err.Error(), `interrupted waiting for app "crash" in namespace "ml" to be healthy: Critical`) {
		t.Errorf("error = %v (code %d), want an interruption, exit 1", err, cliutil.ExitCode(err))
	}
}

func TestWatchAppendsOnAPipe(t *testing.T) {
	o, out, _, _ := newOptions(t, "healthy")
	err := run(o, "sentiment", "-w", "--timeout", "250ms", "--interval", "100ms", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "generatedAt:"); n < 2 {
		t.Errorf("want several reports, got %d:\n%s", n, out.String())
	}
	if strings.Count(out.String(), "---\n") != strings.Count(out.String(), "generatedAt:")-1 || strings.Contains(out.String(), "\x1b[") {
		t.Errorf("want YAML documents appended without escapes:\n%s", out.String())
	}
}

func TestTableIsColouredOnlyWhenEnabled(t *testing.T) {
	var buf bytes.Buffer
	r := health.Report{Status: health.StatusCritical, Scope: health.Scope{Namespace: "ml", Since: "1h0m0s"},
		Workloads: []health.Workload{{Name: "a", Status: health.StatusCritical}},
		Findings:  []health.Finding{{Severity: health.SeverityCritical, Reason: "X", Object: "pod/a", Message: "m", Hint: "h"}}}
	if err := renderTable(&buf, &r, false, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	// The whole padded cell is coloured, so the column after it still lines up.
	if !strings.Contains(lines[3], "\x1b[31mCritical\x1b[0m  0/0") {
		t.Errorf("row = %q", lines[3])
	}
}

func TestKubernetesFailureIsUnknown(t *testing.T) {
	o, out, _, _ := newOptions(t, "healthy")
	c := k8sfake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}})
	c.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("rbac"))
	})
	o.Kube = &sources.Kubernetes{Client: c}
	err := run(o, "-o", "json")
	if cliutil.ExitCode(err) != ExitError || !strings.HasPrefix(err.Error(), "kubernetes source failed: listing pods: pods is forbidden") {
		t.Errorf("error = %v", err)
	}
	if !strings.Contains(out.String(), `"status": "Unknown"`) {
		t.Errorf("report = %s", out.String())
	}
}
