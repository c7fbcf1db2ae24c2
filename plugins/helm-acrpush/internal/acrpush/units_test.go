package acrpush

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"helm.sh/helm/v3/pkg/chart"
)

func TestParseDestination(t *testing.T) {
	tests := []struct {
		in, registry, prefix, err string
	}{
		{in: "myacr", registry: "myacr.azurecr.io"},
		{in: "MyAcr01/team/apps", registry: "myacr01.azurecr.io", prefix: "team/apps"},
		{in: "myacr.azurecr.io/", registry: "myacr.azurecr.io"},
		{in: "oci://myacr.azurecr.io/charts", registry: "myacr.azurecr.io", prefix: "charts"},
		{in: "127.0.0.1:5000/a/b", registry: "127.0.0.1:5000", prefix: "a/b"},
		{in: "localhost/x", registry: "localhost", prefix: "x"},
		{in: "", err: "registry is empty (want a login server such as myacr.azurecr.io, or an ACR name)"},
		{in: "ab", err: `registry "ab": an ACR name has 5 to 50 letters and digits; give a full login server for other registries`},
		{in: "my_acr", err: `registry "my_acr" is not a valid host name`},
		{in: "https://myacr.azurecr.io", err: `registry "https://myacr.azurecr.io": only a host name is expected, without a scheme`},
		{in: "https://bot:s3cret@myacr.azurecr.io", err: `registry "https://bot:xxxxx@myacr.azurecr.io": only a host name is expected, without a scheme`},
		{in: "myacr/Team", err: `repository prefix "Team" is invalid (lower-case letters, digits and . _ - separated by /)`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := ParseDestination(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || d.Registry != tt.registry || d.Prefix != tt.prefix {
				t.Fatalf("got %+v, %v", d, err)
			}
		})
	}
}

func TestImageRefMapping(t *testing.T) {
	dst := Destination{Registry: "myacr.azurecr.io", Prefix: "mirror"}
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct{ in, source, target string }{
		{"nginx", "index.docker.io/library/nginx:latest", "myacr.azurecr.io/mirror/library/nginx:latest"},
		{"nginx:1.25", "index.docker.io/library/nginx:1.25", "myacr.azurecr.io/mirror/library/nginx:1.25"},
		{"ghcr.io/org/app:v1", "ghcr.io/org/app:v1", "myacr.azurecr.io/mirror/org/app:v1"},
		{"ghcr.io/org/app@" + dg, "ghcr.io/org/app@" + dg, "myacr.azurecr.io/mirror/org/app@" + dg},
		{"ghcr.io/org/app:v1@" + dg, "ghcr.io/org/app:v1@" + dg, "myacr.azurecr.io/mirror/org/app:v1"},
		{"127.0.0.1:5000/team/web:1.0", "127.0.0.1:5000/team/web:1.0", "myacr.azurecr.io/mirror/team/web:1.0"},
	}
	for _, tt := range tests {
		r, err := newImageRef(tt.in, dst)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if r.Source != tt.source || r.Target() != tt.target {
			t.Errorf("%s: source %s target %s, want %s %s", tt.in, r.Source, r.Target(), tt.source, tt.target)
		}
	}
	if _, err := newImageRef("UPPER/case:1", dst); err == nil {
		t.Error("invalid reference accepted")
	}
}

