package health

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// podsOf returns a predicate for samples that belong to Deployment d: live pods, and pods that are
// gone but were named after one of its ReplicaSets.
func (b *builder) podsOf(d *appsv1.Deployment, st *depStats) func(Sample) bool {
	return func(s Sample) bool {
		if s.Namespace != d.Namespace {
			return false
		}
		if st.pods[s.Pod] {
			return true
		}
		if _, live := b.podOwner[key(s.Namespace, s.Pod)]; live {
			return false
		}
		return st.rsNames[podRS(s.Pod)]
	}
}

func sum(samples []Sample, keep func(Sample) bool) (float64, bool) {
	total, found := 0.0, false
	for _, s := range samples {
		if keep(s) {
			total += s.Value
			found = true
		}
	}
	return total, found
}

func avg(samples []Sample, keep func(Sample) bool) (float64, bool) {
	total, n := 0.0, 0
	for _, s := range samples {
		if keep(s) {
			total += s.Value
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return total / float64(n), true
}

func ptr(v float64) *float64 { return &v }

// metricRules fills st.metrics and adds the metric findings.
func (b *builder) metricRules(d *appsv1.Deployment, st *depStats, fb *findingsBuilder) {
	if b.in.Samples == nil {
		return
	}
	keep := b.podsOf(d, st)
	s := b.in.Samples
	m := &Metrics{}
	if v, ok := sum(s[MetricCPU], keep); ok {
		m.CPUCores = ptr(v)
	}
	if v, ok := sum(s[MetricMemory], keep); ok {
		m.MemoryBytes = ptr(v)
	}
	if v, ok := avg(s[MetricGPU], keep); ok {
		m.GPUUtilization = ptr(v)
	}
	if v, ok := sum(s[MetricRestarts], keep); ok && int(math.Round(v)) > st.restarts {
		st.restarts = int(math.Round(v))
	}
	reqs, hasReqs := sum(s[MetricRequests], keep)
	if hasReqs {
		m.RequestRate = ptr(reqs)
		errs, _ := sum(s[MetricErrors], keep)
		if reqs > 0 {
			m.ErrorRatio = ptr(errs / reqs)
		}
	}
	if q, ok := Quantile(0.95, bucketsOf(s[MetricBuckets], keep)); ok {
		m.LatencyP95Seconds = ptr(q)
	}
	st.metrics = m
	obj := "deployment/" + d.Name
	if m.ErrorRatio != nil && *m.ErrorRatio >= ErrorRatioWarning {
		sev := SeverityWarning
		if *m.ErrorRatio >= ErrorRatioCritical {
			sev = SeverityCritical
		}
		fb.add(sev, "HighErrorRate", obj,
			fmt.Sprintf("%.1f%% of %.3g req/s failed (5xx) over 5m", *m.ErrorRatio*100, *m.RequestRate),
			"compare with the model version and recent rollouts; kubectl logs -n "+d.Namespace+" deploy/"+d.Name)
	}
	limit := DefaultLatencyP95
	if v, err := time.ParseDuration(d.Annotations[AnnotationLatencyP95]); err == nil && v > 0 {
		limit = v
	}
	if m.LatencyP95Seconds != nil && *m.LatencyP95Seconds > limit.Seconds() {
		fb.add(SeverityWarning, "HighLatency", obj,
			fmt.Sprintf("p95 latency %s over 5m is above %s", formatSeconds(*m.LatencyP95Seconds), limit),
			"check CPU throttling and GPU saturation, batch size and replicas (HPA); set the threshold with annotation "+AnnotationLatencyP95)
	}
	b.burnRate(d, keep, fb)
	if st.resources.GPUs > 0 && m.GPUUtilization != nil && *m.GPUUtilization < GPUIdlePercent {
		fb.add(SeverityWarning, "GPUIdle", obj,
			fmt.Sprintf("%d GPUs allocated, mean utilisation %.1f%%", st.resources.GPUs, *m.GPUUtilization),
			"fewer replicas or a smaller GPU SKU (or MIG/time-slicing) would serve the same load")
	}
}

// SLO returns the availability objective of d in percent.
func SLO(d *appsv1.Deployment) float64 {
	if v, err := strconv.ParseFloat(d.Annotations[AnnotationSLO], 64); err == nil && v > 0 && v < 100 {
		return v
	}
	return DefaultSLO
}

// burnRate applies the multi-window, multi-burn-rate rule of the SRE workbook: critical when the
// 1h and 5m burn rates both exceed 14.4, warning when the 6h and 30m ones both exceed 6.
func (b *builder) burnRate(d *appsv1.Deployment, keep func(Sample) bool, fb *findingsBuilder) {
	slo := SLO(d)
	budget := 1 - slo/100
	rate := func(reqM, errM Metric) (float64, bool) {
		reqs, ok := sum(b.in.Samples[reqM], keep)
		if !ok || reqs <= 0 {
			return 0, false
		}
		errs, _ := sum(b.in.Samples[errM], keep)
		return errs / reqs / budget, true
	}
	r5, ok5 := rate(MetricRequests, MetricErrors)
	r30, ok30 := rate(RequestsOver("30m"), ErrorsOver("30m"))
	r1h, ok1h := rate(RequestsOver("1h"), ErrorsOver("1h"))
	r6h, ok6h := rate(RequestsOver("6h"), ErrorsOver("6h"))
	obj := "deployment/" + d.Name
	hint := fmt.Sprintf("the error budget of a %g%% SLO is burning fast; roll back the last change or shed load (annotation %s states the SLO)", slo, AnnotationSLO)
	switch {
	case ok5 && ok1h && r1h > BurnRateFast && r5 > BurnRateFast:
		fb.add(SeverityCritical, "SLOBurnRate", obj,
			fmt.Sprintf("burn rate %.1fx over 1h and %.1fx over 5m against a %g%% SLO (page threshold %.1fx)", r1h, r5, slo, BurnRateFast), hint)
	case ok30 && ok6h && r6h > BurnRateSlow && r30 > BurnRateSlow:
		fb.add(SeverityWarning, "SLOBurnRate", obj,
			fmt.Sprintf("burn rate %.1fx over 6h and %.1fx over 30m against a %g%% SLO (ticket threshold %.1fx)", r6h, r30, slo, BurnRateSlow), hint)
	}
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	Le    float64
	Count float64
}

func bucketsOf(samples []Sample, keep func(Sample) bool) []Bucket {
	byLe := map[float64]float64{}
	for _, s := range samples {
		if !keep(s) {
			continue
		}
		le, err := strconv.ParseFloat(s.Le, 64)
		if err != nil {
			continue
		}
		byLe[le] += s.Value
	}
	out := make([]Bucket, 0, len(byLe))
	for le, c := range byLe {
		out = append(out, Bucket{Le: le, Count: c})
	}
	return out
}

// Quantile computes q from cumulative buckets the way PromQL's histogram_quantile does, so a
// quantile over a workload's pods equals `histogram_quantile(q, sum by (le) (...))`.
func Quantile(q float64, buckets []Bucket) (float64, bool) {
	if len(buckets) < 2 {
		return 0, false
	}
	bs := append([]Bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].Le < bs[j].Le })
	if !math.IsInf(bs[len(bs)-1].Le, 1) {
		return 0, false
	}
	// Ensure monotonicity, as Prometheus does.
	for i := 1; i < len(bs); i++ {
		if bs[i].Count < bs[i-1].Count {
			bs[i].Count = bs[i-1].Count
		}
	}
	observations := bs[len(bs)-1].Count
	if observations == 0 || math.IsNaN(observations) {
		return 0, false
	}
	rank := q * observations
	i := sort.Search(len(bs)-1, func(i int) bool { return bs[i].Count >= rank })
	if i == len(bs)-1 {
		return bs[len(bs)-2].Le, true
	}
	if i == 0 && bs[0].Le <= 0 {
		return bs[0].Le, true
	}
	start, end, count := 0.0, bs[i].Le, bs[i].Count
	if i > 0 {
		start = bs[i-1].Le
		count -= bs[i-1].Count
		rank -= bs[i-1].Count
	}
	if count == 0 {
		return end, true
	}
	return start + (end-start)*(rank/count), true
}

func formatSeconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0fms", s*1000)
	}
	return fmt.Sprintf("%.2fs", s)
}

// compareCanary reports a canary doing worse than its stable track.
func compareCanary(stable, canary *appsv1.Deployment, sm, cm *Metrics) *Finding {
	if sm == nil || cm == nil || cm.RequestRate == nil || *cm.RequestRate <= 0 {
		return nil
	}
	base := Finding{Reason: "CanaryWorseThanStable", Object: "deployment/" + canary.Name, Namespace: canary.Namespace, Workload: stable.Name, workloadNS: stable.Namespace,
		Hint: fmt.Sprintf("abort the rollout: kubectl mlrollout abort -n %s %s", stable.Namespace, stable.Name)}
	if cm.ErrorRatio != nil {
		se := 0.0
		if sm.ErrorRatio != nil {
			se = *sm.ErrorRatio
		}
		if ce := *cm.ErrorRatio; ce > se+CanaryErrorMargin && ce >= 2*se {
			base.Severity = SeverityCritical
			base.Message = fmt.Sprintf("canary error ratio %.1f%% vs stable %.1f%%", ce*100, se*100)
			return &base
		}
	}
	if cm.LatencyP95Seconds != nil && sm.LatencyP95Seconds != nil {
		c, s := *cm.LatencyP95Seconds, *sm.LatencyP95Seconds
		if c > s*CanaryLatencyFactor && c-s > 0.01 {
			base.Severity = SeverityWarning
			base.Message = fmt.Sprintf("canary p95 latency %s vs stable %s", formatSeconds(c), formatSeconds(s))
			return &base
		}
	}
	return nil
}

