package azemu

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestACRChallenge(t *testing.T) {
	h := newHarness(t, nil)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, h.acrURL("/v2/"), nil)
		res := h.do(t, req)
		want := `Bearer realm="https://` + h.cfg.ACRAddr + `/oauth2/token",service="` + h.cfg.ACRAddr + `"`
		if res.status != http.StatusUnauthorized || res.header.Get("WWW-Authenticate") != want {
			t.Errorf("%s /v2/: %d %q, want 401 %q", method, res.status, res.header.Get("WWW-Authenticate"), want)
		}
		if method == http.MethodGet && acrErrorCode(res) != "UNAUTHORIZED" {
			t.Errorf("body = %s", res.raw)
		}
	}
	if n := len(h.upstreamReqs); n != 0 {
		t.Errorf("the challenge reached the registry %d times", n)
	}
}

func TestACRExchange(t *testing.T) {
	h := newHarness(t, nil)
	for _, scope := range []string{"https://containerregistry.azure.net/.default", "https://management.azure.com/.default"} {
		start := time.Now()
		res := h.exchange(t, h.entraToken(t, scope))
		if res.status != http.StatusOK {
			t.Fatalf("exchange of a %s token: %d %s", scope, res.status, res.raw)
		}
		rt := res.body["refresh_token"].(string)
		var c refreshClaims
		if err := verifyJWT(rt, &h.key(t, FileACRRefreshTokenKey).PublicKey, &c); err != nil {
			t.Fatal(err)
		}
		if c.Iss != RegistryIssuer || len(c.Aud) != 1 || c.Aud[0] != h.cfg.ACRAddr || c.GrantType != "refresh_token" || c.Tenant != testTenant || c.Sub != servicePrincipalOID(testClient) {
			t.Errorf("refresh claims = %+v", c)
		}
		if d := time.Unix(c.Exp, 0).Sub(start); d < 3*time.Hour-2*time.Second || d > 3*time.Hour+2*time.Second {
			t.Errorf("refresh token lifetime = %v, want 3h", d)
		}
	}
	// The tenant field is optional.
	res := h.postForm(t, h.acrURL("/oauth2/exchange?api-version=2021-07-01"), url.Values{
		"grant_type": {"access_token"}, "service": {h.cfg.ACRAddr}, "access_token": {h.entraToken(t, "https://containerregistry.azure.net/.default")},
	})
	if res.status != http.StatusOK {
		t.Errorf("exchange without tenant: %d %s", res.status, res.raw)
	}
}

// forge signs Entra-shaped claims, starting from a valid token's claims, with key.
func forge(t *testing.T, h *harness, key *rsa.PrivateKey, edit func(c map[string]any)) string {
	t.Helper()
	c := decodeClaims(t, h.entraToken(t, "https://containerregistry.azure.net/.default"))
	edit(c)
	kid := entraKeyID(&h.key(t, FileEntraKey).PublicKey)
	tok, err := signJWT(key, jwtHeader{Kid: kid, X5t: kid}, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestACRExchangeRefusals(t *testing.T) {
	h := newHarness(t, nil)
	entraKey := h.key(t, FileEntraKey)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := h.entraToken(t, "https://containerregistry.azure.net/.default")
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64.EncodeToString([]byte(strings.Replace(string(mustB64(t, parts[1])), testTenant, "00000000-0000-0000-0000-000000000001", 1))) + "." + parts[2]
	hour := time.Hour
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"expired", exchangeForm(h, forge(t, h, entraKey, func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = time.Now().Add(-2*hour).Unix(), time.Now().Add(-2*hour).Unix(), time.Now().Add(-hour).Unix()
		})), 401, "UNAUTHORIZED"},
		{"not yet valid", exchangeForm(h, forge(t, h, entraKey, func(c map[string]any) {
			c["nbf"], c["exp"] = time.Now().Add(hour).Unix(), time.Now().Add(2*hour).Unix()
		})), 401, "UNAUTHORIZED"},
		{"wrong audience (prometheus)", exchangeForm(h, h.entraToken(t, "https://prometheus.monitor.azure.com/.default")), 401, "UNAUTHORIZED"},
		{"wrong audience (log analytics)", exchangeForm(h, h.entraToken(t, "https://api.loganalytics.io/.default")), 401, "UNAUTHORIZED"},
		{"per-registry audience", exchangeForm(h, forge(t, h, entraKey, func(c map[string]any) { c["aud"] = "https://" + h.cfg.ACRAddr })), 401, "UNAUTHORIZED"},
		{"wrong signature", exchangeForm(h, forge(t, h, otherKey, func(map[string]any) {})), 401, "UNAUTHORIZED"},
		{"tampered payload", exchangeForm(h, tampered), 401, "UNAUTHORIZED"},
		{"other issuer", exchangeForm(h, forge(t, h, entraKey, func(c map[string]any) { c["iss"] = "https://sts.windows.net/" + testTenant + "/" })), 401, "UNAUTHORIZED"},
		{"other tenant in token", exchangeForm(h, forge(t, h, entraKey, func(c map[string]any) { c["tid"] = "00000000-0000-0000-0000-000000000001" })), 401, "UNAUTHORIZED"},
		{"tenant field mismatch", withField(exchangeForm(h, valid), "tenant", "00000000-0000-0000-0000-000000000001"), 401, "UNAUTHORIZED"},
		{"other service", withField(exchangeForm(h, valid), "service", "myregistry.azurecr.io"), 401, "UNAUTHORIZED"},
		{"not a JWT", exchangeForm(h, "opaque-token"), 401, "UNAUTHORIZED"},
		{"alg none", exchangeForm(h, noneAlg(valid)), 401, "UNAUTHORIZED"},
		{"missing token", withField(exchangeForm(h, valid), "access_token", ""), 400, "BAD_REQUEST"},
		{"missing grant", withField(exchangeForm(h, valid), "grant_type", ""), 400, "BAD_REQUEST"},
		{"deprecated AAD refresh grant", withField(exchangeForm(h, valid), "grant_type", "access_token_refresh_token"), 400, "UNSUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.postForm(t, h.acrURL("/oauth2/exchange"), tc.form)
			if res.status != tc.status || acrErrorCode(res) != tc.code {
				t.Errorf("got %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
			if _, ok := res.body["refresh_token"]; ok {
				t.Error("a refused exchange got a refresh token")
			}
		})
	}
}

