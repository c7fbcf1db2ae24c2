package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aks-mlops/mlplugins/examples/model-server/internal/model"
	"github.com/aks-mlops/mlplugins/examples/model-server/models"
)

const smoke = `{"instances": [[5.1, 3.5, 1.4, 0.2]]}`

func modelPath(version string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "models", version+".json")
}

// newTestServer serves version of the shipped models on an httptest server stopped at cleanup.
func newTestServer(t *testing.T, version string) (*Server, *httptest.Server) {
	t.Helper()
	s := NewServer("mlapp", "/metrics")
	if version != "" {
		b, err := models.Read(version)
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		s.SetModel(m)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func predictions(t *testing.T, ts *httptest.Server) [][]float64 {
	t.Helper()
	code, body := do(t, http.MethodPost, ts.URL+"/v1/models/mlapp:predict", smoke)
	if code != http.StatusOK {
		t.Fatalf("predict: %d %s", code, body)
	}
	var r PredictResponse
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	return r.Predictions
}

// TestPredictionsAgreeAsTheRolloutCheckCompares compares $.predictions of the smoke request numerically,
// as the plan's compareWithStable check does with tolerance 0.01.
func TestPredictionsAgreeAsTheRolloutCheckCompares(t *testing.T) {
	_, s1 := newTestServer(t, "v1")
	_, s2 := newTestServer(t, "v2")
	_, s3 := newTestServer(t, "v3")
	p1, p2, p3 := predictions(t, s1), predictions(t, s2), predictions(t, s3)
	if len(p1) != 1 || len(p1[0]) != 3 {
		t.Fatalf("v1 predictions %v, want one row of 3 probabilities", p1)
	}
	if p1[0][0] < 0.95 {
		t.Errorf("v1 gives setosa %.4f on a setosa", p1[0][0])
	}
	if d := maxAbsDiff(p1[0], p2[0]); d > 0.01 {
		t.Errorf("v1 %v and v2 %v differ by %v > 0.01", p1, p2, d)
	}
	if d := maxAbsDiff(p1[0], p3[0]); d <= 0.01 {
		t.Errorf("v3 %v agrees with v1 %v (diff %v)", p3, p1, d)
	}
}

func maxAbsDiff(a, b []float64) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

func TestV3FailsHalfOfThePredictRequests(t *testing.T) {
	_, ts := newTestServer(t, "v3")
	counts := map[int]int{}
	for range 100 {
		code, _ := do(t, http.MethodPost, ts.URL+"/v1/models/mlapp:predict", smoke)
		counts[code]++
	}
	if counts[200] != 50 || counts[500] != 50 {
		t.Errorf("status codes %v, want 50 x 200 and 50 x 500", counts)
	}
	// Probes never fail: only inference does.
	for _, p := range []string{"/healthz", "/readyz", "/v1/models/mlapp"} {
		if code, body := do(t, http.MethodGet, ts.URL+p, ""); code != 200 {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
}

func TestFaultIsExact(t *testing.T) {
	for _, rate := range []float64{0, 0.1, 0.25, 0.5, 1} {
		var n int
		for i := uint64(1); i <= 1000; i++ {
			if fault(i, rate) {
				n++
			}
		}
		if n != int(rate*1000) {
			t.Errorf("rate %v: %d of 1000 failed", rate, n)
		}
	}
}

func TestReadinessFollowsTheModelAndTheDrain(t *testing.T) {
	s, ts := newTestServer(t, "")
	if code, body := do(t, http.MethodGet, ts.URL+"/readyz", ""); code != 503 || body != "model not loaded\n" {
		t.Errorf("before load: %d %q", code, body)
	}
	if code, _ := do(t, http.MethodGet, ts.URL+"/healthz", ""); code != 200 {
		t.Errorf("liveness before load: %d", code)
	}
	if code, body := do(t, http.MethodGet, ts.URL+"/v1/models/mlapp", ""); code != 503 || !strings.Contains(body, `"ready":false`) {
		t.Errorf("model status before load: %d %s", code, body)
	}
	if code, _ := do(t, http.MethodPost, ts.URL+"/v1/models/mlapp:predict", smoke); code != 503 {
		t.Errorf("predict before load: %d", code)
	}
	if _, err := s.LoadFile(filepath.Dir(modelPath("v1"))); err == nil {
		t.Error("a directory without model.json loaded")
	}
	m, err := s.LoadFile(modelPath("v2"))
	if err != nil || m.Version != "v2" {
		t.Fatalf("load: %v", err)
	}
	if code, body := do(t, http.MethodGet, ts.URL+"/v1/models/mlapp", ""); code != 200 || body != `{"name":"mlapp","ready":true}`+"\n" {
		t.Errorf("model status: %d %q", code, body)
	}
	if code, _ := do(t, http.MethodGet, ts.URL+"/readyz", ""); code != 200 {
		t.Errorf("readyz after load: %d", code)
	}
	s.SetDraining()
	if code, body := do(t, http.MethodGet, ts.URL+"/readyz", ""); code != 503 || body != "draining\n" {
		t.Errorf("while draining: %d %q", code, body)
	}
	if code, _ := do(t, http.MethodPost, ts.URL+"/v1/models/mlapp:predict", smoke); code != 200 {
		t.Errorf("in-flight traffic while draining: %d", code)
	}
}

func TestRequestErrors(t *testing.T) {
	_, ts := newTestServer(t, "v1")
	tests := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/v1/models/other:predict", smoke, 404, `model \"other\" not found`},
		{"POST", "/v1/models/mlapp:explain", smoke, 404, `unknown verb \"explain\"`},
		{"GET", "/v1/models/mlapp:predict", "", 405, "method not allowed"},
		{"POST", "/v1/models/mlapp", "", 405, "method not allowed"},
		{"POST", "/v1/models/mlapp:predict", `{"instances": [[1, 2]]}`, 400, "instance 0: instance has 2 values, the model takes 4"},
		{"POST", "/v1/models/mlapp:predict", `{"inputs": []}`, 400, `unknown field \"inputs\"`},
		{"POST", "/v1/models/mlapp:predict", `{"instances": []}`, 400, `request has no \"instances\"`},
		{"POST", "/v1/models/mlapp:predict", `not json`, 400, "decoding request"},
		{"GET", "/v1/models", "", 200, `{"models":["mlapp"]}`},
	}
	for _, tt := range tests {
		code, body := do(t, tt.method, ts.URL+tt.path, tt.body)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s: %d %s, want %d containing %s", tt.method, tt.path, code, body, tt.code, tt.want)
		}
	}
}

// TestMetricsExposition drives known traffic and parses /metrics with a strict parser of the text
// format: every sample belongs to a family declared by TYPE, histograms are cumulative and end in +Inf
// equal to _count, and the counters equal the traffic.
func TestMetricsExposition(t *testing.T) {
	_, ts := newTestServer(t, "v3")
	for range 4 {
		do(t, http.MethodPost, ts.URL+"/v1/models/mlapp:predict", smoke)
	}
	do(t, http.MethodGet, ts.URL+"/healthz", "")
	do(t, http.MethodGet, ts.URL+"/no/such/path", "")
	do(t, http.MethodGet, ts.URL+"/metrics", "")

	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("content type %q", ct)
	}
	fams, err := parseExposition(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`http_requests_total{code="200",method="POST",path="/v1/models/mlapp:predict"}`:                 2,
		`http_requests_total{code="500",method="POST",path="/v1/models/mlapp:predict"}`:                 2,
		`http_requests_total{code="200",method="GET",path="/healthz"}`:                                  1,
		`http_requests_total{code="404",method="GET",path="other"}`:                                     1,
		`http_request_duration_seconds_count{code="200",method="POST",path="/v1/models/mlapp:predict"}`: 2,
		`http_request_duration_seconds_count{code="500",method="POST",path="/v1/models/mlapp:predict"}`: 2,
		`model_info{model="mlapp",version="v3"}`:                                                        1,
		`model_predictions_total{class="virginica",model="mlapp",version="v3"}`:                         2,
	}
	all := map[string]float64{}
	for _, f := range fams {
		for k, v := range f.samples {
			all[k] = v
		}
	}
	for k, v := range want {
		if got, ok := all[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for k := range all {
		if strings.Contains(k, `path="/metrics"`) {
			t.Errorf("scrapes are counted: %s", k)
		}
	}
	types := map[string]string{}
	for _, f := range fams {
		types[f.name] = f.typ
	}
	for name, typ := range map[string]string{"http_requests_total": "counter", "http_request_duration_seconds": "histogram", "model_info": "gauge", "model_predictions_total": "counter"} {
		if types[name] != typ {
			t.Errorf("family %s has type %q, want %s", name, types[name], typ)
		}
	}
}

type family struct {
	name, typ string
	samples   map[string]float64 // canonical series (labels sorted) -> value
}

// parseExposition is a strict parser of the parts of the text format the server writes.
func parseExposition(r io.Reader) ([]*family, error) {
	var fams []*family
	byName := map[string]*family{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			if _, dup := byName[name]; dup {
				return nil, fmt.Errorf("line %d: family %s declared twice", n, name)
			}
			switch typ {
			case "counter", "gauge", "histogram":
			default:
				return nil, fmt.Errorf("line %d: type %q", n, typ)
			}
			f := &family{name: name, typ: typ, samples: map[string]float64{}}
			fams = append(fams, f)
			byName[name] = f
			continue
		}
		name, lbls, value, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		if len(fams) == 0 {
			return nil, fmt.Errorf("line %d: sample before any TYPE", n)
		}
		f := fams[len(fams)-1]
		base := name
		if f.typ == "histogram" {
			base = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		}
		if base != f.name {
			return nil, fmt.Errorf("line %d: sample %s outside its family (current %s)", n, name, f.name)
		}
		if f.typ == "counter" && !strings.HasSuffix(name, "_total") {
			return nil, fmt.Errorf("line %d: counter %s without _total", n, name)
		}
		f.samples[canonical(name, lbls)] = value
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, f := range fams {
		if f.typ == "histogram" {
			if err := checkHistogram(f); err != nil {
				return nil, err
			}
		}
	}
	return fams, nil
}

func parseSample(line string) (string, map[string]string, float64, error) {
	open := strings.IndexByte(line, '{')
	closeIdx := strings.LastIndexByte(line, '}')
	if open < 1 || closeIdx < open {
		return "", nil, 0, fmt.Errorf("no label set")
	}
	name := line[:open]
	for i, c := range name {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return "", nil, 0, fmt.Errorf("bad metric name %q", name)
		}
	}
	lbls := map[string]string{}
	s := line[open+1 : closeIdx]
	for s != "" {
		eq := strings.Index(s, `="`)
		if eq < 1 {
			return "", nil, 0, fmt.Errorf("bad label pair in %q", s)
		}
		key := s[:eq]
		s = s[eq+2:]
		var val strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				case '\\', '"':
					val.WriteByte(s[i])
				default:
					return "", nil, 0, fmt.Errorf("bad escape \\%c", s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i == len(s) {
			return "", nil, 0, fmt.Errorf("unterminated label value")
		}
		if _, dup := lbls[key]; dup {
			return "", nil, 0, fmt.Errorf("label %s repeated", key)
		}
		lbls[key] = val.String()
		s = strings.TrimPrefix(s[i+1:], ",")
	}
	rest := strings.TrimPrefix(line[closeIdx+1:], " ")
	if strings.Contains(rest, " ") {
		return "", nil, 0, fmt.Errorf("timestamps are not written")
	}
	v, err := strconv.ParseFloat(rest, 64)
	if err != nil {
		return "", nil, 0, err
	}
	return name, lbls, v, nil
}

func canonical(name string, lbls map[string]string) string {
	keys := make([]string, 0, len(lbls))
	for k := range lbls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	b.WriteString(name + "{")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, lbls[k])
	}
	b.WriteByte('}')
	return b.String()
}

// checkHistogram checks each series' buckets: all bounds present, cumulative, +Inf equal to _count.
func checkHistogram(f *family) error {
	for key, count := range f.samples {
		if !strings.HasPrefix(key, f.name+"_count{") {
			continue
		}
		lbls := strings.TrimPrefix(key, f.name+"_count{")
		lbls = strings.TrimSuffix(lbls, "}")
		prev := -1.0
		for _, ub := range append(append([]string{}, formatBuckets()...), "+Inf") {
			bk := canonicalBucket(f.name, lbls, ub)
			v, ok := f.samples[bk]
			if !ok {
				return fmt.Errorf("%s missing", bk)
			}
			if v < prev {
				return fmt.Errorf("%s = %v decreases", bk, v)
			}
			prev = v
		}
		if prev != count {
			return fmt.Errorf("%s: +Inf bucket %v != count %v", f.name, prev, count)
		}
		if _, ok := f.samples[f.name+"_sum{"+lbls+"}"]; !ok {
			return fmt.Errorf("%s_sum{%s} missing", f.name, lbls)
		}
	}
	return nil
}

func formatBuckets() []string {
	out := make([]string, len(Buckets))
	for i, b := range Buckets {
		out[i] = formatFloat(b)
	}
	return out
}

// canonicalBucket builds the canonical key of a bucket from the canonical labels of its _count.
func canonicalBucket(name, lbls, le string) string {
	m := map[string]string{"le": le}
	for _, kv := range strings.Split(lbls, ",") {
		k, v, _ := strings.Cut(kv, "=")
		uq, _ := strconv.Unquote(v)
		m[k] = uq
	}
	return canonical(name+"_bucket", m)
}

func TestLabelEscaping(t *testing.T) {
	m := NewMetrics()
	m.SetModel(`we"ird\name`+"\n", "v1")
	var b bytes.Buffer
	if err := m.Write(&b); err != nil {
		t.Fatal(err)
	}
	fams, err := parseExposition(&b)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.name == "model_info" {
			if _, ok := f.samples[canonical("model_info", map[string]string{"model": `we"ird\name` + "\n", "version": "v1"})]; !ok {
				t.Errorf("escaped label did not round-trip: %v", f.samples)
			}
		}
	}
}
