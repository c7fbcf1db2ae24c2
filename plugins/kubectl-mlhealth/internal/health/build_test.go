package health_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/pkg/shared/testutil"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/fixture"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// now is the pinned clock of every scenario.
var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestBuildScenarios(t *testing.T) {
	tests := []struct {
		scenario, app, selector, golden string
		wantStatus                      health.Status
		wantReasons                     []string
	}{
		{scenario: "healthy", app: "sentiment", golden: "healthy-app.json", wantStatus: health.StatusHealthy},
		{scenario: "healthy", golden: "healthy-all.json", wantStatus: health.StatusHealthy},
		{scenario: "healthy", selector: "app.kubernetes.io/instance=other", golden: "healthy-selector.json", wantStatus: health.StatusHealthy},
		{scenario: "broken", golden: "broken.json", wantStatus: health.StatusCritical, wantReasons: []string{
			"CrashLoopBackOff", "ImagePullBackOff", "OOMKilled", "HighRestarts", "Unschedulable", "ReadinessFailing",
			"ProgressDeadlineExceeded", "ReplicasUnavailable", "HPAAtMax", "HPAMetricsUnavailable", "NoPodDisruptionBudget",
			"PDBBlocksDisruption", "PVCPending", "FailedMount", "NodeNotReady", "WarningEvents"}},
		{scenario: "metrics", app: "llm", golden: "metrics.json", wantStatus: health.StatusCritical, wantReasons: []string{
			"HighErrorRate", "HighLatency", "SLOBurnRate", "GPUIdle", "CanaryWorseThanStable"}},
		{scenario: "history", app: "hist", golden: "history.json", wantStatus: health.StatusWarning, wantReasons: []string{
			"OOMKilled", "HighRestarts", "WarningEvents"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			s, err := fixture.Load(tt.scenario)
			if err != nil {
				t.Fatal(err)
			}
			o := health.Options{App: tt.app, Namespace: "ml", Since: time.Hour, Now: now, SelectorText: tt.selector}
			if tt.selector != "" {
				if o.Selector, err = labels.Parse(tt.selector); err != nil {
					t.Fatal(err)
				}
			}
			r := health.Build(health.Input{Kube: s.Kube, Samples: s.Samples, History: s.History,
				Sources: []health.Source{{Name: "kubernetes", Status: health.SourceOK, Requests: 8}}}, o)
			if r.Status != tt.wantStatus {
				t.Errorf("status = %s, want %s", r.Status, tt.wantStatus)
			}
			got := map[string]bool{}
			for _, f := range r.Findings {
				got[f.Reason] = true
				if f.Hint == "" || f.Message == "" || f.Object == "" || f.Severity.Rank() == 0 {
					t.Errorf("incomplete finding %+v", f)
				}
			}
			for _, want := range tt.wantReasons {
				if !got[want] {
					t.Errorf("missing finding %s", want)
				}
			}
			if len(tt.wantReasons) == 0 && len(r.Findings) != 0 {
				t.Errorf("want no findings, got %+v", r.Findings)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetIndent("", "  ")
			if err := enc.Encode(r); err != nil {
				t.Fatal(err)
			}
			testutil.Golden(t, filepath.Join("testdata", "golden", tt.golden), buf.Bytes(), *update)
		})
	}
}

func TestQuantileMatchesPromQL(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets []health.Bucket
		want    float64
		ok      bool
	}{
		{"interpolates", 0.95, []health.Bucket{{0.1, 4}, {0.25, 9}, {0.5, 9.8}, {inf, 10}}, 0.40625, true},
		{"lowest bucket from zero", 0.5, []health.Bucket{{1, 10}, {inf, 10}}, 0.5, true},
		{"in +Inf bucket returns the highest finite bound", 0.99, []health.Bucket{{1, 5}, {inf, 10}}, 1, true},
		{"no observations", 0.95, []health.Bucket{{1, 0}, {inf, 0}}, 0, false},
		{"no +Inf bucket", 0.95, []health.Bucket{{1, 0}, {2, 0}}, 0, false},
		{"one bucket", 0.95, []health.Bucket{{inf, 3}}, 0, false},
		{"non-monotonic counts are fixed", 0.75, []health.Bucket{{1, 4}, {2, 3}, {inf, 8}}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := health.Quantile(tt.q, tt.buckets)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Quantile = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web-v2", Labels: map[string]string{
		health.LabelInstance: "release", health.LabelName: "web", "tier": "front"}}}
	sel, _ := labels.Parse("tier=front")
	other, _ := labels.Parse("tier=back")
	tests := []struct {
		app  string
		sel  labels.Selector
		want bool
	}{
		{"", nil, true}, {"release", nil, true}, {"web", nil, true}, {"web-v2", nil, true}, {"web-v", nil, false},
		{"web", sel, true}, {"web", other, false}, {"", other, false},
	}
	for _, tt := range tests {
		if got := health.Matches(d, tt.app, tt.sel); got != tt.want {
			t.Errorf("Matches(%q, %v) = %v, want %v", tt.app, tt.sel, got, tt.want)
		}
	}
}

func TestCanaryStateIsReadLoosely(t *testing.T) {
	tests := []struct {
		state      string
		wantStep   int
		wantSteps  int
		wantWeight float64
		wantPhase  string
		wantCheck  string
	}{
		{`{"currentStep":"1","steps":[10,50,100],"canaryWeight":10,"status":"Paused","lastCheck":"ok"}`, 1, 3, 10, "Paused", "ok"},
		{`{"step":3,"totalSteps":4,"weight":"75","phase":"Progressing","lastCheck":{"result":"failed","message":"error ratio 3%"}}`, 3, 4, 75, "Progressing", "failed (error ratio 3%)"},
		{`{"phase":"Paused","plan":{"steps":[{"weight":20},{"pause":true},{"weight":100}]},"step":1,"checks":[{"name":"p95","last":{"time":"2026-11-26T11:00:00Z","passed":false,"message":"slow"}}]}`, 2, 3, 20, "Paused", "p95 failed (slow) at 2026-11-26T11:00:00Z"},
	}
	for _, tt := range tests {
		s, err := fixture.Load("metrics")
		if err != nil {
			t.Fatal(err)
		}
		s.Kube.Deployments[0].Annotations[health.AnnotationRolloutState] = tt.state
		r := health.Build(health.Input{Kube: s.Kube}, health.Options{App: "llm", Since: time.Hour, Now: now})
		c := r.Workloads[0].Canary
		if c == nil || c.Step == nil || *c.Step != tt.wantStep || c.Steps == nil || *c.Steps != tt.wantSteps ||
			c.Weight == nil || *c.Weight != tt.wantWeight || c.Phase != tt.wantPhase || c.LastCheck != tt.wantCheck {
			t.Errorf("canary = %+v for %s", c, tt.state)
		}
	}
}