func exchangeForm(h *harness, aad string) url.Values {
	return url.Values{"grant_type": {"access_token"}, "service": {h.cfg.ACRAddr}, "tenant": {testTenant}, "access_token": {aad}}
}

func withField(f url.Values, k, v string) url.Values {
	g := url.Values{}
	for kk, vv := range f {
		g[kk] = vv
	}
	if v == "" {
		g.Del(k)
	} else {
		g.Set(k, v)
	}
	return g
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noneAlg re-headers a token as unsigned.
func noneAlg(tok string) string {
	parts := strings.Split(tok, ".")
	return b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
}

// verifyAsDistribution checks an access token the way the distribution registry's token
// access controller does with RegistryTokenAuth's settings: the x5c leaf must chain to the
// rootcertbundle (or the kid must be the JWK thumbprint of one of its certificates), the
// signature must verify with that key, iss and aud must match, exp/nbf within 60 s leeway.
func verifyAsDistribution(t *testing.T, h *harness, tok string) []accessEntry {
	t.Helper()
	_, service, issuer, bundle := RegistryTokenAuth(h.dir, h.cfg.ACRAddr)
	root, err := readCert(bundle)
	if err != nil {
		t.Fatal(err)
	}
	hdr := decodeHeader(t, tok)
	if hdr.Alg != "RS256" || len(hdr.X5c) != 1 {
		t.Fatalf("header = %+v", hdr)
	}
	der, err := base64.StdEncoding.DecodeString(hdr.X5c[0])
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("x5c does not chain to the rootcertbundle: %v", err)
	}
	if hdr.Kid != jwkThumbprint(root.PublicKey.(*rsa.PublicKey)) {
		t.Errorf("kid %q is not the rootcertbundle key thumbprint", hdr.Kid)
	}
	var c struct {
		Iss    string        `json:"iss"`
		Aud    audience      `json:"aud"`
		Exp    int64         `json:"exp"`
		Nbf    int64         `json:"nbf"`
		Access []accessEntry `json:"access"`
	}
	if err := verifyJWT(tok, leaf.PublicKey.(*rsa.PublicKey), &c); err != nil {
		t.Fatalf("signature: %v", err)
	}
	now := time.Now()
	if c.Iss != issuer || !containsString(c.Aud, service) || now.After(time.Unix(c.Exp, 0).Add(time.Minute)) || now.Before(time.Unix(c.Nbf, 0).Add(-time.Minute)) {
		t.Fatalf("claims refused: %+v", c)
	}
	return c.Access
}

