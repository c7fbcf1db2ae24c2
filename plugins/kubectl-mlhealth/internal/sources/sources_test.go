package sources

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/aks-mlops/mlplugins/pkg/shared/prom"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

func TestKubernetesListsOncePerKindWhateverThePodCount(t *testing.T) {
	for _, pods := range []int{1, 500} {
		objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}}
		for i := range pods {
			objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: "ml"}})
		}
		c := k8sfake.NewClientset(objs...)
		c.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", fmt.Errorf("no"))
		})
		k, src, err := (&Kubernetes{Client: c}).Collect(context.Background(), "ml", true)
		if err != nil {
			t.Fatal(err)
		}
		if len(k.Pods) != pods || src.Status != health.SourceOK || k.NodesRead || !k.PDBsRead ||
			src.Detail != fmt.Sprintf("0 deployments, %d pods; skipped nodes: forbidden", pods) {
			t.Errorf("pods %d: %+v %+v", pods, src, k.NodesRead)
		}
		verbs := map[string]int{}
		for _, a := range c.Actions() {
			verbs[a.GetVerb()+" "+a.GetResource().Resource]++
		}
		want := map[string]int{"list deployments": 1, "list replicasets": 1, "list pods": 1, "list horizontalpodautoscalers": 1,
			"list poddisruptionbudgets": 1, "list persistentvolumeclaims": 1, "list events": 1, "list nodes": 1, "get namespaces": 1}
		if fmt.Sprint(verbs) != fmt.Sprint(want) {
			t.Errorf("pods %d: requests %v, want %v", pods, verbs, want)
		}
	}
}

func TestKubernetesRequiredKindFailsTheSource(t *testing.T) {
	c := k8sfake.NewClientset()
	c.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", fmt.Errorf("rbac"))
	})
	_, src, err := (&Kubernetes{Client: c}).Collect(context.Background(), "", false)
	if err != nil || src.Status != health.SourceError || !strings.HasPrefix(src.Error, "listing pods: pods is forbidden") {
		t.Errorf("err %v, source %+v", err, src)
	}
}

var metricName = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\{`)

func TestQueriesNameOneMetricEach(t *testing.T) {
	for name, p := range Profiles {
		qs := Queries(p, MetricsQuery{Namespace: "ml", Since: 90 * time.Minute, RequestMetrics: []string{"a_seconds", "b_seconds"}})
		if len(qs) != 4+2*(3+2*len(health.BurnWindows)) {
			t.Errorf("%s: %d queries", name, len(qs))
		}
		for _, q := range qs {
			names := map[string]bool{}
			for _, m := range metricName.FindAllString(q.PromQL, -1) {
				names[m] = true
			}
			if len(names) != 1 || !strings.Contains(q.PromQL, `namespace="ml"`) {
				t.Errorf("%s: %s names %v", name, q.PromQL, names)
			}
		}
	}
	q := Queries(Profiles[ProfileKubePrometheus], MetricsQuery{Since: 90 * time.Minute})
	if q[0].PromQL != `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{job="kubelet", metrics_path="/metrics/cadvisor", container!="", container!="POD"}[5m]))` ||
		q[2].PromQL != `sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{job="kube-state-metrics"}[90m]))` {
		t.Errorf("queries = %q, %q", q[0].PromQL, q[2].PromQL)
	}
}

func TestPrometheusCollect(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	times := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		times[r.Form.Get("time")] = true
		mu.Unlock()
		q := r.Form.Get("query")
		switch {
		case strings.Contains(q, "DCGM"):
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"unknown metric"}`)
		case strings.Contains(q, "_bucket"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"ml","pod":"a","le":"0.1"},"value":[1,"2"]}]},"warnings":["w1"]}`)
		default:
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"ml","pod":"a"},"value":[1,"1.5"]}]}}`)
		}
	}))
	defer srv.Close()
	c, err := prom.New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &Prometheus{Client: c, Profile: Profiles[ProfileAzure], URL: srv.URL}
	s, src := p.Collect(context.Background(), MetricsQuery{Namespace: "ml", Since: time.Hour, RequestMetrics: []string{DefaultRequestMetric}, At: at})
	if src.Status != health.SourceError || src.Requests != 13 || !strings.HasPrefix(src.Error, "1 of 13 queries failed: gpu: ") ||
		!strings.Contains(src.Detail, "warnings: w1") {
		t.Errorf("source = %+v", src)
	}
	if got := s[health.MetricBuckets]; len(got) != 1 || got[0] != (health.Sample{Namespace: "ml", Pod: "a", Le: "0.1", Value: 2}) {
		t.Errorf("buckets = %+v", got)
	}
	if got := s[health.MetricCPU]; len(got) != 1 || got[0].Value != 1.5 {
		t.Errorf("cpu = %+v", got)
	}
	if len(times) != 1 || !times[fmt.Sprint(at.Unix())] {
		t.Errorf("evaluation times = %v, want only the report's", times)
	}

	srv.Close()
	s, src = p.Collect(context.Background(), MetricsQuery{Namespace: "ml", Since: time.Hour})
	if s != nil || src.Status != health.SourceError || !strings.HasPrefix(src.Error, "4 of 4 queries failed: querying prometheus: ") || strings.Contains(src.Error, "; ") {
		t.Errorf("unreachable: %v %+v", s, src)
	}
}

