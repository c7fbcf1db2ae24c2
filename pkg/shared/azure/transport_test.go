package azure

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// countingCredential hands out numbered tokens valid for ttl and counts GetToken calls.
type countingCredential struct {
	calls  atomic.Int32
	now    func() time.Time
	ttl    time.Duration
	err    error
	scopes []string
	mu     sync.Mutex
}

func (c *countingCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	n := c.calls.Add(1)
	c.mu.Lock()
	c.scopes = opts.Scopes
	c.mu.Unlock()
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	return azcore.AccessToken{Token: "secret-token-" + string(rune('0'+n)), ExpiresOn: c.now().Add(c.ttl)}, nil
}

// echoServer answers with the Authorization header it received.
func echoServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBearerTransportCaches(t *testing.T) {
	srv := echoServer(t)
	clock := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	cred := &countingCredential{now: func() time.Time { return clock }, ttl: time.Hour}
	rt := NewBearerTransport(nil, cred, ScopePrometheus).(*bearerTransport)
	rt.now = func() time.Time { return clock }
	c := &http.Client{Transport: rt}

	steps := []struct {
		advance   time.Duration
		wantAuth  string
		wantCalls int32
	}{
		{advance: 0, wantAuth: "Bearer secret-token-1", wantCalls: 1},
		{advance: time.Minute, wantAuth: "Bearer secret-token-1", wantCalls: 1},
		{advance: 53 * time.Minute, wantAuth: "Bearer secret-token-1", wantCalls: 1}, // 6 min before expiry
		{advance: 2 * time.Minute, wantAuth: "Bearer secret-token-2", wantCalls: 2},  // 4 min before expiry: refresh
		{advance: time.Minute, wantAuth: "Bearer secret-token-2", wantCalls: 2},
	}
	for i, s := range steps {
		clock = clock.Add(s.advance)
		if got := get(t, c, srv.URL); got != s.wantAuth {
			t.Errorf("step %d: Authorization = %q, want %q", i, got, s.wantAuth)
		}
		if got := cred.calls.Load(); got != s.wantCalls {
			t.Errorf("step %d: GetToken calls = %d, want %d", i, got, s.wantCalls)
		}
	}
	if len(cred.scopes) != 1 || cred.scopes[0] != ScopePrometheus {
		t.Errorf("scopes = %v, want [%s]", cred.scopes, ScopePrometheus)
	}
}

func TestBearerTransportRefreshOn(t *testing.T) {
	now := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	rt := &bearerTransport{token: azcore.AccessToken{Token: "x", ExpiresOn: now.Add(time.Hour), RefreshOn: now.Add(30 * time.Minute)}}
	if got := rt.refreshAt(); !got.Equal(now.Add(30 * time.Minute)) {
		t.Errorf("refreshAt = %v, want RefreshOn", got)
	}
	rt.token.RefreshOn = time.Time{}
	if got := rt.refreshAt(); !got.Equal(now.Add(55 * time.Minute)) {
		t.Errorf("refreshAt = %v, want 5 minutes before expiry", got)
	}
}

func TestBearerTransportConcurrentShareOneToken(t *testing.T) {
	srv := echoServer(t)
	cred := &countingCredential{now: time.Now, ttl: time.Hour}
	c := &http.Client{Transport: NewBearerTransport(nil, cred, ScopeACR)}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	if got := cred.calls.Load(); got != 1 {
		t.Errorf("GetToken calls = %d, want 1", got)
	}
}

func TestBearerTransportDoesNotModifyRequest(t *testing.T) {
	srv := echoServer(t)
	cred := &countingCredential{now: time.Now, ttl: time.Hour}
	rt := NewBearerTransport(nil, cred, ScopeARM)
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := req.Header.Get("Authorization"); got != "" {
		t.Errorf("caller's request was modified: Authorization = %q", got)
	}
}

type recordingTransport struct{ called atomic.Bool }

func (r *recordingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	r.called.Store(true)
	return nil, errors.New("unexpected request")
}

func TestBearerTransportErrors(t *testing.T) {
	authErr := errors.New("AADSTS7000215: invalid client secret provided")
	tests := []struct {
		name    string
		url     string
		cred    *countingCredential
		wantErr string
		wantIs  error
	}{
		{
			name:    "credential error names the scope",
			url:     "https://example.invalid/api/v1/query",
			cred:    &countingCredential{now: time.Now, err: authErr},
			wantErr: "getting azure token for scope " + ScopePrometheus + ": AADSTS7000215: invalid client secret provided",
			wantIs:  authErr,
		},
		{
			name:    "plain http to another machine",
			url:     "http://prometheus.example.com:9090/api/v1/query",
			cred:    &countingCredential{now: time.Now, ttl: time.Hour},
			wantErr: `refusing to send an azure bearer token over plain http to "prometheus.example.com:9090"`,
			wantIs:  errPlainHTTP,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := &recordingTransport{}
			rt := NewBearerTransport(base, tt.cred, ScopePrometheus)
			body := &closeRecorder{Reader: strings.NewReader("query=up")}
			req, err := http.NewRequest(http.MethodPost, tt.url, body)
			if err != nil {
				t.Fatal(err)
			}
			_, err = rt.RoundTrip(req)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Errorf("error leaks a token: %v", err)
			}
			if base.called.Load() {
				t.Error("request was sent despite the error")
			}
			if !body.closed {
				t.Error("request body was not closed")
			}
		})
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