func TestACRToken(t *testing.T) {
	h := newHarness(t, nil)
	rt := h.refreshToken(t)
	scopes := url.Values{"scope": {"repository:team/app:pull,push", "repository:base/img:pull registry:catalog:*"}, "service": {h.cfg.ACRAddr}}
	wantAccess := []accessEntry{
		{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "base/img", Actions: []string{"pull"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}
	check := func(t *testing.T, res result, fields ...string) {
		t.Helper()
		if res.status != http.StatusOK {
			t.Fatalf("token: %d %s", res.status, res.raw)
		}
		for _, f := range fields {
			tok, _ := res.body[f].(string)
			if tok == "" {
				t.Fatalf("no %s in %v", f, res.body)
			}
			got := verifyAsDistribution(t, h, tok)
			if len(got) != len(wantAccess) {
				t.Fatalf("access = %+v", got)
			}
			for i := range got {
				if got[i].Type != wantAccess[i].Type || got[i].Name != wantAccess[i].Name || strings.Join(got[i].Actions, ",") != strings.Join(wantAccess[i].Actions, ",") {
					t.Errorf("access[%d] = %+v, want %+v", i, got[i], wantAccess[i])
				}
			}
		}
	}
	t.Run("POST refresh_token", func(t *testing.T) {
		form := withField(scopes, "grant_type", "refresh_token")
		form.Set("refresh_token", rt)
		form.Set("client_id", "go-containerregistry")
		check(t, h.postForm(t, h.acrURL("/oauth2/token"), form), "access_token")
	})
	t.Run("POST password", func(t *testing.T) {
		form := withField(scopes, "grant_type", "password")
		form.Set("username", NullGUIDUser)
		form.Set("password", rt)
		check(t, h.postForm(t, h.acrURL("/oauth2/token"), form), "access_token")
	})
	t.Run("GET basic", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.acrURL("/oauth2/token?")+scopes.Encode(), nil)
		req.SetBasicAuth(NullGUIDUser, rt)
		check(t, h.do(t, req), "access_token", "token")
	})
	t.Run("login without scope", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.acrURL("/oauth2/token?service=")+url.QueryEscape(h.cfg.ACRAddr), nil)
		req.SetBasicAuth(NullGUIDUser, rt)
		res := h.do(t, req)
		if res.status != http.StatusOK {
			t.Fatalf("token: %d %s", res.status, res.raw)
		}
		if got := verifyAsDistribution(t, h, res.body["token"].(string)); len(got) != 0 {
			t.Errorf("access = %+v, want none", got)
		}
	})
}

