package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

// Sample is one value of a Prometheus instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// QueryFunc runs a PromQL instant query.
type QueryFunc func(ctx context.Context, query string) ([]Sample, error)

// HTTPResponse is the part of a pod's answer that checks look at.
type HTTPResponse struct {
	Status  int
	Body    []byte
	Latency time.Duration
}

// PodHTTPFunc sends req to port of pod (through a port-forward in the real tool).
type PodHTTPFunc func(ctx context.Context, namespace, pod string, port int, req *http.Request) (*HTTPResponse, error)

// checkTimeout bounds one measurement.
const checkTimeout = 15 * time.Second

// Checker runs the plan's checks.
type Checker struct {
	Query   QueryFunc
	PodHTTP PodHTTPFunc
}

// checkTarget is what a measurement looks at.
type checkTarget struct {
	Vars       plan.Vars
	Namespace  string
	NoStable   bool     // the step runs no stable pod (100% with constant capacity)
	CanaryPods []string // Ready canary pods
	StablePods []string // Ready stable pods
}

// Run performs one measurement of c and returns whether it passed and a message saying why.
func (k *Checker) Run(ctx context.Context, c plan.Check, t checkTarget) Measurement {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var ok bool
	var msg string
	if c.Prometheus != nil {
		ok, msg = k.prometheus(ctx, c.Prometheus, t)
	} else {
		ok, msg = k.http(ctx, c.HTTP, t)
	}
	return Measurement{Passed: ok, Message: msg}
}

