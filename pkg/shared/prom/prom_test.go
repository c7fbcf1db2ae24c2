package prom

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// request is what the fake Prometheus saw.
type request struct {
	Method, Path, ContentType string
	Form                      url.Values
}

// fakeProm serves one canned response and records requests.
type fakeProm struct {
	*httptest.Server
	mu       sync.Mutex
	requests []request
}

func newFakeProm(t *testing.T, status int, body string, allowPost bool) *fakeProm {
	t.Helper()
	f := &fakeProm{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("parsing form: %v", err)
		}
		f.mu.Lock()
		f.requests = append(f.requests, request{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Form: r.Form})
		f.mu.Unlock()
		if r.Method == http.MethodPost && !allowPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeProm) last() request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[len(f.requests)-1]
}

func mustNew(t *testing.T, u string) *Client {
	t.Helper()
	c, err := New(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestQueryVector(t *testing.T) {
	body := `{"status":"success","data":{"resultType":"vector","result":[
		{"metric":{"__name__":"up","job":"model","pod":"web-0"},"value":[1764126000.5,"1"]},
		{"metric":{"pod":"web-1"},"value":[1764126000.5,"NaN"]},
		{"metric":{"pod":"web-2"},"value":[1764126000.5,"+Inf"]},
		{"metric":{"pod":"web-3"},"value":[1764126000.5,"-Inf"]},
		{"metric":{"pod":"web-4"},"histogram":[1764126000.5,{"count":"2","sum":"1"}]}]}}`
	f := newFakeProm(t, http.StatusOK, body, true)
	c := mustNew(t, f.URL+"/prefix/")
	at := time.Date(2025, 11, 26, 3, 0, 0, 500_000_000, time.UTC)
	vec, warnings, err := c.Query(context.Background(), `up{job="model"}`, at)
	if err != nil {
		t.Fatal(err)
	}
	wantTime := time.UnixMilli(1764126000500).UTC()
	if len(vec) != 4 {
		t.Fatalf("len(vec) = %d, want 4: %+v", len(vec), vec)
	}
	if vec[0].Metric["pod"] != "web-0" || vec[0].Value != 1 || !vec[0].Time.Equal(wantTime) {
		t.Errorf("vec[0] = %+v", vec[0])
	}
	if !math.IsNaN(vec[1].Value) || !math.IsInf(vec[2].Value, 1) || !math.IsInf(vec[3].Value, -1) {
		t.Errorf("special values = %v %v %v, want NaN +Inf -Inf", vec[1].Value, vec[2].Value, vec[3].Value)
	}
	if len(warnings) != 1 || warnings[0] != "skipped 1 native histogram samples" {
		t.Errorf("warnings = %q", warnings)
	}
	r := f.last()
	if r.Method != http.MethodPost || r.Path != "/prefix/api/v1/query" || r.ContentType != "application/x-www-form-urlencoded" {
		t.Errorf("request = %s %s (%s), want a form POST to /prefix/api/v1/query", r.Method, r.Path, r.ContentType)
	}
	if r.Form.Get("query") != `up{job="model"}` || r.Form.Get("time") != "1764126000.5" {
		t.Errorf("form = %v", r.Form)
	}
}

func TestQueryScalarAndServerTime(t *testing.T) {
	f := newFakeProm(t, http.StatusOK, `{"status":"success","data":{"resultType":"scalar","result":[1764126000,"0.25"]}}`, true)
	vec, _, err := mustNew(t, f.URL).Query(context.Background(), "scalar(0.25)", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vec) != 1 || vec[0].Value != 0.25 || len(vec[0].Metric) != 0 || vec[0].Time.Unix() != 1764126000 {
		t.Errorf("vec = %+v", vec)
	}
	if _, ok := f.last().Form["time"]; ok {
		t.Errorf("a zero time must leave evaluation time to the server; form = %v", f.last().Form)
	}
}

func TestQueryRange(t *testing.T) {
	body := `{"status":"success","data":{"resultType":"matrix","result":[
		{"metric":{"pod":"web-0"},"values":[[1764126000,"1"],[1764126015,"NaN"],[1764126030,"2.5"]]},
		{"metric":{},"values":[]}]}}`
	f := newFakeProm(t, http.StatusOK, body, false) // POST refused: the client falls back to GET
	start := time.Unix(1764126000, 0)
	m, warnings, err := mustNew(t, f.URL).QueryRange(context.Background(), "rate(x[1m])", start, start.Add(30*time.Second), 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q", warnings)
	}
	if len(m) != 2 || len(m[0].Points) != 3 || len(m[1].Points) != 0 || m[1].Metric == nil {
		t.Fatalf("matrix = %+v", m)
	}
	p := m[0].Points
	if p[0].Value != 1 || !math.IsNaN(p[1].Value) || p[2].Value != 2.5 || p[2].Time.Unix() != 1764126030 {
		t.Errorf("points = %+v", p)
	}
	r := f.last()
	if r.Method != http.MethodGet || r.Path != "/api/v1/query_range" {
		t.Errorf("request = %s %s, want GET fallback", r.Method, r.Path)
	}
	want := url.Values{"query": {"rate(x[1m])"}, "start": {"1764126000"}, "end": {"1764126030"}, "step": {"15"}}
	for k := range want {
		if r.Form.Get(k) != want.Get(k) {
			t.Errorf("form %s = %q, want %q", k, r.Form.Get(k), want.Get(k))
		}
	}
}

func TestWarningsEnvelope(t *testing.T) {
	body := `{"status":"success","warnings":["PromQL info: metric might not be a counter","query was partially served"],
		"data":{"resultType":"vector","result":[]}}`
	f := newFakeProm(t, http.StatusOK, body, true)
	vec, warnings, err := mustNew(t, f.URL).Query(context.Background(), "rate(x[5m])", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vec) != 0 || vec == nil {
		t.Errorf("vec = %#v, want empty non-nil", vec)
	}
	if len(warnings) != 2 || warnings[1] != "query was partially served" {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		query   func(*Client) error
		want    *APIError
		wantMsg string
	}{
		{
			name:   "bad_data envelope",
			status: http.StatusBadRequest,
			body:   `{"status":"error","errorType":"bad_data","error":"1:5: parse error:\nunexpected end of input","warnings":["w"]}`,
			want:   &APIError{Type: "bad_data", Msg: "1:5: parse error: unexpected end of input", StatusCode: 400},
		},
		{
			name:   "execution error envelope",
			status: http.StatusUnprocessableEntity,
			body:   `{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}`,
			want:   &APIError{Type: "execution", Msg: "many-to-many matching not allowed", StatusCode: 422},
		},
		{
			name:   "proxy page",
			status: http.StatusBadGateway,
			body:   "<html>\n<body>502 Bad Gateway</body>\n</html>",
			want:   &APIError{Type: "server_error", Msg: "<html> <body>502 Bad Gateway</body> </html>", StatusCode: 502},
		},
		{
			name:   "azure monitor forbidden",
			status: http.StatusForbidden,
			body:   `{"error":{"code":"Forbidden","message":"The caller does not have access"}}`,
			want:   &APIError{Type: "client_error", Msg: `{"error":{"code":"Forbidden","message":"The caller does not have access"}}`, StatusCode: 403},
		},
		{
			name:    "matrix for instant query",
			status:  http.StatusOK,
			body:    `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
			wantMsg: "prometheus returned a matrix for an instant query, want a vector or scalar",
		},
		{
			name:    "not json",
			status:  http.StatusOK,
			body:    `hello`,
			wantMsg: "decoding prometheus response: invalid character 'h' looking for beginning of value",
		},
		{
			name:    "bad sample value",
			status:  http.StatusOK,
			body:    `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}`,
			wantMsg: `decoding prometheus vector: sample value "abc": strconv.ParseFloat: parsing "abc": invalid syntax`,
		},
		{
			name:   "zero step",
			status: http.StatusOK,
			query: func(c *Client) error {
				_, _, err := c.QueryRange(context.Background(), "up", time.Unix(0, 0), time.Unix(60, 0), 0)
				return err
			},
			wantMsg: "range query step must be positive, got 0s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeProm(t, tt.status, tt.body, true)
			c := mustNew(t, f.URL)
			var err error
			if tt.query != nil {
				err = tt.query(c)
			} else {
				_, _, err = c.Query(context.Background(), "up", time.Time{})
			}
			if err == nil {
				t.Fatal("want an error")
			}
			if tt.want != nil {
				var apiErr *APIError
				if !errors.As(err, &apiErr) {
					t.Fatalf("err = %v (%T), want *APIError", err, err)
				}
				if *apiErr != *tt.want {
					t.Errorf("APIError = %+v, want %+v", *apiErr, *tt.want)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error message spans lines: %q", err.Error())
				}
				return
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("err = %q, want %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

func TestErrorWarningsAndMessage(t *testing.T) {
	f := newFakeProm(t, http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\"","warnings":["w1"]}`, true)
	_, warnings, err := mustNew(t, f.URL).Query(context.Background(), "up{", time.Time{})
	if got, want := err.Error(), `prometheus bad_data (HTTP 400): invalid parameter "query"`; got != want {
		t.Errorf("err = %q, want %q", got, want)
	}
	if len(warnings) != 1 || warnings[0] != "w1" {
		t.Errorf("warnings = %q, want the envelope's", warnings)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
	}{
		{url: "http://127.0.0.1:9090"},
		{url: "https://ws-abcd.eastus.prometheus.monitor.azure.com/"},
		{url: "127.0.0.1:9090", wantErr: `prometheus url "127.0.0.1:9090" must be an absolute http or https URL`},
		{url: "ftp://x", wantErr: `prometheus url "ftp://x" must be an absolute http or https URL`},
		{url: "", wantErr: `prometheus url "" must be an absolute http or https URL`},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := New(tt.url, nil)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("New(%q) error = %q, want %q", tt.url, got, tt.wantErr)
			}
		})
	}
}

