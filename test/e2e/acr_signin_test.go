package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// Scopes, user name and key files of the ACR sign-in protocol as the platform emulates it.
const (
	scopeACR        = "https://containerregistry.azure.net/.default"
	scopeARM        = "https://management.azure.com/.default"
	scopePrometheus = "https://prometheus.monitor.azure.com/.default"
	nullGUID        = "00000000-0000-0000-0000-000000000000"
	registryIssuer  = "Azure Container Registry"
)

// acrSignin holds what the sign-in tests share: the platform, an HTTP client trusting SSL_CERT_FILE
// and the emulators' signing keys, which the tests use to forge tokens the servers must refuse.
type acrSignin struct {
	env         *framework.Env
	loginServer string
	authority   string
	tenant      string
	clientID    string
	secret      string
	transport   *http.Transport
	client      *http.Client
	azDir       string
}

func newACRSignin(t *testing.T) *acrSignin {
	t.Helper()
	env := framework.Setup(t)
	s := &acrSignin{
		env:         env,
		loginServer: env.ACRLoginServer,
		authority:   env.Vars["AZURE_AUTHORITY_HOST"],
		tenant:      env.Vars["AZURE_TENANT_ID"],
		clientID:    env.Vars["AZURE_CLIENT_ID"],
		secret:      env.Vars["AZURE_CLIENT_SECRET"],
	}
	for k, v := range map[string]string{"ACR_LOGIN_SERVER": s.loginServer, "AZURE_AUTHORITY_HOST": s.authority, "AZURE_TENANT_ID": s.tenant,
		"AZURE_CLIENT_ID": s.clientID, "AZURE_CLIENT_SECRET": s.secret, "SSL_CERT_FILE": env.Vars["SSL_CERT_FILE"]} {
		if v == "" {
			t.Fatalf("platform env has no %s", k)
		}
	}
	// Trust exactly what SSL_CERT_FILE gives every other client of the platform.
	bundle, err := os.ReadFile(env.Vars["SSL_CERT_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatalf("no certificate in SSL_CERT_FILE %s", env.Vars["SSL_CERT_FILE"])
	}
	s.transport = http.DefaultTransport.(*http.Transport).Clone()
	s.transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	t.Cleanup(s.transport.CloseIdleConnections)
	s.client = &http.Client{Transport: s.transport, Timeout: time.Minute}
	s.azDir = findAzureDir(t, env.Vars["PLATFORM_DIR"])
	return s
}

// findAzureDir returns the directory where the launcher ran azemu.PrepareCerts.
func findAzureDir(t *testing.T, platformDir string) string {
	t.Helper()
	if platformDir == "" {
		t.Fatal("platform env has no PLATFORM_DIR")
	}
	if _, err := os.Stat(filepath.Join(platformDir, "azure", "entra-key.pem")); err == nil {
		return filepath.Join(platformDir, "azure")
	}
	var found string
	_ = filepath.WalkDir(platformDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if d.IsDir() && strings.Count(strings.TrimPrefix(p, platformDir), string(filepath.Separator)) > 3 {
			return filepath.SkipDir
		}
		if d.Name() == "entra-key.pem" {
			found = filepath.Dir(p)
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no entra-key.pem under %s", platformDir)
	}
	return found
}

func (s *acrSignin) rsaKey(t *testing.T, file string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.azDir, file))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("no PEM in %s", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("%s is not an RSA key", file)
	}
	return rk
}

// recorder is an azcore transport that records the requests azidentity makes.
type recorder struct {
	client *http.Client
	mu     sync.Mutex
	reqs   []string
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	return r.client.Do(req)
}

func (s *acrSignin) credential(t *testing.T, tenant, secret string, rec *recorder) *azidentity.ClientSecretCredential {
	t.Helper()
	if rec == nil {
		rec = &recorder{client: s.client}
	}
	cred, err := azidentity.NewClientSecretCredential(tenant, s.clientID, secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions:            azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: s.authority}, Transport: rec},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func (s *acrSignin) entraToken(t *testing.T, scope string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := s.credential(t, s.tenant, s.secret, nil).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
	if err != nil {
		t.Fatalf("azidentity GetToken(%s): %v", scope, err)
	}
	return tok.Token
}

