package azemu

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestEntraDiscovery(t *testing.T) {
	h := newHarness(t, nil)
	res := h.get(t, h.entraURL("/"+testTenant+"/v2.0/.well-known/openid-configuration"))
	if res.status != http.StatusOK {
		t.Fatalf("discovery: %d %s", res.status, res.raw)
	}
	base := "https://" + h.cfg.EntraAddr + "/" + testTenant
	want := map[string]string{
		"token_endpoint":         base + "/oauth2/v2.0/token",
		"authorization_endpoint": base + "/oauth2/v2.0/authorize",
		"issuer":                 base + "/v2.0",
		"jwks_uri":               base + "/discovery/v2.0/keys",
	}
	for k, v := range want {
		if res.body[k] != v {
			t.Errorf("%s = %v, want %s", k, res.body[k], v)
		}
	}

	res = h.get(t, h.entraURL("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"))
	if code, n := aadError(res); res.status != http.StatusBadRequest || code != "invalid_request" || n != 90002 {
		t.Errorf("unknown tenant discovery: %d %s %v", res.status, code, n)
	}
}

// jwksKey fetches the JWKS and returns the RSA key with kid.
func jwksKey(t *testing.T, h *harness, kid string) *rsa.PublicKey {
	t.Helper()
	res := h.get(t, h.entraURL("/"+testTenant+"/discovery/v2.0/keys"))
	if res.status != http.StatusOK {
		t.Fatalf("keys: %d", res.status)
	}
	var set struct {
		Keys []struct{ Kty, Kid, N, E, Use string }
	}
	if err := json.Unmarshal([]byte(res.raw), &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if k.Kid != kid {
			continue
		}
		n, err1 := b64.DecodeString(k.N)
		e, err2 := b64.DecodeString(k.E)
		if err1 != nil || err2 != nil || k.Kty != "RSA" || k.Use != "sig" {
			t.Fatalf("bad JWK %+v", k)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	t.Fatalf("kid %q not in JWKS", kid)
	return nil
}

func TestEntraClientCredentials(t *testing.T) {
	h := newHarness(t, nil)
	for scope, aud := range map[string]string{
		"https://containerregistry.azure.net/.default openid offline_access profile": "https://containerregistry.azure.net",
		"https://management.azure.com/.default":                                      "https://management.azure.com/",
		"https://management.azure.com//.default":                                     "https://management.azure.com/",
		"https://prometheus.monitor.azure.com/.default":                              "https://prometheus.monitor.azure.com",
		"https://api.loganalytics.io/.default":                                       "https://api.loganalytics.io",
	} {
		t.Run(aud, func(t *testing.T) {
			start := time.Now()
			res := h.postForm(t, h.entraURL("/"+testTenant+"/oauth2/v2.0/token"), url.Values{
				"grant_type": {"client_credentials"}, "client_id": {testClient}, "client_secret": {testSecret}, "scope": {scope},
				"client_info": {"1"},
			})
			if res.status != http.StatusOK {
				t.Fatalf("token: %d %s", res.status, res.raw)
			}
			if res.body["token_type"] != "Bearer" || res.body["expires_in"] != float64(3600) || res.body["ext_expires_in"] != float64(3600) {
				t.Errorf("response = %v", res.body)
			}
			tok := res.body["access_token"].(string)
			hdr := decodeHeader(t, tok)
			if hdr.Alg != "RS256" || hdr.Kid == "" {
				t.Errorf("header = %+v", hdr)
			}
			var c map[string]any
			if err := verifyJWT(tok, jwksKey(t, h, hdr.Kid), &c); err != nil {
				t.Fatalf("token does not verify with the JWKS key: %v", err)
			}
			wantIss := "https://" + h.cfg.EntraAddr + "/" + testTenant + "/"
			if c["aud"] != aud || c["tid"] != testTenant || c["appid"] != testClient || c["iss"] != wantIss || c["oid"] == "" || c["sub"] != c["oid"] {
				t.Errorf("claims = %v", c)
			}
			exp, iat, nbf := int64(c["exp"].(float64)), int64(c["iat"].(float64)), int64(c["nbf"].(float64))
			if exp-iat != 3600 || nbf != iat || iat < start.Unix()-1 || iat > time.Now().Unix()+1 {
				t.Errorf("exp/iat/nbf = %d/%d/%d", exp, iat, nbf)
			}
		})
	}
}

func TestEntraRefusals(t *testing.T) {
	h := newHarness(t, nil)
	ok := url.Values{"grant_type": {"client_credentials"}, "client_id": {testClient}, "client_secret": {testSecret}, "scope": {"https://containerregistry.azure.net/.default"}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range ok {
			f[kk] = vv
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	tokenPath := "/" + testTenant + "/oauth2/v2.0/token"
	for _, tc := range []struct {
		name   string
		path   string
		form   url.Values
		status int
		code   string
		aadsts float64
	}{
		{"wrong secret", tokenPath, with("client_secret", "nope"), 401, "invalid_client", 7000215},
		{"no credential", tokenPath, with("client_secret", ""), 401, "invalid_client", 7000216},
		{"unknown client", tokenPath, with("client_id", "99999999-0000-0000-0000-000000000000"), 400, "unauthorized_client", 700016},
		{"unknown tenant", "/00000000-1111-2222-3333-444444444444/oauth2/v2.0/token", ok, 400, "invalid_request", 90002},
		{"common tenant", "/common/oauth2/v2.0/token", ok, 400, "invalid_request", 90002},
		{"unsupported grant", tokenPath, with("grant_type", "password"), 400, "unsupported_grant_type", 70003},
		{"no grant", tokenPath, with("grant_type", ""), 400, "invalid_request", 900144},
		{"no scope", tokenPath, with("scope", ""), 400, "invalid_request", 900144},
		{"scope without .default", tokenPath, with("scope", "https://containerregistry.azure.net/user_impersonation"), 400, "invalid_scope", 1002012},
		{"unknown resource", tokenPath, with("scope", "https://example.com/.default"), 400, "invalid_resource", 500011},
		{"two resources", tokenPath, with("scope", "https://containerregistry.azure.net/.default https://management.azure.com/.default"), 400, "invalid_scope", 70011},
		{"assertion of wrong type", tokenPath, withAssertion(ok, "x.y.z", "urn:other"), 400, "invalid_request", 90048},
		{"assertion for another audience", tokenPath, withAssertion(ok, unsignedJWT(map[string]any{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ns:sa", "aud": "https://kubernetes.default.svc", "exp": time.Now().Add(time.Hour).Unix()}), assertionType), 401, "invalid_client", 700211},
		{"expired assertion", tokenPath, withAssertion(ok, unsignedJWT(map[string]any{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ns:sa", "aud": federatedAudience, "exp": time.Now().Add(-time.Hour).Unix()}), assertionType), 401, "invalid_client", 700211},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.postForm(t, h.entraURL(tc.path), tc.form)
			code, n := aadError(res)
			if res.status != tc.status || code != tc.code || n != tc.aadsts {
				t.Errorf("got %d %s AADSTS%v, want %d %s AADSTS%v", res.status, code, n, tc.status, tc.code, tc.aadsts)
			}
			if _, ok := res.body["access_token"]; ok {
				t.Error("a refused request got a token")
			}
			desc, _ := res.body["error_description"].(string)
			if !strings.HasPrefix(desc, "AADSTS") || strings.Contains(desc, testSecret) {
				t.Errorf("error_description = %q", desc)
			}
		})
	}
}

func TestEntraFederatedAssertion(t *testing.T) {
	h := newHarness(t, nil)
	assertion := unsignedJWT(map[string]any{
		"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ml:trainer",
		"aud": []string{federatedAudience}, "exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Unix(),
	})
	res := h.postForm(t, h.entraURL("/"+testTenant+"/oauth2/v2.0/token"), url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClient}, "scope": {"https://management.azure.com/.default"},
		"client_assertion_type": {assertionType}, "client_assertion": {assertion},
	})
	if res.status != http.StatusOK {
		t.Fatalf("federated token: %d %s", res.status, res.raw)
	}
	c := decodeClaims(t, res.body["access_token"].(string))
	if c["aud"] != "https://management.azure.com/" || c["appidacr"] != "2" {
		t.Errorf("claims = %v", c)
	}
}

func withAssertion(base url.Values, assertion, typ string) url.Values {
	f := url.Values{}
	for k, v := range base {
		f[k] = v
	}
	f.Del("client_secret")
	f.Set("client_assertion", assertion)
	f.Set("client_assertion_type", typ)
	return f
}

// unsignedJWT builds a JWT whose signature is junk, as a projected token from a foreign issuer looks here.
func unsignedJWT(claims map[string]any) string {
	k, _ := rsa.GenerateKey(rand.Reader, 1024)
	tok, _ := signJWT(k, jwtHeader{Kid: "foreign"}, claims)
	return tok
}