func TestACRTokenRefusals(t *testing.T) {
	h := newHarness(t, nil)
	rt := h.refreshToken(t)
	refreshKey := h.key(t, FileACRRefreshTokenKey)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	reissue := func(key *rsa.PrivateKey, edit func(c map[string]any)) string {
		c := decodeClaims(t, rt)
		edit(c)
		tok, err := signJWT(key, jwtHeader{Kid: jwkThumbprint(&refreshKey.PublicKey)}, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hour := time.Hour
	form := func(refresh string) url.Values {
		return url.Values{"grant_type": {"refresh_token"}, "service": {h.cfg.ACRAddr}, "scope": {"repository:a:pull,push"}, "refresh_token": {refresh}}
	}
	post := func(f url.Values) func() result {
		return func() result { return h.postForm(t, h.acrURL("/oauth2/token"), f) }
	}
	basic := func(user, pass string) func() result {
		return func() result {
			req, _ := http.NewRequest(http.MethodGet, h.acrURL("/oauth2/token?scope=repository:a:pull&service=")+url.QueryEscape(h.cfg.ACRAddr), nil)
			if user != "" || pass != "" {
				req.SetBasicAuth(user, pass)
			}
			return h.do(t, req)
		}
	}
	for _, tc := range []struct {
		name   string
		call   func() result
		status int
		code   string
	}{
		{"anonymous GET", basic("", ""), 401, "UNAUTHORIZED"},
		{"anonymous POST", post(withField(form(rt), "refresh_token", "")), 401, "UNAUTHORIZED"},
		{"admin-style user", basic("myregistry", rt), 401, "UNAUTHORIZED"},
		{"wrong password", basic(NullGUIDUser, "not-a-token"), 401, "UNAUTHORIZED"},
		{"expired refresh token", post(form(reissue(refreshKey, func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = time.Now().Add(-4*hour).Unix(), time.Now().Add(-4*hour).Unix(), time.Now().Add(-hour).Unix()
		}))), 401, "UNAUTHORIZED"},
		{"refresh token of another registry", post(form(reissue(refreshKey, func(c map[string]any) { c["aud"] = "myregistry.azurecr.io" }))), 401, "UNAUTHORIZED"},
		{"wrong signature", post(form(reissue(otherKey, func(map[string]any) {}))), 401, "UNAUTHORIZED"},
		{"entra token as refresh token", post(form(h.entraToken(t, "https://containerregistry.azure.net/.default"))), 401, "UNAUTHORIZED"},
		{"registry access token as refresh token", post(form(accessTokenFor(t, h, rt))), 401, "UNAUTHORIZED"},
		{"other service", post(withField(form(rt), "service", "myregistry.azurecr.io")), 401, "UNAUTHORIZED"},
		{"missing service", post(withField(form(rt), "service", "")), 400, "BAD_REQUEST"},
		{"unsupported grant", post(withField(form(rt), "grant_type", "client_credentials")), 400, "UNSUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.call()
			if res.status != tc.status || acrErrorCode(res) != tc.code {
				t.Errorf("got %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
			if _, ok := res.body["access_token"]; ok {
				t.Error("a refused request got an access token")
			}
		})
	}
}

func accessTokenFor(t *testing.T, h *harness, rt string) string {
	t.Helper()
	res := h.postForm(t, h.acrURL("/oauth2/token"), url.Values{"grant_type": {"refresh_token"}, "service": {h.cfg.ACRAddr}, "scope": {"repository:a:pull"}, "refresh_token": {rt}})
	if res.status != http.StatusOK {
		t.Fatalf("token: %d %s", res.status, res.raw)
	}
	return res.body["access_token"].(string)
}

func TestACRProxy(t *testing.T) {
	var upstreamURL string
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/team/app/blobs/uploads/":
			// distribution writes absolute Locations from Host / X-Forwarded-*; an old one may use its own address.
			w.Header().Set("Location", upstreamURL+"/v2/team/app/blobs/uploads/u-1?_state=abc")
			w.Header().Set("Docker-Upload-UUID", "u-1")
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPut && r.URL.Path == "/v2/team/app/blobs/uploads/u-1":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Location", "/v2/team/app/blobs/sha256:feed")
			w.Header().Set("Docker-Content-Digest", "sha256:feed")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(b)
		case r.URL.Path == "/v2/" && r.Header.Get("Authorization") == "Bearer bad":
			w.Header().Set("WWW-Authenticate", `Bearer realm="x",service="y",error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	h := newHarness(t, upstream)
	upstreamURL = h.upstream.URL

	req, _ := http.NewRequest(http.MethodPost, h.acrURL("/v2/team/app/blobs/uploads/"), nil)
	req.Header.Set("Authorization", "Bearer tok")
	res := h.do(t, req)
	if res.status != http.StatusAccepted || res.header.Get("Location") != "https://"+h.cfg.ACRAddr+"/v2/team/app/blobs/uploads/u-1?_state=abc" || res.header.Get("Docker-Upload-UUID") != "u-1" {
		t.Errorf("POST upload: %d %v", res.status, res.header)
	}
	body := strings.Repeat("layer-bytes", 100000)
	req, _ = http.NewRequest(http.MethodPut, h.acrURL("/v2/team/app/blobs/uploads/u-1?digest=sha256:feed"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	res = h.do(t, req)
	if res.status != http.StatusCreated || res.header.Get("Docker-Content-Digest") != "sha256:feed" || res.header.Get("Location") != "/v2/team/app/blobs/sha256:feed" || res.raw != body {
		t.Errorf("PUT upload: %d %v (%d bytes back)", res.status, res.header, len(res.raw))
	}
	req, _ = http.NewRequest(http.MethodGet, h.acrURL("/v2/"), nil)
	req.Header.Set("Authorization", "Bearer bad")
	if res = h.do(t, req); res.status != http.StatusUnauthorized || !strings.Contains(res.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("a refused bearer token: %d %v", res.status, res.header)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.upstreamReqs) != 3 {
		t.Fatalf("upstream saw %d requests", len(h.upstreamReqs))
	}
	for _, r := range h.upstreamReqs {
		if r.Host != h.cfg.ACRAddr || r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("X-Forwarded-Host") != h.cfg.ACRAddr {
			t.Errorf("upstream request Host=%q X-Forwarded-Proto=%q X-Forwarded-Host=%q", r.Host, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"))
		}
	}
	if got := h.upstreamReqs[1].URL.RawQuery; got != "digest=sha256:feed" {
		t.Errorf("query = %q", got)
	}
}

func TestACRProxyBackendDown(t *testing.T) {
	h := newHarness(t, nil)
	h.upstream.Close()
	req, _ := http.NewRequest(http.MethodGet, h.acrURL("/v2/team/app/tags/list"), nil)
	req.Header.Set("Authorization", "Bearer tok")
	if res := h.do(t, req); res.status != http.StatusBadGateway || acrErrorCode(res) != "UNAVAILABLE" {
		t.Errorf("backend down: %d %s", res.status, res.raw)
	}
}

func TestParseScopes(t *testing.T) {
	got := parseScopes([]string{"repository:a/b:pull,push,bogus repository:a/b:delete", "registry:catalog:*", "artifact-repository:c:pull", "nonsense", "repository:x:", "blob:a:pull"})
	want := "repository:a/b:pull,push,delete registry:catalog:* repository:c:pull repository:x:"
	var parts []string
	for _, a := range got {
		parts = append(parts, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	if s := strings.Join(parts, " "); s != want {
		t.Errorf("parseScopes = %q, want %q", s, want)
	}
}

func TestServeLifecycle(t *testing.T) {
	dir := t.TempDir()
	copyPrepared(t, dir)
	if err := Serve(t.Context(), Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Serve with an empty config: %v", err)
	}
	cfg := Config{
		Dir: dir, EntraAddr: freeAddr(t), ACRAddr: freeAddr(t), RegistryURL: "http://127.0.0.1:1",
		TenantID: testTenant, ClientID: testClient, ClientSecret: testSecret, Logf: t.Logf,
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	pool, err := CAPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = client.Get("https://" + cfg.EntraAddr + "/" + testTenant + "/v2.0/.well-known/openid-configuration"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("entra never answered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("discovery: %d", resp.StatusCode)
	}
	resp, err = client.Get("https://localhost:" + portOf(cfg.ACRAddr) + "/v2/")
	if err != nil {
		t.Fatalf("acr via localhost: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("acr /v2/: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if _, err := net.Dial("tcp", cfg.EntraAddr); err == nil {
		t.Error("entra still listening after Serve returned")
	}
	// A taken address is an error, not a hang.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.ACRAddr = ln.Addr().String()
	if err := Serve(t.Context(), cfg); err == nil {
		t.Error("Serve on a taken address succeeded")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestLogsCarryNoSecrets(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	h := newHarness(t, nil)
	h.cfg.Logf = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&logs, format+"\n", args...)
	}
	entraH, acrH, _, err := newHandlers(h.cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	h.entra.Config.Handler = logRequests(h.cfg.Logf, "entra", entraH)
	h.acr.Config.Handler = logRequests(h.cfg.Logf, "acr", acrH)

	aad := h.entraToken(t, "https://containerregistry.azure.net/.default")
	h.postForm(t, h.entraURL("/"+testTenant+"/oauth2/v2.0/token"), url.Values{"grant_type": {"client_credentials"}, "client_id": {testClient}, "client_secret": {testSecret + "x"}, "scope": {"https://containerregistry.azure.net/.default"}})
	rt := h.exchange(t, aad).body["refresh_token"].(string)
	h.exchange(t, aad[:len(aad)-4]+"AAAA")
	req, _ := http.NewRequest(http.MethodGet, h.acrURL("/oauth2/token?scope=repository:a:pull&service=")+url.QueryEscape(h.cfg.ACRAddr), nil)
	req.SetBasicAuth(NullGUIDUser, rt)
	at := h.do(t, req).body["access_token"].(string)
	req, _ = http.NewRequest(http.MethodGet, h.acrURL("/v2/a/tags/list"), nil)
	req.Header.Set("Authorization", "Bearer "+at)
	h.do(t, req)

	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "acr: POST /oauth2/exchange -> 401") || !strings.Contains(out, "entra: POST /"+testTenant+"/oauth2/v2.0/token -> 401") {
		t.Errorf("requests not logged:\n%s", out)
	}
	for what, s := range map[string]string{"secret": testSecret, "entra token": sigOf(aad), "refresh token": sigOf(rt), "access token": sigOf(at)} {
		if strings.Contains(out, s) {
			t.Errorf("the log holds the %s:\n%s", what, out)
		}
	}
}

func sigOf(tok string) string { return tok[strings.LastIndex(tok, ".")+1:] }
