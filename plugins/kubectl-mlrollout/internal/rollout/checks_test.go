package rollout

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

func f64(v float64) *float64 { return &v }

func TestPrometheusCheck(t *testing.T) {
	answers := map[string][]Sample{
		"canary":   {{Value: 2}},
		"baseline": {{Value: 1}},
		"zero":     {{Value: 0}},
		"empty":    nil,
		"nan":      {{Value: math.NaN()}},
		"two":      {{Value: 1}, {Value: 2}},
	}
	query := func(_ context.Context, q string) ([]Sample, error) {
		if q == "broken" {
			return nil, errors.New("prometheus bad_data (HTTP 400): parse error")
		}
		if q == "multiline" {
			return nil, errors.New("azure credential:\n  AADSTS7000215: invalid client secret\n  Trace ID: 1")
		}
		return answers[q], nil
	}
	tests := []struct {
		name     string
		pc       plan.PrometheusCheck
		noStable bool
		pass     bool
		msg      string
	}{
		{"below max", plan.PrometheusCheck{Query: "canary", Max: f64(3)}, false, true, "value 2 within bounds"},
		{"above max", plan.PrometheusCheck{Query: "canary", Max: f64(1.5)}, false, false, "2 > max 1.5"},
		{"below min", plan.PrometheusCheck{Query: "canary", Min: f64(5)}, false, false, "2 < min 5"},
		{"ratio ok", plan.PrometheusCheck{Query: "canary", BaselineQuery: "baseline", MaxRatio: f64(2.5)}, false, true, "canary 2 / baseline 1 = 2"},
		{"ratio too high", plan.PrometheusCheck{Query: "canary", BaselineQuery: "baseline", MaxRatio: f64(1.2)}, false, false, "canary 2 / baseline 1 = 2 > maxRatio 1.2"},
		{"baseline zero", plan.PrometheusCheck{Query: "canary", BaselineQuery: "zero", MaxRatio: f64(1.2)}, false, false, "canary 2, baseline 0"},
		{"empty", plan.PrometheusCheck{Query: "empty", Max: f64(1)}, false, false, "failed measurement: query returned no data"},
		{"nan", plan.PrometheusCheck{Query: "nan", Max: f64(1)}, false, false, "failed measurement: query returned NaN"},
		{"two series", plan.PrometheusCheck{Query: "two", Max: f64(5)}, false, false, "failed measurement: query returned 2 series; aggregate it to one (for example with sum)"},
		{"error", plan.PrometheusCheck{Query: "broken", Max: f64(1)}, false, false, "failed measurement: prometheus bad_data (HTTP 400): parse error"},
		{"empty baseline", plan.PrometheusCheck{Query: "canary", BaselineQuery: "empty", MaxRatio: f64(1)}, false, false, "failed baseline measurement: query returned no data"},
		{"multi-line error", plan.PrometheusCheck{Query: "multiline", Max: f64(1)}, false, false, "failed measurement: azure credential: AADSTS7000215: invalid client secret Trace ID: 1"},
		{"no stable track", plan.PrometheusCheck{Query: "canary", BaselineQuery: "empty", MaxRatio: f64(1)}, true, true, "value 2; baseline not compared (no stable pod runs at this step)"},
		{"no stable track, canary empty", plan.PrometheusCheck{Query: "empty", BaselineQuery: "baseline", MaxRatio: f64(1)}, true, false, "failed measurement: query returned no data"},
		{"no stable track, canary above max", plan.PrometheusCheck{Query: "canary", BaselineQuery: "baseline", Max: f64(1), MaxRatio: f64(9)}, true, false, "2 > max 1"},
	}
	k := &Checker{Query: query}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := tt.pc
			m := k.Run(context.Background(), plan.Check{Name: "c", Prometheus: &pc}, checkTarget{NoStable: tt.noStable})
			if m.Passed != tt.pass || m.Message != tt.msg {
				t.Fatalf("got %v %q, want %v %q", m.Passed, m.Message, tt.pass, tt.msg)
			}
		})
	}
}