type fakeCredential struct{}

func (fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != "https://prometheus.monitor.azure.com/.default" {
		return azcore.AccessToken{}, errors.New("unexpected scopes")
	}
	return azcore.AccessToken{Token: "amw-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// captureTransport answers every request with an empty vector and records its Authorization header.
type captureTransport struct {
	mu   sync.Mutex
	auth []string
}

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	c.mu.Lock()
	c.auth = append(c.auth, r.Header.Get("Authorization"))
	c.mu.Unlock()
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(`{"status":"success","data":{"resultType":"vector","result":[]}}`)),
		Request:    r,
	}, nil
}

func TestNewForURLAuth(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		auth     string
		wantAuth string
		wantErr  string
	}{
		{name: "auto azure", url: "https://ws-abcd.eastus.prometheus.monitor.azure.com", wantAuth: "Bearer amw-token"},
		{name: "auto azure upper case", url: "https://WS.eastus.Prometheus.Monitor.Azure.com", wantAuth: "Bearer amw-token"},
		{name: "auto none", url: "http://127.0.0.1:9090", wantAuth: ""},
		{name: "explicit none", url: "https://ws.eastus.prometheus.monitor.azure.com", auth: "none", wantAuth: ""},
		{name: "explicit azure", url: "https://prometheus.internal.example.com", auth: "azure", wantAuth: "Bearer amw-token"},
		{name: "unknown", url: "http://127.0.0.1:9090", auth: "basic", wantErr: `unknown prometheus auth "basic" (want one of: none, azure)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &captureTransport{}
			c, err := newForURL(tt.url, tt.auth, fakeCredential{}, rt)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Query(context.Background(), "up", time.Time{}); err != nil {
				t.Fatal(err)
			}
			if len(rt.auth) != 1 || rt.auth[0] != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", rt.auth, tt.wantAuth)
			}
		})
	}
}

func TestNewForURLAzureDefaultCredential(t *testing.T) {
	t.Setenv("AZURE_TOKEN_CREDENTIALS", "")
	os.Unsetenv("AZURE_TOKEN_CREDENTIALS")
	c, err := NewForURL("https://ws.eastus.prometheus.monitor.azure.com", "", nil)
	if err != nil || c == nil {
		t.Fatalf("NewForURL with a nil credential = %v, %v; want DefaultAzureCredential", c, err)
	}
}