// answer is a decoded HTTP response.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (s *acrSignin) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

func (s *acrSignin) postForm(t *testing.T, path string, form url.Values) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+s.loginServer+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return s.do(t, req)
}

func (s *acrSignin) exchange(t *testing.T, aad, tenant string) answer {
	t.Helper()
	form := url.Values{"grant_type": {"access_token"}, "service": {s.loginServer}, "access_token": {aad}}
	if tenant != "" {
		form.Set("tenant", tenant)
	}
	return s.postForm(t, "/oauth2/exchange", form)
}

func (s *acrSignin) accessToken(t *testing.T, refresh string, scopes ...string) answer {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "service": {s.loginServer}, "refresh_token": {refresh}, "scope": scopes}
	return s.postForm(t, "/oauth2/token", form)
}

// registryGet calls the registry API through the login server with a bearer token.
func (s *acrSignin) registryGet(t *testing.T, path, bearer string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+s.loginServer+path, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return s.do(t, req)
}

func randomRepo(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func claimsOf(t *testing.T, tok string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatalf("not a JWT: %v", err)
	}
	return c
}

// forge signs claims with key under header fields hdr (kid, x5c, ...).
func forge(t *testing.T, key *rsa.PrivateKey, claims jwt.MapClaims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func copyClaims(c jwt.MapClaims, edit func(jwt.MapClaims)) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	edit(out)
	return out
}

func expire(c jwt.MapClaims) {
	now := time.Now()
	c["iat"], c["nbf"], c["exp"] = now.Add(-3*time.Hour).Unix(), now.Add(-3*time.Hour).Unix(), now.Add(-2*time.Hour).Unix()
}

// jwksKeyfunc resolves a token's kid in the JWKS the discovery document points at.
func (s *acrSignin) jwksKeyfunc(t *testing.T) jwt.Keyfunc {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(s.authority, "/")+"/"+s.tenant+"/v2.0/.well-known/openid-configuration", nil)
	disc := s.do(t, req)
	jwksURI, _ := disc.body["jwks_uri"].(string)
	if disc.status != http.StatusOK || jwksURI == "" {
		t.Fatalf("discovery: %d %s", disc.status, disc.raw)
	}
	req, _ = http.NewRequest(http.MethodGet, jwksURI, nil)
	set := s.do(t, req)
	keys, _ := set.body["keys"].([]any)
	if set.status != http.StatusOK || len(keys) == 0 {
		t.Fatalf("jwks: %d %s", set.status, set.raw)
	}
	return func(tok *jwt.Token) (any, error) {
		for _, k := range keys {
			m, _ := k.(map[string]any)
			if m["kid"] != tok.Header["kid"] || m["kty"] != "RSA" {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(fmt.Sprint(m["n"]))
			e, err2 := base64.RawURLEncoding.DecodeString(fmt.Sprint(m["e"]))
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
		}
		return nil, fmt.Errorf("kid %v not in the JWKS", tok.Header["kid"])
	}
}