func TestFindImagesEveryPodSpec(t *testing.T) {
	rendered := map[string]string{
		"c/templates/all.yaml": `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: a, image: "pod:1"}]
  ephemeralContainers: [{name: dbg, image: "debug:1"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: s}
spec: {template: {spec: {containers: [{name: a, image: "sts:1"}], initContainers: [{name: i, image: "init:1"}]}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: d}
spec: {template: {spec: {containers: [{name: a, image: "ds:1"}]}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: r}
spec: {template: {spec: {containers: [{name: a, image: "rs:1"}]}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec: {template: {spec: {containers: [{name: a, image: "job:1"}]}}}
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: dep}
  spec: {template: {spec: {containers: [{name: a, image: "dep:1"}]}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {image: "not-an-image:1"}
`,
		"c/templates/NOTES.txt":    "image: nope",
		"c/templates/_helpers.tpl": "",
	}
	// x names no rendered container: kept. a is rendered with other images: old-a:0 is superseded,
	// dep:1 is one of them.
	ch := &chart.Chart{Metadata: &chart.Metadata{Name: "c", Annotations: map[string]string{ArtifactHubImagesAnnotation: "- name: x\n  image: annotated:1\n- name: a\n  image: old-a:0\n- name: a\n  image: dep:1\n"}}}
	sub := &chart.Chart{Metadata: &chart.Metadata{Name: "sub", Annotations: map[string]string{ArtifactHubImagesAnnotation: "- name: y\n  image: subchart:1\n"}}}
	ch.AddDependency(sub)
	found, superseded, err := FindImages(rendered, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(superseded) != 1 || superseded[0].Image != "old-a:0" || superseded[0].Container != "a" || !slices.Contains(superseded[0].Rendered, "dep:1") {
		t.Errorf("superseded = %+v", superseded)
	}
	var got []string
	for _, f := range found {
		got = append(got, f.Ref)
	}
	want := "annotated:1 debug:1 dep:1 ds:1 init:1 job:1 pod:1 rs:1 sts:1 subchart:1"
	if strings.Join(got, " ") != want {
		t.Errorf("images = %v, want %s", got, want)
	}
	if _, _, err := FindImages(map[string]string{"c/templates/x.yaml": "kind: [oops"}, nil); err == nil {
		t.Error("broken YAML accepted")
	}
}

func TestLoadChartIsReproducible(t *testing.T) {
	f := &fixture{src: &testRegistry{Host: "src.example"}, workerRef: "src.example/w:1", apiRef: "src.example/a:1"}
	dir := f.writeChart(t)
	a, err := LoadChart(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadChart(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	aa, _ := newChartArtifact(a)
	bb, _ := newChartArtifact(b)
	if aa.digest != bb.digest {
		t.Errorf("packaging twice gave %s and %s", aa.digest, bb.digest)
	}
	// The packaged archive loads back and a .tgz is pushed byte for byte.
	tgz := filepath.Join(t.TempDir(), "shop-0.3.0.tgz")
	if err := os.WriteFile(tgz, a.Archive, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadChart(tgz, "")
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Archive) != string(a.Archive) || len(c.Chart.Templates) != len(a.Chart.Templates) {
		t.Error("archive did not round-trip")
	}
	v, err := LoadChart(dir, "0.4.0+build.1")
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Ref(Destination{Registry: "r.io", Prefix: "p"}); got != "r.io/p/shop:0.4.0_build.1" {
		t.Errorf("ref = %s", got)
	}
	if _, err := LoadChart(filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("missing chart accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadChart(dir, ""); err == nil || !strings.Contains(err.Error(), "dependencies redis are missing from charts/ (run 'helm dependency build')") {
		t.Errorf("err = %v", err)
	}
}

func TestReadValues(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	os.WriteFile(a, []byte("image: {repository: x, tag: '1'}\nkeep: true\n"), 0o644)
	os.WriteFile(b, []byte("image: {tag: '2'}\n"), 0o644)
	v, err := ReadValues([]string{a, b}, []string{"image.pullPolicy=Always", "list={a,b}"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(v)
	if string(got) != `{"image":{"pullPolicy":"Always","repository":"x","tag":"2"},"keep":true,"list":["a","b"]}` {
		t.Errorf("values = %s", got)
	}
	if _, err := ReadValues([]string{filepath.Join(dir, "none.yaml")}, nil); err == nil {
		t.Error("missing values file accepted")
	}
	if _, err := ReadValues(nil, []string{"a.b[x]=1"}); err == nil {
		t.Error("bad --set accepted")
	}
}

// fakeCredential hands out a fixed token per scope, or fails.
type fakeCredential struct {
	tokens map[string]string
	err    error
	calls  atomic.Int64
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	return azcore.AccessToken{Token: c.tokens[o.Scopes[0]], ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(b) + ".sig"
}

func TestEntraAuth(t *testing.T) {
	const acrScope, armScope = "https://containerregistry.azure.net/.default", "https://management.azure.com/.default"
	acrTok := jwt(map[string]any{"tid": "tenant-1", "aud": "acr"})
	armTok := jwt(map[string]any{"tid": "tenant-1", "aud": "arm"})
	refresh := jwt(map[string]any{"exp": time.Now().Add(3 * time.Hour).Unix()})
	var accept atomic.Value // which access token the exchange accepts
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth2/exchange" {
			http.NotFound(w, r)
			return
		}
		_ = r.ParseForm()
		got.Store(r.PostForm.Encode())
		if r.PostForm.Get("access_token") != accept.Load() || r.PostForm.Get("grant_type") != "access_token" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"token not accepted"}]}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"refresh_token": refresh})
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	newAuth := func(cred azcore.TokenCredential) *EntraAuth {
		return &EntraAuth{Registry: host, Credential: cred, Scopes: []string{acrScope, armScope}, PlainHTTP: true}
	}
	cred := &fakeCredential{tokens: map[string]string{acrScope: acrTok, armScope: armTok}}

	t.Run("acr audience", func(t *testing.T) {
		accept.Store(acrTok)
		a := newAuth(cred)
		ac, err := authn.Authorization(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		if ac.Username != NullGUID || ac.Password != refresh || ac.IdentityToken != refresh {
			t.Errorf("auth config = %+v", ac)
		}
		form := got.Load().(string)
		if !strings.Contains(form, "service="+url.QueryEscape(host)) || !strings.Contains(form, "tenant=tenant-1") {
			t.Errorf("exchange form = %s", form)
		}
		// Cached: no second sign-in.
		before := cred.calls.Load()
		if _, err := a.RefreshToken(context.Background()); err != nil || cred.calls.Load() != before {
			t.Errorf("refresh token not cached (%v)", err)
		}
	})
	t.Run("arm fallback", func(t *testing.T) {
		accept.Store(armTok)
		if _, err := newAuth(cred).RefreshToken(context.Background()); err != nil {
			t.Fatalf("ARM fallback: %v", err)
		}
	})
	t.Run("exchange refused", func(t *testing.T) {
		accept.Store("nothing")
		_, err := newAuth(cred).RefreshToken(context.Background())
		var se *SignInError
		if !errors.As(err, &se) || se.Step != StepExchange {
			t.Fatalf("err = %v", err)
		}
		msg := err.Error()
		for _, want := range []string{"failed at the ACR token exchange step", "401 Unauthorized: UNAUTHORIZED token not accepted", "AcrPush"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%q lacks %q", msg, want)
			}
		}
		for _, secret := range []string{acrTok, armTok, refresh} {
			if strings.Contains(msg, secret) {
				t.Error("error message contains a token")
			}
		}
	})
	t.Run("entra token fails", func(t *testing.T) {
		bad := &fakeCredential{err: fmt.Errorf("ClientSecretCredential: authentication failed\nPOST https://login/token\n--------\nRESPONSE 401\n{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client secret provided.\\r\\nTrace ID: 1\"}\n--------")}
		_, err := newAuth(bad).RefreshToken(context.Background())
		var se *SignInError
		if !errors.As(err, &se) || se.Step != StepEntraToken {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "invalid_client AADSTS7000215: Invalid client secret provided.") || !strings.Contains(err.Error(), "AZURE_CLIENT_ID") {
			t.Errorf("message = %q", err.Error())
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		a := &EntraAuth{Registry: "127.0.0.1:1", Credential: cred, Scopes: []string{acrScope, armScope}, PlainHTTP: true}
		_, err := a.RefreshToken(context.Background())
		if err == nil || !strings.Contains(err.Error(), "unreachable") || strings.Count(err.Error(), "POST") != 1 {
			t.Errorf("err = %v", err)
		}
	})
}

func TestRetryTransportHonoursRetryAfter(t *testing.T) {
	var n atomic.Int64
	var first, second time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			second = time.Now()
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	c := &http.Client{Transport: &retryTransport{inner: http.DefaultTransport, policy: RetryPolicy{}.withDefaults()}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || n.Load() != 2 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, n.Load())
	}
	if d := second.Sub(first); d < 900*time.Millisecond {
		t.Errorf("retried after %s, Retry-After said 1s", d)
	}
	// A PATCH is handed back, not replayed.
	n.Store(0)
	req, _ := http.NewRequest(http.MethodPatch, srv.URL, strings.NewReader("blob"))
	resp, err = (&retryTransport{inner: http.DefaultTransport, policy: RetryPolicy{Max: 10 * time.Millisecond}.withDefaults()}).RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests || n.Load() != 1 {
		t.Errorf("PATCH: %v %v after %d", resp, err, n.Load())
	}
}

func TestConfigKeychain(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	os.WriteFile(p, []byte(`{"auths":{"https://reg.example:5000":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("u:p"))+`"},"acr.azurecr.io":{"identitytoken":"rt"}}}`), 0o600)
	kc := ConfigKeychain{Path: p}
	for host, want := range map[string]authn.AuthConfig{
		"reg.example:5000": {Username: "u", Password: "p", Auth: base64.StdEncoding.EncodeToString([]byte("u:p"))},
		"acr.azurecr.io":   {IdentityToken: "rt"},
		"other.io":         {},
	} {
		reg, _ := name.NewRegistry(host)
		a, err := kc.Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		ac, _ := a.Authorization()
		if *ac != want {
			t.Errorf("%s: %+v, want %+v", host, ac, want)
		}
	}
	reg, _ := name.NewRegistry("x.io")
	if a, err := (ConfigKeychain{Path: filepath.Join(dir, "none.json")}).Resolve(reg); err != nil || a != authn.Anonymous {
		t.Errorf("missing file: %v %v", a, err)
	}
}

func TestEntraMessage(t *testing.T) {
	// Entra answered: its error code and description, without the response dump.
	secret := errors.New("ClientSecretCredential: authentication failed\nPOST https://login.example/t/oauth2/v2.0/token\n" +
		"--------------------------------------------------------------------------------\nRESPONSE 401: 401 Unauthorized\n" +
		"--------------------------------------------------------------------------------\n" +
		`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Trace ID: 1"}` + "\n" +
		"--------------------------------------------------------------------------------\nTo troubleshoot, visit https://aka.ms/azsdk\n")
	if got, want := entraMessage(secret), "ClientSecretCredential: authentication failed: invalid_client AADSTS7000215: Invalid client secret provided."; got != want {
		t.Errorf("entraMessage(secret) = %q, want %q", got, want)
	}
	// A credential chain: every credential and its reason, on one line.
	chain := errors.New("DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n" +
		"\tEnvironmentCredential: missing environment variable AZURE_TENANT_ID\n\tAzureCLICredential: Azure CLI not found on path\n")
	if got, want := entraMessage(chain), "DefaultAzureCredential: failed to acquire a token. Attempted credentials: "+
		"EnvironmentCredential: missing environment variable AZURE_TENANT_ID; AzureCLICredential: Azure CLI not found on path"; got != want {
		t.Errorf("entraMessage(chain) = %q, want %q", got, want)
	}
}

func TestRedactQueries(t *testing.T) {
	for in, want := range map[string]string{
		`Put "https://r.azurecr.io/v2/a/blobs/uploads/1?_nouploadcache=false&_state=c2VjcmV0&digest=sha256%3Aab": EOF`: `Put "https://r.azurecr.io/v2/a/blobs/uploads/1": EOF`,
		"PUT http://127.0.0.1:5000/v2/a/manifests/1?x=y: UNAUTHORIZED; GET https://h/x?y":                              "PUT http://127.0.0.1:5000/v2/a/manifests/1: UNAUTHORIZED; GET https://h/x",
		"what? nothing to hide": "what? nothing to hide",
	} {
		if got := RedactQueries(in); got != want {
			t.Errorf("RedactQueries(%q) = %q, want %q", in, got, want)
		}
	}
}
