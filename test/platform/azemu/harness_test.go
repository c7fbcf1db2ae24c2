package azemu

import (
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClient = "11111111-2222-3333-4444-555555555555"
	testSecret = "s3cr3t-value"
)

// prepared is a directory PrepareCerts filled once: RSA key generation is slow on a shared machine.
var prepared string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "azemu-test-")
	if err == nil {
		err = PrepareCerts(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "preparing certificates:", err)
		os.Exit(1)
	}
	prepared = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// copyPrepared copies the prepared certificates and keys into dir.
func copyPrepared(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(prepared)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(prepared, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// harness runs both emulators on httptest TLS servers in front of a fake upstream registry.
type harness struct {
	dir      string
	cfg      Config
	entra    *httptest.Server
	acr      *httptest.Server
	upstream *httptest.Server
	client   *http.Client

	mu           sync.Mutex
	upstreamReqs []*http.Request
}

func newHarness(t *testing.T, upstream http.Handler) *harness {
	t.Helper()
	h := &harness{dir: t.TempDir()}
	copyPrepared(t, h.dir)
	if upstream == nil {
		upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	}
	h.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.upstreamReqs = append(h.upstreamReqs, r.Clone(r.Context()))
		h.mu.Unlock()
		upstream.ServeHTTP(w, r)
	}))
	t.Cleanup(h.upstream.Close)
	h.entra = httptest.NewUnstartedServer(nil)
	h.acr = httptest.NewUnstartedServer(nil)
	h.cfg = Config{
		Dir:          h.dir,
		EntraAddr:    h.entra.Listener.Addr().String(),
		ACRAddr:      h.acr.Listener.Addr().String(),
		RegistryURL:  h.upstream.URL,
		TenantID:     testTenant,
		ClientID:     testClient,
		ClientSecret: testSecret,
		Logf:         t.Logf,
	}
	entraH, acrH, tlsCfg, err := newHandlers(h.cfg, time.Now)
	if err != nil {
		t.Fatalf("newHandlers: %v", err)
	}
	h.entra.Config.Handler, h.entra.TLS = entraH, tlsCfg
	h.acr.Config.Handler, h.acr.TLS = acrH, tlsCfg.Clone()
	h.entra.StartTLS()
	h.acr.StartTLS()
	t.Cleanup(h.entra.Close)
	t.Cleanup(h.acr.Close)
	pool, err := CAPool(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	h.client = &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return h
}

func (h *harness) entraURL(path string) string { return "https://" + h.cfg.EntraAddr + path }
func (h *harness) acrURL(path string) string   { return "https://" + h.cfg.ACRAddr + path }

// result is a decoded HTTP answer.
type result struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (h *harness) do(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	res := result{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &res.body)
	return res
}

func (h *harness) get(t *testing.T, u string) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return h.do(t, req)
}

func (h *harness) postForm(t *testing.T, u string, form url.Values) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return h.do(t, req)
}

// entraToken gets an Entra access token for scope with the client credentials grant.
func (h *harness) entraToken(t *testing.T, scope string) string {
	t.Helper()
	res := h.postForm(t, h.entraURL("/"+testTenant+"/oauth2/v2.0/token"), url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClient}, "client_secret": {testSecret}, "scope": {scope},
	})
	if res.status != http.StatusOK {
		t.Fatalf("entra token: %d %s", res.status, res.raw)
	}
	return res.body["access_token"].(string)
}

// exchange trades an Entra token for an ACR refresh token.
func (h *harness) exchange(t *testing.T, aad string) result {
	t.Helper()
	return h.postForm(t, h.acrURL("/oauth2/exchange"), url.Values{
		"grant_type": {"access_token"}, "service": {h.cfg.ACRAddr}, "tenant": {testTenant}, "access_token": {aad},
	})
}

func (h *harness) refreshToken(t *testing.T) string {
	t.Helper()
	res := h.exchange(t, h.entraToken(t, "https://containerregistry.azure.net/.default"))
	if res.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", res.status, res.raw)
	}
	return res.body["refresh_token"].(string)
}

func (h *harness) key(t *testing.T, name string) *rsa.PrivateKey {
	t.Helper()
	k, err := readRSAKey(filepath.Join(h.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// decodeClaims returns a JWT's claims without verifying it.
func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func decodeHeader(t *testing.T, tok string) jwtHeader {
	t.Helper()
	b, err := b64.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr jwtHeader
	if err := json.Unmarshal(b, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr
}

// aadError returns the AADSTS number of an Entra error answer.
func aadError(res result) (string, float64) {
	code, _ := res.body["error"].(string)
	codes, _ := res.body["error_codes"].([]any)
	if len(codes) == 0 {
		return code, 0
	}
	n, _ := codes[0].(float64)
	return code, n
}

// acrErrorCode returns errors[0].code of an ACR error answer.
func acrErrorCode(res result) string {
	errs, _ := res.body["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	m, _ := errs[0].(map[string]any)
	c, _ := m["code"].(string)
	return c
}