// TestACRSignIn proves the whole sign-in chain with real clients: the azidentity credential gets an
// Entra token from the emulated tenant, ACR exchanges it for a refresh token and that for an access
// token the real distribution registry accepts, and go-containerregistry and helm push through it.
func TestACRSignIn(t *testing.T) {
	s := newACRSignin(t)

	var aad string
	t.Run("azidentity client secret credential", func(t *testing.T) {
		rec := &recorder{client: s.client}
		cred := s.credential(t, s.tenant, s.secret, rec)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scopeACR}})
		if err != nil {
			t.Fatalf("GetToken: %v", err)
		}
		aad = tok.Token
		if d := time.Until(tok.ExpiresOn); d < 55*time.Minute || d > 61*time.Minute {
			t.Errorf("ExpiresOn in %v, want about 1h", d)
		}
		want := []string{"GET /" + s.tenant + "/v2.0/.well-known/openid-configuration", "POST /" + s.tenant + "/oauth2/v2.0/token"}
		if strings.Join(rec.reqs, "\n") != strings.Join(want, "\n") {
			t.Errorf("azidentity requests:\n%s\nwant:\n%s", strings.Join(rec.reqs, "\n"), strings.Join(want, "\n"))
		}
		// The token verifies with the key the tenant publishes, and carries the claims ACR reads.
		c := jwt.MapClaims{}
		if _, err := jwt.ParseWithClaims(aad, c, s.jwksKeyfunc(t), jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt()); err != nil {
			t.Fatalf("token does not verify with the published keys: %v", err)
		}
		iss, _ := c["iss"].(string)
		if c["aud"] != "https://containerregistry.azure.net" || c["tid"] != s.tenant || c["appid"] != s.clientID || c["oid"] == nil ||
			!strings.HasPrefix(iss, strings.TrimSuffix(s.authority, "/")+"/"+s.tenant) {
			t.Errorf("claims = %v", c)
		}
		// A second call is served from azidentity's cache, as with real Entra.
		if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scopeACR}}); err != nil || len(rec.reqs) != 2 {
			t.Errorf("cached GetToken: %v, %d requests", err, len(rec.reqs))
		}
		for scope, aud := range map[string]string{scopeARM: "https://management.azure.com/", scopePrometheus: "https://prometheus.monitor.azure.com",
			"https://api.loganalytics.io/.default": "https://api.loganalytics.io"} {
			if got := claimsOf(t, s.entraToken(t, scope))["aud"]; got != aud {
				t.Errorf("aud for %s = %v, want %s", scope, got, aud)
			}
		}
	})
	if aad == "" {
		t.FailNow()
	}

	t.Run("azidentity workload identity credential", func(t *testing.T) {
		// A projected service account token, as the AKS workload identity webhook mounts it.
		saKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		assertion := func(aud string) string {
			now := time.Now()
			return forge(t, saKey, jwt.MapClaims{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ml:trainer",
				"aud": []string{aud}, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}, map[string]any{"kid": "sa"})
		}
		getToken := func(aud string) (azcore.AccessToken, error) {
			file := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(file, []byte(assertion(aud)), 0o600); err != nil {
				t.Fatal(err)
			}
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				ClientOptions: azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: s.authority}, Transport: &recorder{client: s.client}},
				ClientID:      s.clientID, TenantID: s.tenant, TokenFilePath: file, DisableInstanceDiscovery: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scopeACR}})
		}
		tok, err := getToken("api://AzureADTokenExchange")
		if err != nil {
			t.Fatalf("GetToken: %v", err)
		}
		if c := claimsOf(t, tok.Token); c["aud"] != "https://containerregistry.azure.net" || c["appidacr"] != "2" {
			t.Errorf("claims = %v", c)
		}
		if a := s.exchange(t, tok.Token, s.tenant); a.status != http.StatusOK {
			t.Errorf("exchange of a workload identity token: %d %s", a.status, a.raw)
		}
		if _, err := getToken("https://kubernetes.default.svc"); err == nil || !strings.Contains(err.Error(), "AADSTS700211") {
			t.Errorf("GetToken with an assertion for another audience: %v", err)
		}
	})

	t.Run("challenge", func(t *testing.T) {
		a := s.registryGet(t, "/v2/", "")
		want := fmt.Sprintf(`Bearer realm="https://%s/oauth2/token",service="%s"`, s.loginServer, s.loginServer)
		if a.status != http.StatusUnauthorized || a.header.Get("WWW-Authenticate") != want {
			t.Errorf("GET /v2/: %d %q, want 401 %q", a.status, a.header.Get("WWW-Authenticate"), want)
		}
	})

	var refresh string
	t.Run("exchange", func(t *testing.T) {
		a := s.exchange(t, aad, s.tenant)
		refresh, _ = a.body["refresh_token"].(string)
		if a.status != http.StatusOK || refresh == "" {
			t.Fatalf("exchange: %d %s", a.status, a.raw)
		}
		c := claimsOf(t, refresh)
		if c["aud"] != s.loginServer || c["iss"] != registryIssuer || c["grant_type"] != "refresh_token" || c["tenant"] != s.tenant {
			t.Errorf("refresh token claims = %v", c)
		}
		// ARM-audience tokens are accepted too (authentication-as-arm is enabled by default); no tenant field is needed.
		if a := s.exchange(t, s.entraToken(t, scopeARM), ""); a.status != http.StatusOK {
			t.Errorf("exchange of an ARM token: %d %s", a.status, a.raw)
		}
	})
	if refresh == "" {
		t.FailNow()
	}

	repo := randomRepo("e2e/acr-signin")
	var access string
	t.Run("access token", func(t *testing.T) {
		a := s.accessToken(t, refresh, "repository:"+repo+":pull,push")
		access, _ = a.body["access_token"].(string)
		if a.status != http.StatusOK || access == "" {
			t.Fatalf("token: %d %s", a.status, a.raw)
		}
		c := claimsOf(t, access)
		want := `[{"actions":["pull","push"],"name":"` + repo + `","type":"repository"}]`
		if got, _ := json.Marshal(c["access"]); string(got) != want || c["aud"] != s.loginServer || c["iss"] != registryIssuer {
			t.Errorf("access claims = %v", c)
		}
		// The bare ping succeeds with the token: the real registry accepted it.
		if a := s.registryGet(t, "/v2/", access); a.status != http.StatusOK {
			t.Errorf("GET /v2/ with the access token: %d %s", a.status, a.raw)
		}
	})
	if access == "" {
		t.FailNow()
	}

	opts := func(auth authn.Authenticator) []remote.Option {
		return []remote.Option{remote.WithAuth(auth), remote.WithTransport(s.transport), remote.WithContext(context.Background())}
	}
	pushAndReadBack := func(t *testing.T, ref string, auth authn.Authenticator) {
		t.Helper()
		img, err := random.Image(256*1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img, opts(auth)...); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		want, _ := img.Digest()
		got, err := remote.Image(r, opts(auth)...)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Errorf("pulled digest %s, pushed %s", d, want)
		}
		// Layers stream back through the login server byte for byte.
		layers, err := got.Layers()
		if err != nil || len(layers) != 2 {
			t.Fatalf("layers: %v (%d)", err, len(layers))
		}
		ld, _ := layers[0].Digest()
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil || ld != (v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}) {
			t.Errorf("layer read back as sha256:%x (%v), want %s", h.Sum(nil), err, ld)
		}
	}

	t.Run("push with bearer access token", func(t *testing.T) {
		pushAndReadBack(t, s.loginServer+"/"+repo+":v1", &authn.Bearer{Token: access})
	})
	t.Run("push with null GUID and refresh token (basic)", func(t *testing.T) {
		pushAndReadBack(t, s.loginServer+"/"+randomRepo("e2e/acr-basic")+":v1", &authn.Basic{Username: nullGUID, Password: refresh})
	})
	t.Run("push with refresh token as identity token (oauth2)", func(t *testing.T) {
		pushAndReadBack(t, s.loginServer+"/"+randomRepo("e2e/acr-identity")+":v1", authn.FromConfig(authn.AuthConfig{IdentityToken: refresh}))
	})

	t.Run("helm registry login and push", func(t *testing.T) {
		helm := s.env.Vars["HELM_BIN"]
		if helm == "" {
			t.Fatal("platform env has no HELM_BIN")
		}
		home := t.TempDir()
		run := func(args ...string) framework.Result {
			t.Helper()
			cmd := s.env.Command(helm, args...)
			cmd.Env = append(cmd.Env, "HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
				"HELM_DATA_HOME="+filepath.Join(home, "data"), "HELM_REGISTRY_CONFIG="+filepath.Join(home, "registry.json"))
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			res := framework.Result{Stdout: out.String(), Stderr: errb.String()}
			var ee interface{ ExitCode() int }
			if errors.As(err, &ee) {
				res.Code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("helm %s: %v", args[0], err)
			}
			t.Logf("$ helm %s (exit %d)", args[0], res.Code)
			return res
		}
		if r := run("registry", "login", s.loginServer, "--username", nullGUID, "--password", "wrong-"+refresh[:8]); r.Code == 0 {
			t.Error("helm registry login with a wrong password succeeded")
		}
		if r := run("registry", "login", s.loginServer, "--username", nullGUID, "--password", refresh); r.Code != 0 {
			t.Fatalf("helm registry login: %s", r.Stderr)
		}
		chart := filepath.Join(home, "signin")
		if err := os.MkdirAll(filepath.Join(chart, "templates"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: signin\nversion: 0.1.0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := run("package", chart, "-d", home); r.Code != 0 {
			t.Fatalf("helm package: %s", r.Stderr)
		}
		r := run("push", filepath.Join(home, "signin-0.1.0.tgz"), "oci://"+s.loginServer+"/"+randomRepo("e2e/charts"))
		if r.Code != 0 || !strings.Contains(r.Stdout+r.Stderr, "Digest: sha256:") {
			t.Fatalf("helm push: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		s.refusals(t, aad, refresh, access, repo)
	})

	t.Run("no token or secret in the platform logs", func(t *testing.T) {
		logs, _ := filepath.Glob(filepath.Join(s.env.Vars["PLATFORM_DIR"], "logs", "*.log"))
		if len(logs) == 0 {
			t.Fatal("no platform logs found")
		}
		for _, l := range logs {
			b, err := os.ReadFile(l)
			if err != nil {
				t.Fatal(err)
			}
			for what, secret := range map[string]string{"client secret": s.secret, "entra token": aad, "refresh token": refresh, "access token": access} {
				// A JWT's signature part is unique to the token: finding it means the token leaked.
				if needle := secret[strings.LastIndex(secret, ".")+1:]; bytes.Contains(b, []byte(needle)) {
					t.Errorf("%s appears in %s", what, l)
				}
			}
		}
	})
}

// refusals proves each bad credential is refused, by the emulated Entra ID, by the ACR token service
// or by the real registry behind the login server.
func (s *acrSignin) refusals(t *testing.T, aad, refresh, access, repo string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("entra: wrong client secret", func(t *testing.T) {
		_, err := s.credential(t, s.tenant, s.secret+"-wrong", nil).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scopeACR}})
		var afe *azidentity.AuthenticationFailedError
		if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != http.StatusUnauthorized ||
			!strings.Contains(err.Error(), "AADSTS7000215") || !strings.Contains(err.Error(), "invalid_client") {
			t.Errorf("GetToken with a wrong secret: %v", err)
		}
		if strings.Contains(fmt.Sprint(err), s.secret) {
			t.Error("the error repeats the secret")
		}
	})
	t.Run("entra: unknown tenant", func(t *testing.T) {
		_, err := s.credential(t, "00000000-1111-2222-3333-444444444444", s.secret, nil).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scopeACR}})
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("GetToken for an unknown tenant: %v", err)
		}
	})

	entraKey := s.rsaKey(t, "entra-key.pem")
	refreshKey := s.rsaKey(t, "acr-refresh-key.pem")
	tokenKey := s.rsaKey(t, "registry-token-key.pem")
	strange, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	aadClaims, aadHdr := claimsOf(t, aad), headerOf(t, aad)
	for _, tc := range []struct{ name, token, tenant string }{
		{"expired entra token", forge(t, entraKey, copyClaims(aadClaims, expire), aadHdr), s.tenant},
		{"entra token for another audience", s.entraToken(t, scopePrometheus), s.tenant},
		{"entra token with a wrong signature", forge(t, strange, aadClaims, aadHdr), s.tenant},
		{"entra token of another tenant", forge(t, entraKey, copyClaims(aadClaims, func(c jwt.MapClaims) { c["tid"] = "00000000-1111-2222-3333-444444444444" }), aadHdr), ""},
		{"tenant field mismatch", aad, "00000000-1111-2222-3333-444444444444"},
	} {
		t.Run("exchange: "+tc.name, func(t *testing.T) {
			a := s.exchange(t, tc.token, tc.tenant)
			if a.status != http.StatusUnauthorized || acrCode(a) != "UNAUTHORIZED" || a.body["refresh_token"] != nil {
				t.Errorf("got %d %s, want 401 UNAUTHORIZED", a.status, a.raw)
			}
		})
	}

	rtClaims, rtHdr := claimsOf(t, refresh), headerOf(t, refresh)
	for _, tc := range []struct{ name, token string }{
		{"expired refresh token", forge(t, refreshKey, copyClaims(rtClaims, expire), rtHdr)},
		{"refresh token with a wrong signature", forge(t, strange, rtClaims, rtHdr)},
		{"refresh token for another registry", forge(t, refreshKey, copyClaims(rtClaims, func(c jwt.MapClaims) { c["aud"] = "contoso.azurecr.io" }), rtHdr)},
		{"entra token as refresh token", aad},
	} {
		t.Run("token: "+tc.name, func(t *testing.T) {
			a := s.accessToken(t, tc.token, "repository:"+repo+":pull")
			if a.status != http.StatusUnauthorized || acrCode(a) != "UNAUTHORIZED" || a.body["access_token"] != nil {
				t.Errorf("got %d %s, want 401 UNAUTHORIZED", a.status, a.raw)
			}
		})
	}
	t.Run("token: anonymous", func(t *testing.T) {
		a := s.registryGet(t, "/oauth2/token?service="+url.QueryEscape(s.loginServer)+"&scope=repository:"+repo+":pull", "")
		if a.status != http.StatusUnauthorized || a.body["access_token"] != nil {
			t.Errorf("anonymous token: %d %s", a.status, a.raw)
		}
	})
	t.Run("push: basic with a wrong password", func(t *testing.T) {
		img, _ := random.Image(1024, 1)
		r, _ := name.ParseReference(s.loginServer + "/" + repo + ":bad")
		err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: nullGUID, Password: "not-a-refresh-token"}), remote.WithTransport(s.transport))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("push with a wrong password: %v", err)
		}
	})

	// The registry itself refuses access tokens it must not trust.
	acClaims, acHdr := claimsOf(t, access), headerOf(t, access)
	tags := "/v2/" + repo + "/tags/list"
	if a := s.registryGet(t, tags, access); a.status != http.StatusOK {
		t.Fatalf("tags with the valid access token: %d %s", a.status, a.raw)
	}
	for _, tc := range []struct{ name, token, path string }{
		{"expired access token", forge(t, tokenKey, copyClaims(acClaims, expire), acHdr), tags},
		{"access token for another audience", forge(t, tokenKey, copyClaims(acClaims, func(c jwt.MapClaims) { c["aud"] = "contoso.azurecr.io" }), acHdr), tags},
		{"access token from another issuer", forge(t, tokenKey, copyClaims(acClaims, func(c jwt.MapClaims) { c["iss"] = "someone else" }), acHdr), tags},
		{"access token with a wrong signature", forge(t, strange, acClaims, acHdr), tags},
		{"access token for another repository", access, "/v2/" + randomRepo("e2e/other") + "/tags/list"},
		{"refresh token as access token", refresh, tags},
		{"entra token as access token", aad, tags},
	} {
		t.Run("registry: "+tc.name, func(t *testing.T) {
			a := s.registryGet(t, tc.path, tc.token)
			if a.status != http.StatusUnauthorized || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), `Bearer realm="https://`+s.loginServer+`/oauth2/token"`) {
				t.Errorf("got %d %q %s, want 401 with the login server's challenge", a.status, a.header.Get("WWW-Authenticate"), a.raw)
			}
		})
	}
}

func headerOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	hdr := map[string]any{}
	for k, v := range parsed.Header {
		if k != "alg" && k != "typ" {
			hdr[k] = v
		}
	}
	return hdr
}

func acrCode(a answer) string {
	errs, _ := a.body["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	m, _ := errs[0].(map[string]any)
	c, _ := m["code"].(string)
	return c
}
