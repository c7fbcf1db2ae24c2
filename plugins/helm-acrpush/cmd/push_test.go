package cmd

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/aks-mlops/mlplugins/plugins/helm-acrpush/internal/acrpush"
)

type env struct {
	src, dst string
	chart    string
	digest   string
}

func setup(t *testing.T) env {
	t.Helper()
	srv := func() string {
		s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	e := env{src: srv(), dst: srv()}
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(e.src + "/apps/model:1.0")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	e.digest = d.String()
	e.chart = filepath.Join(t.TempDir(), "model")
	for n, c := range map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: model\nversion: 1.2.3\n",
		"values.yaml":       "image:\n  repository: " + e.src + "/apps/model\n  tag: \"1.0\"\n",
		"templates/ds.yaml": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: m}\nspec: {template: {spec: {containers: [{name: m, image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"}]}}}\n",
	} {
		p := filepath.Join(e.chart, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// fakeCred hands out a fixed Entra token.
type fakeCred struct{ tok string }

func (c fakeCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: c.tok, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func run(t *testing.T, mod func(*PushOptions), args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	o := NewPushOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	o.RegistryConfig = filepath.Join(t.TempDir(), "none.json")
	o.Retry = acrpush.RetryPolicy{Attempts: 2, Initial: time.Millisecond, Max: time.Millisecond}
	if mod != nil {
		mod(o)
	}
	root := newCmdRoot(o)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestPushTableThenSkipped(t *testing.T) {
	e := setup(t)
	out, _, err := run(t, nil, e.chart, e.dst+"/ml", "--auth", "anonymous")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ARTIFACT") {
		t.Fatalf("table:\n%s", out)
	}
	wantImage := []string{"image", e.src + "/apps/model:1.0", e.dst + "/ml/apps/model:1.0", e.digest, "pushed"}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != strings.Join(wantImage, " ") {
		t.Errorf("image row %q, want %q", got, wantImage)
	}
	if f := strings.Fields(lines[2]); f[0] != "chart" || f[2] != e.dst+"/ml/model:1.2.3" || f[4] != "pushed" {
		t.Errorf("chart row %q", lines[2])
	}

	out, _, err = run(t, nil, e.chart, e.dst+"/ml", "--auth", "anonymous", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res acrpush.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if res.Chart.Action != "skipped" || res.Images[0].Action != "skipped" || res.Images[0].Digest != e.digest || res.Transfer.BlobUploads != 0 {
		t.Errorf("second run: %s", out)
	}
}

func TestDryRunAndValuesOut(t *testing.T) {
	e := setup(t)
	overlay := filepath.Join(t.TempDir(), "pinned.yaml")
	out, errOut, err := run(t, nil, e.chart, e.dst, "--auth", "anonymous", "--dry-run", "--values-out", overlay)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "would push") || !strings.Contains(errOut, "nothing was written") {
		t.Errorf("dry run output:\n%s\n%s", out, errOut)
	}
	if _, err := os.Stat(overlay); !os.IsNotExist(err) {
		t.Error("dry run wrote --values-out")
	}
	ref, _ := name.ParseReference(e.dst + "/model:1.2.3")
	if _, err := remote.Head(ref); err == nil {
		t.Error("dry run pushed the chart")
	}
	if _, _, err := run(t, nil, e.chart, e.dst, "--auth", "anonymous", "--values-out", overlay); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(overlay)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]map[string]string
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if v["image"]["repository"] != e.dst+"/apps/model" || v["image"]["tag"] != "1.0@"+e.digest {
		t.Errorf("overlay:\n%s", data)
	}
}

func TestBadInputIsOneLine(t *testing.T) {
	e := setup(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"args", []string{e.chart}, "expected 2 arguments, CHART and REGISTRY[/PREFIX], got 1 (see 'helm acrpush --help')"},
		{"output", []string{e.chart, e.dst, "-o", "yaml"}, `unknown output format "yaml" (want one of: table, json)`},
		{"auth", []string{e.chart, e.dst, "--auth", "basic"}, `unknown --auth "basic" (want one of: auto, azure, docker, anonymous)`},
		{"platform", []string{e.chart, e.dst, "--platform", "amd64"}, `invalid --platform "amd64" (want os/arch[/variant], such as linux/amd64)`},
		{"exclusive", []string{e.chart, e.dst, "--chart-only", "--images-only"}, "--chart-only and --images-only cannot be used together"},
		{"referrers with chart-only", []string{e.chart, e.dst, "--chart-only", "--referrers"}, "--chart-only pushes no image: --image, --platform, --exclude and --referrers do not apply"},
		{"jobs", []string{e.chart, e.dst, "--jobs", "0"}, "--jobs must be at least 1, not 0"},
		{"lock outside ACR", []string{e.chart, e.dst, "--lock"}, "--lock sets tag attributes through Azure Container Registry's API: " + e.dst + " is not an ACR login server (use --auth azure for one behind another name)"},
		{"version with images-only", []string{e.chart, e.dst, "--images-only", "--version", "1.2.3"}, "--version sets the chart's version: it does not apply with --images-only"},
		{"azure credential without azure", []string{e.chart, e.dst, "--auth", "anonymous", "--azure-credential", "azure-cli"}, `--azure-credential applies to Entra ID sign-in; the registry's sign-in is "anonymous" (use --auth azure)`},
		{"registry", []string{e.chart, "no"}, `registry "no": an ACR name has 5 to 50 letters and digits; give a full login server for other registries`},
		{"chart", []string{filepath.Join(e.chart, "nope"), e.dst}, "loading chart"},
		{"render", []string{e.chart, e.dst, "--auth", "anonymous", "--set", "image=flat"}, `rendering chart "model"`},
		{"missing image", []string{e.chart, e.dst, "--auth", "anonymous", "--image", e.src + "/apps/none:1"}, "source image " + e.src + "/apps/none:1 does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t, nil, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("stdout = %q", out)
			}
		})
	}
}

// TestNoSecretsInOutput signs in through a fake Entra credential and a registry that runs the ACR
// token exchange, with --debug, and looks for every token in every output.
func TestNoSecretsInOutput(t *testing.T) {
	e := setup(t)
	entra := "eyJ0eXAiOiJKV1QifQ." + base64.RawURLEncoding.EncodeToString([]byte(`{"tid":"t1"}`)) + ".entra-secret-signature"
	refresh := "acr-refresh-token-secret"
	access := "acr-access-token-secret"
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var acr *httptest.Server
	acr = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.TrimPrefix(acr.URL, "http://")
		switch r.URL.Path {
		case "/oauth2/exchange":
			r.ParseForm()
			if r.PostForm.Get("access_token") != entra {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"refresh_token": refresh})
			return
		case "/oauth2/token":
			r.ParseForm()
			if r.PostForm.Get("refresh_token") != refresh {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"access_token": access})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+access {
			w.Header().Set("Www-Authenticate", `Bearer realm="http://`+host+`/oauth2/token",service="`+host+`"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(acr.Close)
	host := strings.TrimPrefix(acr.URL, "http://")
	withCred := func(tok string) func(*PushOptions) {
		return func(o *PushOptions) {
			o.NewCredential = func() (azcore.TokenCredential, error) { return fakeCred{tok: tok}, nil }
			o.Debug = true
		}
	}
	out, errOut, err := run(t, withCred(entra), e.chart, host, "--auth", "azure", "--plain-http", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "/oauth2/exchange") {
		t.Errorf("debug log lacks the exchange:\n%s", errOut)
	}
	all := out + errOut
	for _, s := range []string{entra, "entra-secret-signature", refresh, access} {
		if strings.Contains(all, s) {
			t.Errorf("output contains secret %q", s)
		}
	}
	// A refused exchange names the step.
	_, errOut, err = run(t, withCred("wrong."+base64.RawURLEncoding.EncodeToString([]byte("{}"))+".x"), e.chart, host, "--auth", "azure", "--plain-http")
	if err == nil || !strings.Contains(err.Error(), "failed at the ACR token exchange step") || strings.Contains(err.Error()+errOut, "wrong.") {
		t.Errorf("err = %v", err)
	}
}

func TestInsecureSkipTLSVerify(t *testing.T) {
	e := setup(t)
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	_, _, err := run(t, nil, e.chart, host, "--auth", "anonymous")
	if err == nil || !strings.Contains(err.Error(), "certificate trusted") {
		t.Fatalf("untrusted certificate accepted: %v", err)
	}
	if _, _, err := run(t, nil, e.chart, host, "--auth", "anonymous", "--insecure-skip-tls-verify"); err != nil {
		t.Fatalf("--insecure-skip-tls-verify: %v", err)
	}
}

// TestDockerAuthFromRegistryConfig signs in with the credentials of HELM_REGISTRY_CONFIG, and
// names the registry step when there are none.
func TestDockerAuthFromRegistryConfig(t *testing.T) {
	e := setup(t)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "s3cret-pass" {
			w.Header().Set("Www-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	cfg := filepath.Join(t.TempDir(), "registry.json")
	auth := base64.StdEncoding.EncodeToString([]byte("robot:s3cret-pass"))
	if err := os.WriteFile(cfg, []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	_, _, err := run(t, nil, e.chart, host)
	if err == nil || !strings.Contains(err.Error(), "failed at the registry step") {
		t.Fatalf("without credentials: %v", err)
	}
	out, errOut, err := run(t, func(o *PushOptions) { o.RegistryConfig = cfg; o.Debug = true }, e.chart, host)
	if err != nil {
		t.Fatalf("with HELM_REGISTRY_CONFIG credentials: %v", err)
	}
	if strings.Contains(out+errOut, "s3cret-pass") || strings.Contains(out+errOut, auth) {
		t.Error("output contains the registry password")
	}
}

func TestProgressOnlyOnTerminalAndTimeout(t *testing.T) {
	e := setup(t)
	_, errOut, err := run(t, func(o *PushOptions) { o.IsTerminal = func(io.Writer) bool { return true } }, e.chart, e.dst, "--auth", "anonymous")
	if err != nil || !strings.Contains(errOut, "\r[") {
		t.Errorf("no progress bar on a terminal (%v): %q", err, errOut)
	}
	_, errOut, err = run(t, nil, e.chart, e.dst+"/again", "--auth", "anonymous")
	if err != nil || strings.Contains(errOut, "\r") {
		t.Errorf("progress bar off a terminal (%v): %q", err, errOut)
	}

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	start := time.Now()
	_, _, err = run(t, nil, e.chart, strings.TrimPrefix(slow.URL, "http://"), "--auth", "anonymous", "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 3*time.Second {
		t.Errorf("--timeout: %v after %s", err, time.Since(start))
	}
}

// hostRewriter sends the requests for one host to a local server: a test can then push to an ACR
// login server name.
type hostRewriter struct{ from, to string }

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == h.from {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host = "http", h.to
	}
	return http.DefaultTransport.RoundTrip(r)
}

// When the tags cannot be locked after everything was pushed, the table, the values overlay and
// the summary still come out, and the run fails on one line.
func TestLockFailureAfterThePush(t *testing.T) {
	e := setup(t)
	overlay := filepath.Join(t.TempDir(), "pinned.yaml")
	out, errOut, err := run(t, func(o *PushOptions) { o.Transport = hostRewriter{"myacr.azurecr.io", e.dst} },
		e.chart, "myacr.azurecr.io/rel", "--auth", "anonymous", "--lock", "--values-out", overlay)
	if err == nil || !strings.Contains(err.Error(), "everything was pushed, but locking failed") || !strings.Contains(err.Error(), "--lock works with Azure Container Registry only") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
	if strings.Count(out, "pushed, lock failed") != 2 {
		t.Errorf("table:\n%s", out)
	}
	if _, err := os.Stat(overlay); err != nil {
		t.Errorf("no values overlay: %v", err)
	}
	if !strings.Contains(errOut, "1 images pushed, 0 skipped, chart pushed, 0 tags locked, 0 already locked") {
		t.Errorf("summary:\n%s", errOut)
	}
}
