package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// logAnalyticsEmulator is TEST CODE: a TLS emulator of the Log Analytics query API
// (POST /v1/workspaces/{workspaceId}/query) that answers Container Insights queries with the
// documented response shape: {"tables":[{"name","columns":[{"name","type"}],"rows":[[...]]}]},
// and, when partial is set, HTTP 200 with a top-level "error" {"code":"PartialError",...} next to
// the tables, as the service does when part of a query fails.
type logAnalyticsEmulator struct {
	*httptest.Server
	workspace  string
	controller string // the app's ReplicaSet, as KubePodInventory.ControllerName
	namespace  string

	mu      sync.Mutex
	partial bool
	queries []string
	spans   []string
	auds    []string
}

func newLogAnalyticsEmulator(t *testing.T, workspace, namespace, controller string) *logAnalyticsEmulator {
	t.Helper()
	em := &logAnalyticsEmulator{workspace: workspace, namespace: namespace, controller: controller}
	em.Server = httptest.NewUnstartedServer(http.HandlerFunc(em.serve))
	// Clients that close a connection during the handshake are not worth a log line.
	em.Config.ErrorLog = log.New(io.Discard, "", 0)
	em.StartTLS()
	t.Cleanup(em.Close)
	return em
}

func (em *logAnalyticsEmulator) serve(w http.ResponseWriter, r *http.Request) {
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/workspaces/"+em.workspace+"/query" {
		reply(http.StatusNotFound, map[string]any{"error": map[string]any{"code": "PathNotFoundError", "message": "The requested path does not exist"}})
		return
	}
	aud, ok := bearerAudience(r.Header.Get("Authorization"))
	if !ok {
		reply(http.StatusUnauthorized, map[string]any{"error": map[string]any{"code": "AuthorizationRequiredError", "message": "Valid authentication was not provided"}})
		return
	}
	var body struct {
		Query    string `json:"query"`
		Timespan string `json:"timespan"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Query == "" {
		reply(http.StatusBadRequest, map[string]any{"error": map[string]any{"code": "BadArgumentError", "message": "The request had some invalid properties"}})
		return
	}
	em.mu.Lock()
	em.queries = append(em.queries, body.Query)
	em.spans = append(em.spans, body.Timespan)
	em.auds = append(em.auds, aud)
	partial := em.partial
	em.mu.Unlock()

	finished := time.Now().UTC().Add(-10 * time.Minute).Format(time.RFC3339Nano)
	var table map[string]any
	switch {
	case strings.HasPrefix(body.Query, "KubePodInventory"):
		table = map[string]any{"name": "PrimaryResult",
			"columns": cols("Namespace", "string", "ControllerName", "string", "Pod", "string", "Container", "string",
				"Restarts", "long", "LastReason", "string", "LastFinished", "datetime"),
			"rows": [][]any{
				{em.namespace, em.controller, em.controller + "-gone1", "model", 4, "OOMKilled", finished},
				{em.namespace, "someone-else-5d8f9", "someone-else-5d8f9-x1", "model", 7, "Error", finished},
			}}
	case strings.HasPrefix(body.Query, "KubeEvents"):
		table = map[string]any{"name": "PrimaryResult",
			"columns": cols("Namespace", "string", "ObjectKind", "string", "Name", "string", "Reason", "string", "Message", "string",
				"Count", "long", "Last", "datetime"),
			"rows": [][]any{{em.namespace, "Pod", em.controller + "-gone1", "Evicted", "The node was low on resource: memory.", 2, finished}}}
	default:
		reply(http.StatusBadRequest, map[string]any{"error": map[string]any{"code": "BadArgumentError", "message": "unknown table"}})
		return
	}
	resp := map[string]any{"tables": []any{table}}
	if partial {
		resp["error"] = map[string]any{
			"code":    "PartialError",
			"message": "There were some errors when processing your query.",
			"details": []any{map[string]any{
				"code": "EngineError", "message": "Something went wrong processing your query on the server.",
				"innererror": map[string]any{"code": "-2133196797", "message": "Query result set has exceeded the internal data size limit"},
			}},
		}
	}
	reply(http.StatusOK, resp)
}

func cols(nameType ...string) []map[string]string {
	var out []map[string]string
	for i := 0; i+1 < len(nameType); i += 2 {
		out = append(out, map[string]string{"name": nameType[i], "type": nameType[i+1]})
	}
	return out
}

// bearerAudience returns the aud claim of a bearer JWT (the signature is the token service's business).
func bearerAudience(h string) (string, bool) {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	parts := strings.Split(tok, ".")
	if !ok || len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Aud any `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return "", false
	}
	switch a := claims.Aud.(type) {
	case string:
		return a, true
	case []any:
		if len(a) > 0 {
			s, _ := a[0].(string)
			return s, true
		}
	}
	return "", false
}