func TestNewPrometheusKeepsNoPasswordForTheReport(t *testing.T) {
	p, err := NewPrometheus("http://user:s3cret@127.0.0.1:9090", "none", ProfileAzure, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.URL, "s3cret") || !strings.Contains(p.URL, "user:") {
		t.Errorf("URL = %q, want the password redacted", p.URL)
	}
}

func TestLogAnalyticsCollect(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]string
	status := http.StatusOK
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		bodies = append(bodies, body)
		st := status
		mu.Unlock()
		if r.URL.Path != "/v1/workspaces/ws-1/query" || r.Header.Get("Authorization") != "Bearer fake_token" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if st != http.StatusOK {
			w.WriteHeader(st)
			fmt.Fprint(w, `{"error":{"code":"InsufficientAccessError","message":"The provided credentials have insufficient access"}}`)
			return
		}
		if strings.HasPrefix(body["query"], "KubePodInventory") {
			fmt.Fprint(w, `{"tables":[{"name":"PrimaryResult","columns":[{"name":"Namespace","type":"string"},{"name":"ControllerName","type":"string"},
{"name":"Pod","type":"string"},{"name":"Container","type":"string"},{"name":"Restarts","type":"long"},{"name":"LastReason","type":"string"},
{"name":"LastFinished","type":"datetime"}],"rows":[["ml","web-5c6d","web-5c6d-x","model",3,"OOMKilled","2026-11-26T11:40:00.5Z"]]}],
"error":{"code":"PartialError","message":"There were some errors when processing your query.","details":[{"code":"EngineError","message":"x","innererror":{"code":"1","message":"too much data"}}]}}`)
			return
		}
		fmt.Fprint(w, `{"tables":[{"name":"PrimaryResult","columns":[{"name":"Namespace","type":"string"},{"name":"ObjectKind","type":"string"},
{"name":"Name","type":"string"},{"name":"Reason","type":"string"},{"name":"Message","type":"string"},{"name":"Count","type":"long"},
{"name":"Last","type":"datetime"}],"rows":[["ml","Pod","web-5c6d-x","Evicted","low memory",2,"2026-11-26T11:41:00Z"]]}]}`)
	}))
	defer srv.Close()
	l, err := NewLogAnalyticsWithCredential("ws-1", srv.URL+"/v1/", &azfake.TokenCredential{}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return now }
	h, src := l.Collect(context.Background(), "ml", 30*time.Minute)
	wantR := health.HistoryRestart{Namespace: "ml", Controller: "web-5c6d", Pod: "web-5c6d-x", Container: "model", Restarts: 3, LastReason: "OOMKilled",
		LastFinished: time.Date(2026, 11, 26, 11, 40, 0, 5e8, time.UTC)}
	if len(h.Restarts) != 1 || h.Restarts[0] != wantR || len(h.Events) != 1 || h.Events[0].Count != 2 || h.Events[0].Reason != "Evicted" {
		t.Errorf("history = %+v", h)
	}
	if src.Status != health.SourceError || src.Error != "KubePodInventory query: partial result: PartialError: There were some errors when processing your query. (too much data)" {
		t.Errorf("source = %+v", src)
	}
	for _, b := range bodies {
		if b["timespan"] != "2026-11-26T11:30:00Z/2026-11-26T12:00:00Z" || !strings.Contains(b["query"], "ago(1800s)\n| where Namespace == 'ml'") {
			t.Errorf("request body = %v", b)
		}
	}

	mu.Lock()
	status = http.StatusForbidden
	mu.Unlock()
	_, src = l.Collect(context.Background(), "", time.Hour)
	if src.Status != health.SourceError || !strings.Contains(src.Error, "InsufficientAccessError") || strings.Contains(src.Error, "\n") {
		t.Errorf("forbidden: %+v", src)
	}
	if _, err := NewLogAnalyticsWithCredential("ws", "http://insecure", &azfake.TokenCredential{}, nil); err == nil {
		t.Error("http endpoint accepted")
	}
}

func TestCounterCountsRequestsThroughRESTConfig(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}`)
	}))
	defer srv.Close()
	c := &Counter{}
	cfg := c.WrapConfig(&rest.Config{Host: srv.URL})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := cs.CoreV1().Pods("ml").List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if c.Count() != 3 {
		t.Errorf("count = %d, want 3", c.Count())
	}
}