// canaryInfo reads the rollout state annotation loosely: it is written by `kubectl mlrollout`
// (phase, plan.steps[].weight, a 0-based step, checks[].last), and only the step, weight, phase
// and latest check are shown. Flat fields (weight, steps, lastCheck) are read too.
func canaryInfo(stable, canary *appsv1.Deployment) Canary {
	c := Canary{Name: canary.Name}
	raw := stable.Annotations[AnnotationRolloutState]
	if raw == "" {
		return c
	}
	var state map[string]any
	if json.Unmarshal([]byte(raw), &state) != nil {
		c.Phase = "unreadable state annotation"
		return c
	}
	var planSteps []any
	if plan, ok := state["plan"].(map[string]any); ok {
		planSteps, _ = plan["steps"].([]any)
	} else if steps, ok := state["steps"].([]any); ok {
		planSteps = steps
	}
	if v, ok := number(state, "step", "currentStep", "stepIndex"); ok {
		step := int(v)
		if _, zeroBased := state["plan"]; zeroBased && len(planSteps) > 0 {
			// mlrollout counts steps from 0 and shows step+1 of len(plan.steps).
			step = min(step+1, len(planSteps))
		}
		c.Step = intPtr(step)
	}
	if v, ok := number(state, "totalSteps", "steps"); ok {
		c.Steps = intPtr(int(v))
	} else if len(planSteps) > 0 {
		c.Steps = intPtr(len(planSteps))
	}
	if v, ok := number(state, "weight", "canaryWeight", "currentWeight"); ok {
		c.Weight = &v
	} else if c.Step != nil && len(planSteps) > 0 {
		// The weight of the current step, or of the last step before it that sets one (pauses do not).
		for i := min(*c.Step, len(planSteps)) - 1; i >= 0; i-- {
			if st, ok := planSteps[i].(map[string]any); ok {
				if w, ok := number(st, "weight"); ok {
					c.Weight = &w
					break
				}
			}
		}
	}
	c.Phase = text(state, "phase", "status", "state")
	switch lc := firstOf(state, "lastCheck", "check", "lastCheckResult").(type) {
	case string:
		c.LastCheck = lc
	case map[string]any:
		c.LastCheck = describeCheck(lc)
	}
	if checks, ok := state["checks"].([]any); ok && c.LastCheck == "" {
		latest := ""
		for _, x := range checks {
			ch, ok := x.(map[string]any)
			if !ok {
				continue
			}
			last, ok := ch["last"].(map[string]any)
			if !ok {
				continue
			}
			at := text(last, "time", "at")
			if at >= latest {
				latest = at
				last["name"] = ch["name"]
				c.LastCheck = describeCheck(last)
			}
		}
	}
	return c
}

// describeCheck renders a check result such as {"name","passed","message","time"} in one line.
func describeCheck(m map[string]any) string {
	parts := []string{text(m, "name")}
	switch v := firstOf(m, "passed", "result", "status").(type) {
	case bool:
		parts = append(parts, map[bool]string{true: "passed", false: "failed"}[v])
	case string:
		parts = append(parts, v)
	}
	if msg := text(m, "message"); msg != "" {
		parts = append(parts, "("+msg+")")
	}
	if at := text(m, "time", "at"); at != "" {
		parts = append(parts, "at "+at)
	}
	return joinNonEmpty(parts)
}

func firstOf(m map[string]any, keys ...string) any {
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil {
			return v
		}
	}
	return nil
}

func number(m map[string]any, keys ...string) (float64, bool) {
	switch v := firstOf(m, keys...).(type) {
	case float64:
		return v, true
	case string:
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil
	}
	return 0, false
}

func text(m map[string]any, keys ...string) string {
	if v, ok := firstOf(m, keys...).(string); ok {
		return v
	}
	return ""
}

func intPtr(i int) *int { return &i }

func joinNonEmpty(parts []string) string {
	out := ""
	for _, p := range parts {
		if p == "" {
			continue
		}
		if out != "" {
			out += " "
		}
		out += p
	}
	return out
}
