package sources

import (
	"context"
	"fmt"
	neturl "net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aks-mlops/mlplugins/pkg/shared/prom"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

// Metrics profiles: which job labels the infrastructure series carry.
const (
	// ProfileAzure is AKS's managed Prometheus (Azure Monitor workspace): jobs cadvisor and kube-state-metrics.
	ProfileAzure = "azure"
	// ProfileKubePrometheus is kube-prometheus(-stack): cAdvisor under the kubelet job.
	ProfileKubePrometheus = "kube-prometheus"
	// DefaultRequestMetric is the request-duration histogram read when a Deployment names none.
	DefaultRequestMetric = "http_request_duration_seconds"
)

// Profile holds the label matchers of a metrics profile.
type Profile struct {
	Cadvisor         string
	KubeStateMetrics string
}

// Profiles by name.
var Profiles = map[string]Profile{
	ProfileAzure:          {Cadvisor: `job="cadvisor"`, KubeStateMetrics: `job="kube-state-metrics"`},
	ProfileKubePrometheus: {Cadvisor: `job="kubelet", metrics_path="/metrics/cadvisor"`, KubeStateMetrics: `job="kube-state-metrics"`},
}

// Querier runs instant queries; *prom.Client is one.
type Querier interface {
	Query(ctx context.Context, q string, at time.Time) (prom.Vector, prom.Warnings, error)
}

// Prometheus reads per-pod samples with one query per metric name (Azure Monitor workspaces
// reject queries with more than one), each aggregated by (namespace, pod).
type Prometheus struct {
	Client  Querier
	Profile Profile
	URL     string
}

// NewPrometheus returns the source for url with auth ("none", "azure" or "" for automatic), profile and,
// for Azure, the credential of that kind ("" for the default chain).
func NewPrometheus(url, auth, profile, credentialKind string) (*Prometheus, error) {
	p, ok := Profiles[profile]
	if !ok {
		return nil, fmt.Errorf("unknown metrics profile %q", profile)
	}
	var cred azcore.TokenCredential
	if credentialKind != "" {
		c, err := azure.NewCredential(credentialKind)
		if err != nil {
			return nil, fmt.Errorf("prometheus credential: %w", err)
		}
		cred = c
	}
	c, err := prom.NewForURL(url, auth, cred)
	if err != nil {
		return nil, err
	}
	return &Prometheus{Client: c, Profile: p, URL: redactURL(url)}, nil
}

// redactURL hides the password of a URL with user info: the URL is shown in the report.
func redactURL(s string) string {
	if u, err := neturl.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// MetricsQuery scopes the queries.
type MetricsQuery struct {
	// Namespace is empty for all namespaces.
	Namespace string
	Since     time.Duration
	// RequestMetrics are the request-duration histogram names (without _count/_bucket).
	RequestMetrics []string
	// At is the evaluation time of every query (the report's generatedAt), so that one report's
	// numbers come from one instant and can be reproduced; zero means the server's time.
	At time.Time
}

// Query is one PromQL query and the kind of samples it yields.
type Query struct {
	Metric health.Metric
	PromQL string
}

// promDuration renders a window the way PromQL accepts it (1h, 30m, 90s).
func promDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", int64(d.Seconds()))
}

// selector joins matchers into {...}.
func selector(matchers ...string) string {
	var ms []string
	for _, m := range matchers {
		if m != "" {
			ms = append(ms, m)
		}
	}
	return "{" + strings.Join(ms, ", ") + "}"
}

// Queries returns every query for q under profile p; the e2e test runs the same PromQL directly.
func Queries(p Profile, q MetricsQuery) []Query {
	ns := ""
	if q.Namespace != "" {
		ns = fmt.Sprintf("namespace=%q", q.Namespace)
	}
	containers := `container!="", container!="POD"`
	qs := []Query{
		{health.MetricCPU, fmt.Sprintf("sum by (namespace, pod) (rate(container_cpu_usage_seconds_total%s[5m]))", selector(p.Cadvisor, containers, ns))},
		{health.MetricMemory, fmt.Sprintf("sum by (namespace, pod) (container_memory_working_set_bytes%s)", selector(p.Cadvisor, containers, ns))},
		{health.MetricRestarts, fmt.Sprintf("sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total%s[%s]))", selector(p.KubeStateMetrics, ns), promDuration(q.Since))},
		{health.MetricGPU, fmt.Sprintf("avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL%s)", selector(ns))},
	}
	for _, m := range q.RequestMetrics {
		qs = append(qs,
			Query{health.MetricRequests, fmt.Sprintf("sum by (namespace, pod) (rate(%s_count%s[5m]))", m, selector(ns))},
			Query{health.MetricErrors, fmt.Sprintf("sum by (namespace, pod) (rate(%s_count%s[5m]))", m, selector(`code=~"5.."`, ns))},
			Query{health.MetricBuckets, fmt.Sprintf("sum by (namespace, pod, le) (rate(%s_bucket%s[5m]))", m, selector(ns))},
		)
		for _, w := range health.BurnWindows {
			qs = append(qs,
				Query{health.RequestsOver(w), fmt.Sprintf("sum by (namespace, pod) (rate(%s_count%s[%s]))", m, selector(ns), w)},
				Query{health.ErrorsOver(w), fmt.Sprintf("sum by (namespace, pod) (rate(%s_count%s[%s]))", m, selector(`code=~"5.."`, ns), w)},
			)
		}
	}
	return qs
}

// Collect runs all queries in parallel. Samples of the queries that succeeded are returned even
// when others fail; the source is then in error with the first failures named.
func (p *Prometheus) Collect(ctx context.Context, q MetricsQuery) (health.Samples, health.Source) {
	qs := Queries(p.Profile, q)
	samples := health.Samples{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs, warns []string
	series := 0
	for _, query := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vec, w, err := p.Client.Query(ctx, query.PromQL, q.At)
			mu.Lock()
			defer mu.Unlock()
			for _, x := range w {
				warns = append(warns, oneLine(x))
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %s", query.Metric, azure.Condense(err.Error())))
				return
			}
			for _, s := range vec {
				samples[query.Metric] = append(samples[query.Metric], health.Sample{
					Namespace: s.Metric["namespace"], Pod: s.Metric["pod"], Le: s.Metric["le"], Value: s.Value})
			}
			series += len(vec)
		}()
	}
	wg.Wait()
	src := health.Source{Name: "prometheus", Status: health.SourceOK, Requests: len(qs),
		Detail: fmt.Sprintf("%s: %d queries, %d series", p.URL, len(qs), series)}
	if len(warns) > 0 {
		sort.Strings(warns)
		src.Detail += "; warnings: " + strings.Join(dedupe(warns), "; ")
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		src.Status = health.SourceError
		src.Error = summarizeErrors(errs, len(qs))
		if len(samples) == 0 {
			return nil, src
		}
	}
	return samples, src
}

// summarizeErrors keeps an error list short: when every query failed the same way, say it once.
func summarizeErrors(errs []string, total int) string {
	reasons := map[string]bool{}
	for _, e := range errs {
		_, reason, _ := strings.Cut(e, ": ")
		reasons[reason] = true
	}
	if len(reasons) == 1 && len(errs) > 1 {
		for r := range reasons {
			return fmt.Sprintf("%d of %d queries failed: %s", len(errs), total, r)
		}
	}
	n := len(errs)
	if n > 3 {
		errs = append(errs[:3:3], fmt.Sprintf("%d more", n-3))
	}
	return fmt.Sprintf("%d of %d queries failed: %s", n, total, strings.Join(errs, "; "))
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