func TestMLHealthLogAnalytics(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, deployment("hist", 1, "example.com/hist:v1", nil, ""))
	var rs string
	framework.Eventually(t, time.Minute, func() (bool, error) {
		l, err := e.Clientset(t).AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 || l.Items[0].Status.ReadyReplicas != 1 {
			return false, err
		}
		rs = l.Items[0].Name
		return true, nil
	})
	const workspace = "6f0c5a3e-0000-4000-8000-00000000e2e0"
	em := newLogAnalyticsEmulator(t, workspace, ns, rs)

	// Trust the platform's CA (for the Entra emulator) and the Log Analytics emulator's certificate.
	bundle, err := os.ReadFile(e.Vars["SSL_CERT_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: em.Certificate().Raw})...)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSL_CERT_FILE=" + caFile, "MLHEALTH_LOGANALYTICS_ENDPOINT=" + em.URL}

	for _, partial := range []bool{false, true} {
		em.mu.Lock()
		em.partial = partial
		em.mu.Unlock()
		res := mlhealth(t, e, env, "hist", "-n", ns, "--since", "30m", "--log-analytics-workspace", workspace, "-o", "json")
		r := decodeReport(t, res.Stdout)
		src := r.source("log-analytics")
		w := r.workload("hist")
		if w == nil || w.Restarts != 4 || w.OOMKills != 1 {
			t.Fatalf("partial=%v: workload %+v, sources %+v, stderr %q", partial, w, r.Sources, res.Stderr)
		}
		oom := r.finding("OOMKilled", "hist")
		if oom == nil || oom.Object != "pod/"+rs+"-gone1" || !strings.Contains(oom.Message, "(Log Analytics)") {
			t.Errorf("OOMKilled finding = %+v", oom)
		}
		if f := r.finding("WarningEvents", "hist"); f == nil || !strings.Contains(f.Message, "Evicted x2") {
			t.Errorf("WarningEvents finding = %+v", f)
		}
		if f := r.finding("HighRestarts", "hist"); f == nil || f.Severity != "warning" {
			t.Errorf("HighRestarts finding = %+v", f)
		}
		if !partial {
			if res.Code != 0 || src.Status != "ok" || src.Requests != 2 || r.Status != "Warning" {
				t.Errorf("exit %d, source %+v, status %s, stderr %q", res.Code, src, r.Status, res.Stderr)
			}
			continue
		}
		// A partial error keeps the rows but fails the requested source: exit 1, report printed.
		want := "partial result: PartialError: There were some errors when processing your query. (Query result set has exceeded the internal data size limit)"
		if res.Code != 1 || src.Status != "error" || !strings.Contains(src.Error, want) || !strings.Contains(res.Stderr, "log-analytics source failed") {
			t.Errorf("partial: exit %d, source %+v, stderr %q", res.Code, src, res.Stderr)
		}
	}
	em.mu.Lock()
	defer em.mu.Unlock()
	if len(em.queries) != 4 {
		t.Fatalf("queries = %d, want 2 per run", len(em.queries))
	}
	for i, q := range em.queries {
		if !strings.Contains(q, "| where Namespace == '"+ns+"'") || !strings.Contains(q, "ago(1800s)") {
			t.Errorf("query %d not scoped to the namespace and window:\n%s", i, q)
		}
		if start, end, ok := strings.Cut(em.spans[i], "/"); !ok || start == "" || end == "" {
			t.Errorf("timespan %q is not an ISO 8601 interval", em.spans[i])
		}
		if em.auds[i] != "https://api.loganalytics.io" {
			t.Errorf("token audience %q, want https://api.loganalytics.io", em.auds[i])
		}
	}
}