func TestHTTPCheckLatencyAndErrors(t *testing.T) {
	slow := func(_ context.Context, _, pod string, _ int, _ *http.Request) (*HTTPResponse, error) {
		if pod == "broken" {
			return nil, errors.New("connection refused")
		}
		return &HTTPResponse{Status: 200, Body: []byte(`{}`), Latency: 800 * time.Millisecond}, nil
	}
	k := &Checker{PodHTTP: slow}
	c := plan.Check{Name: "h", HTTP: &plan.HTTPCheck{Port: 80, Path: "/", Method: "GET", ExpectStatus: 200, MaxLatency: plan.Duration(500 * time.Millisecond)}}
	m := k.Run(context.Background(), c, checkTarget{CanaryPods: []string{"p1"}})
	if m.Passed || m.Message != "pod p1 answered in 800ms > maxLatency 500ms" {
		t.Fatalf("slow: %+v", m)
	}
	m = k.Run(context.Background(), c, checkTarget{CanaryPods: []string{"broken"}})
	if m.Passed || !strings.Contains(m.Message, "failed measurement: GET / on pod broken: connection refused") {
		t.Fatalf("broken: %+v", m)
	}
	m = k.Run(context.Background(), c, checkTarget{})
	if m.Passed || m.Message != "failed measurement: no Ready canary pod" {
		t.Fatalf("no pods: %+v", m)
	}
}

// A stable pod can vanish between the listing and the request: the comparison goes to the next Ready stable pod,
// and at a step that runs no stable pod (the stable Deployment scaled to zero) there is nothing to compare with,
// even while a leaving stable pod is still listed (the CI failure that found this: a 100% step sent the request
// to a stable pod already deleted and rolled the canary back).
func TestHTTPCompareWithStablePodsGoingAway(t *testing.T) {
	var asked []string
	send := func(_ context.Context, _, pod string, _ int, _ *http.Request) (*HTTPResponse, error) {
		asked = append(asked, pod)
		switch pod {
		case "stable-gone", "stable-gone-too":
			return nil, errors.New(`pods "` + pod + `" not found`)
		case "canary":
			return &HTTPResponse{Status: 200, Body: []byte(`{"predictions":[1]}`)}, nil
		}
		return &HTTPResponse{Status: 200, Body: []byte(`{"predictions":[2]}`)}, nil
	}
	k := &Checker{PodHTTP: send}
	c := plan.Check{Name: "h", HTTP: &plan.HTTPCheck{Port: 80, Path: "/p", Method: "POST", ExpectStatus: 200,
		CompareWithStable: &plan.Compare{JSONPath: "$.predictions", Tolerance: 0}}}
	for _, tt := range []struct {
		name   string
		target checkTarget
		pass   bool
		msg    string
		asked  string
	}{
		{"next stable pod", checkTarget{CanaryPods: []string{"canary"}, StablePods: []string{"stable-gone", "stable-live"}},
			false, "predictions differ from stable pod stable-live", "canary,stable-gone,stable-live"},
		{"every stable pod gone", checkTarget{CanaryPods: []string{"canary"}, StablePods: []string{"stable-gone", "stable-gone-too"}},
			false, `failed measurement: POST /p on stable pods: pod stable-gone: pods "stable-gone" not found; pod stable-gone-too: pods "stable-gone-too" not found`, "canary,stable-gone,stable-gone-too"},
		{"no stable at this step", checkTarget{NoStable: true, CanaryPods: []string{"canary"}, StablePods: []string{"stable-gone"}},
			true, "pod canary answered 200 in 0s (no stable pod runs at this step to compare with)", "canary"},
		{"no Ready stable pod", checkTarget{CanaryPods: []string{"canary"}},
			false, "failed measurement: no Ready stable pod to compare with", "canary"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			asked = nil
			m := k.Run(context.Background(), c, tt.target)
			if m.Passed != tt.pass || !strings.HasPrefix(m.Message, tt.msg) || strings.Join(asked, ",") != tt.asked {
				t.Fatalf("got %v %q after asking %v; want %v %q after %s", m.Passed, m.Message, asked, tt.pass, tt.msg, tt.asked)
			}
		})
	}
}

// A fault every stable pod shares costs at most three requests per measurement, not one per replica.
func TestHTTPCompareAsksAtMostThreeStablePods(t *testing.T) {
	var asked []string
	k := &Checker{PodHTTP: func(_ context.Context, _, pod string, _ int, _ *http.Request) (*HTTPResponse, error) {
		asked = append(asked, pod)
		if pod == "canary" {
			return &HTTPResponse{Status: 200, Body: []byte(`{}`)}, nil
		}
		return nil, errors.New("connection refused")
	}}
	c := plan.Check{Name: "h", HTTP: &plan.HTTPCheck{Port: 80, Path: "/", Method: "GET", ExpectStatus: 200,
		CompareWithStable: &plan.Compare{JSONPath: "$"}}}
	m := k.Run(context.Background(), c, checkTarget{CanaryPods: []string{"canary"}, StablePods: []string{"s1", "s2", "s3", "s4", "s5"}})
	if m.Passed || strings.Join(asked, ",") != "canary,s1,s2,s3" || !strings.HasPrefix(m.Message, "failed measurement: GET / on stable pods: pod s1: connection refused; pod s2") {
		t.Fatalf("got %v %q after asking %v", m.Passed, m.Message, asked)
	}
}