func (k *Checker) queryOne(ctx context.Context, q string, vars plan.Vars) (float64, string, error) {
	rendered, err := plan.Render(q, vars)
	if err != nil {
		return 0, "", err
	}
	if k.Query == nil {
		return 0, rendered, fmt.Errorf("no Prometheus URL given (--prometheus-url)")
	}
	samples, err := k.Query(ctx, rendered)
	if err != nil {
		return 0, rendered, err
	}
	switch {
	case len(samples) == 0:
		return 0, rendered, fmt.Errorf("query returned no data")
	case len(samples) > 1:
		return 0, rendered, fmt.Errorf("query returned %d series; aggregate it to one (for example with sum)", len(samples))
	case math.IsNaN(samples[0].Value):
		return 0, rendered, fmt.Errorf("query returned NaN")
	case math.IsInf(samples[0].Value, 0):
		return 0, rendered, fmt.Errorf("query returned %v", samples[0].Value)
	}
	return samples[0].Value, rendered, nil
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

func (k *Checker) prometheus(ctx context.Context, pc *plan.PrometheusCheck, t checkTarget) (bool, string) {
	v, _, err := k.queryOne(ctx, pc.Query, t.Vars)
	if err != nil {
		return false, "failed measurement: " + oneLine(err.Error())
	}
	if pc.Max != nil && v > *pc.Max {
		return false, fmt.Sprintf("%s > max %s", fmtFloat(v), fmtFloat(*pc.Max))
	}
	if pc.Min != nil && v < *pc.Min {
		return false, fmt.Sprintf("%s < min %s", fmtFloat(v), fmtFloat(*pc.Min))
	}
	if pc.BaselineQuery == "" {
		return true, fmt.Sprintf("value %s within bounds", fmtFloat(v))
	}
	if t.NoStable {
		// As for HTTP comparisons: at a step that runs no stable pod (100% with constant capacity) there is no
		// baseline to measure. The canary's own measurement above still had to succeed.
		return true, fmt.Sprintf("value %s; baseline not compared (no stable pod runs at this step)", fmtFloat(v))
	}
	base, _, err := k.queryOne(ctx, pc.BaselineQuery, t.Vars)
	if err != nil {
		return false, "failed baseline measurement: " + oneLine(err.Error())
	}
	if base == 0 {
		if v == 0 {
			return true, "canary 0, baseline 0"
		}
		return false, fmt.Sprintf("canary %s, baseline 0", fmtFloat(v))
	}
	ratio := v / base
	if ratio > *pc.MaxRatio {
		return false, fmt.Sprintf("canary %s / baseline %s = %s > maxRatio %s", fmtFloat(v), fmtFloat(base), fmtFloat(ratio), fmtFloat(*pc.MaxRatio))
	}
	return true, fmt.Sprintf("canary %s / baseline %s = %s", fmtFloat(v), fmtFloat(base), fmtFloat(ratio))
}

func (k *Checker) send(ctx context.Context, hc *plan.HTTPCheck, ns, pod string) (*HTTPResponse, error) {
	var body io.Reader
	if hc.Body != "" {
		body = strings.NewReader(hc.Body)
	}
	req, err := http.NewRequestWithContext(ctx, hc.Method, "http://localhost"+hc.Path, body)
	if err != nil {
		return nil, err
	}
	if hc.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hc.Headers {
		req.Header.Set(k, v)
	}
	return k.PodHTTP(ctx, ns, pod, hc.Port, req)
}

// maxStableTries is how many Ready stable pods an HTTP comparison asks before it is a failed measurement.
const maxStableTries = 3

func (k *Checker) http(ctx context.Context, hc *plan.HTTPCheck, t checkTarget) (bool, string) {
	if len(t.CanaryPods) == 0 {
		return false, "failed measurement: no Ready canary pod"
	}
	pod := t.CanaryPods[0]
	resp, err := k.send(ctx, hc, t.Namespace, pod)
	if err != nil {
		return false, fmt.Sprintf("failed measurement: %s %s on pod %s: %v", hc.Method, hc.Path, pod, err)
	}
	if resp.Status != hc.ExpectStatus {
		return false, fmt.Sprintf("pod %s answered %d, want %d", pod, resp.Status, hc.ExpectStatus)
	}
	if hc.MaxLatency > 0 && resp.Latency > time.Duration(hc.MaxLatency) {
		return false, fmt.Sprintf("pod %s answered in %s > maxLatency %s", pod, resp.Latency.Round(time.Millisecond), time.Duration(hc.MaxLatency))
	}
	msg := fmt.Sprintf("pod %s answered %d in %s", pod, resp.Status, resp.Latency.Round(time.Millisecond))
	if hc.CompareWithStable == nil {
		return true, msg
	}
	if t.NoStable {
		// The stable Deployment is scaled to zero at this step: a stable pod still listed is going away and may be
		// gone before the request reaches it, so there is nothing steady to compare with (as for Prometheus
		// baselines). The canary's own answer above still had to pass.
		return true, msg + " (no stable pod runs at this step to compare with)"
	}
	if len(t.StablePods) == 0 {
		return false, "failed measurement: no Ready stable pod to compare with"
	}
	// A stable pod can go away between the listing and the request (a step scales the stable Deployment down):
	// the first Ready stable pod that answers is the one compared with. At most maxStableTries are asked, so a
	// fault that every stable pod shares costs a few requests per measurement, not one per replica.
	var spod string
	var sresp *HTTPResponse
	var errs []string
	for _, p := range t.StablePods[:min(len(t.StablePods), maxStableTries)] {
		r, err := k.send(ctx, hc, t.Namespace, p)
		if err == nil {
			spod, sresp = p, r
			break
		}
		errs = append(errs, fmt.Sprintf("pod %s: %v", p, err))
	}
	if sresp == nil {
		return false, fmt.Sprintf("failed measurement: %s %s on stable pods: %s", hc.Method, hc.Path, strings.Join(errs, "; "))
	}
	path, _ := plan.ParseJSONPath(hc.CompareWithStable.JSONPath) // validated when the plan was parsed
	cv, err := extract(resp.Body, path)
	if err != nil {
		return false, fmt.Sprintf("canary pod %s: %s: %v", pod, hc.CompareWithStable.JSONPath, err)
	}
	sv, err := extract(sresp.Body, path)
	if err != nil {
		return false, fmt.Sprintf("stable pod %s: %s: %v", spod, hc.CompareWithStable.JSONPath, err)
	}
	if d := plan.CompareValues(cv, sv, hc.CompareWithStable.Tolerance); d != "" {
		return false, fmt.Sprintf("predictions differ from stable pod %s: %s", spod, strings.Replace(d, "$", hc.CompareWithStable.JSONPath, 1))
	}
	return true, msg + ", agrees with stable pod " + spod
}

func extract(body []byte, path []plan.PathElem) (any, error) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("response is not JSON: %w", err)
	}
	return plan.Lookup(v, path)
}
