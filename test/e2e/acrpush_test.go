package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// apEnv is the helm acrpush test bench: the platform, a helm home with the plugin installed by
// `helm plugin install`, and a client signed in to the ACR emulator to check what arrived.
type apEnv struct {
	env       *framework.Env
	helm      string
	helmHome  map[string]string // HELM_* variables of the private helm home
	acr       string
	src       string
	acrAuth   authn.Authenticator
	transport http.RoundTripper
	refresh   string
	secret    string
	pluginDir string
	outputs   []string // every output of the plugin, for the secrets check
}

func newAPEnv(t *testing.T) *apEnv {
	t.Helper()
	env := framework.Setup(t)
	e := &apEnv{env: env, helm: env.Vars["HELM_BIN"], acr: env.ACRLoginServer, src: env.SourceRegistry, secret: env.Vars["AZURE_CLIENT_SECRET"]}
	for k, v := range map[string]string{"HELM_BIN": e.helm, "ACR_LOGIN_SERVER": e.acr, "SOURCE_REGISTRY": e.src, "AZURE_CLIENT_SECRET": e.secret, "SSL_CERT_FILE": env.Vars["SSL_CERT_FILE"]} {
		if v == "" {
			t.Fatalf("platform env has no %s", k)
		}
	}
	bin := filepath.Join(env.BinDir, "helm-acrpush")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("bin/helm-acrpush was not built: %v", err)
	}

	// The plugin as a release archive lays it out: plugin.yaml, the install hook, bin/helm-acrpush.
	pluginDir := filepath.Join(t.TempDir(), "acrpush")
	src := filepath.Join(env.Root, "plugins", "helm-acrpush")
	apCopy(t, filepath.Join(src, "plugin.yaml"), filepath.Join(pluginDir, "plugin.yaml"), 0o644)
	apCopy(t, filepath.Join(src, "scripts", "install-binary.sh"), filepath.Join(pluginDir, "scripts", "install-binary.sh"), 0o755)
	apCopy(t, bin, filepath.Join(pluginDir, "bin", "helm-acrpush"), 0o755)
	e.pluginDir = pluginDir

	home := t.TempDir()
	e.helmHome = map[string]string{
		"HELM_PLUGINS":         filepath.Join(home, "plugins"),
		"HELM_CONFIG_HOME":     filepath.Join(home, "config"),
		"HELM_DATA_HOME":       filepath.Join(home, "data"),
		"HELM_CACHE_HOME":      filepath.Join(home, "cache"),
		"HELM_REGISTRY_CONFIG": filepath.Join(home, "config", "registry", "config.json"),
		"DOCKER_CONFIG":        filepath.Join(home, "docker"),
	}
	if r := e.run(t, nil, e.helm, "plugin", "install", pluginDir); r.Code != 0 {
		t.Fatalf("helm plugin install: %s%s", r.Stdout, r.Stderr)
	}
	if r := e.run(t, nil, e.helm, "plugin", "list"); !strings.Contains(r.Stdout, "acrpush") {
		t.Fatalf("helm plugin list: %s", r.Stdout)
	}

	// The test's own view of the registry, trusting the platform CA.
	e.transport = env.Transport(t)
	e.refresh = env.ACRRefreshToken(t, e.transport)
	e.acrAuth = authn.FromConfig(authn.AuthConfig{Username: "00000000-0000-0000-0000-000000000000", Password: e.refresh})
	return e
}

func apCopy(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}

// run runs a command with the platform env plus the private helm home, and extra KEY=VALUE pairs.
func (e *apEnv) run(t *testing.T, extra []string, name string, args ...string) framework.Result {
	t.Helper()
	return e.runIn(t, extra, nil, name, args...)
}

func (e *apEnv) runIn(t *testing.T, extra []string, stdin io.Reader, name string, args ...string) framework.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.env.Command(name, args...)
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env = cmd.Env
	for k, v := range e.helmHome {
		c.Env = append(c.Env, k+"="+v)
	}
	c.Env = append(c.Env, extra...)
	c.Stdin = stdin
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	start := time.Now()
	err := c.Run()
	res := framework.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", name, err)
	}
	t.Logf("$ %s %s  (exit %d, %.2fs)", filepath.Base(name), strings.Join(args, " "), res.Code, time.Since(start).Seconds())
	return res
}

// acrpush runs `helm acrpush` through the real helm and keeps its output for the secrets check.
func (e *apEnv) acrpush(t *testing.T, extra []string, args ...string) framework.Result {
	t.Helper()
	r := e.run(t, extra, e.helm, append([]string{"acrpush"}, args...)...)
	e.outputs = append(e.outputs, r.Stdout, r.Stderr)
	return r
}

func (e *apEnv) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// digest returns the digest ref points at in ACR ("" when absent).
func (e *apEnv) digest(t *testing.T, ref string) string {
	t.Helper()
	d, err := remote.Head(e.ref(t, ref), remote.WithAuth(e.acrAuth), remote.WithTransport(e.transport))
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return ""
		}
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}

// tags lists a repository in ACR (nil when it does not exist).
func (e *apEnv) tags(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, remote.WithAuth(e.acrAuth), remote.WithTransport(e.transport))
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil
		}
		t.Fatalf("listing %s: %v", repo, err)
	}
	return tags
}

// apImages are three images in SOURCE_REGISTRY: web is a two-platform index, api and worker share
// a layer.
type apImages struct {
	web, api, worker    string
	webD, apiD, workerD string
}

func apRandom() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func pushSourceImages(t *testing.T, src, ns string, layer int64) apImages {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	amd, err := random.Image(layer, 2)
	must(err)
	arm, err := random.Image(layer, 2)
	must(err)
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	), types.OCIImageIndex)
	shared, err := random.Layer(layer, types.DockerLayer)
	must(err)
	mk := func() v1.Image {
		own, err := random.Layer(layer/2, types.DockerLayer)
		must(err)
		img, err := mutate.AppendLayers(empty.Image, shared, own)
		must(err)
		return img
	}
	api, worker := mk(), mk()
	im := apImages{web: src + "/" + ns + "/web:1.0", api: src + "/" + ns + "/api:2.1", worker: src + "/" + ns + "/worker:2.1"}
	must(remote.WriteIndex(mustRef(t, im.web), idx))
	must(remote.Write(mustRef(t, im.api), api))
	must(remote.Write(mustRef(t, im.worker), worker))
	d, _ := idx.Digest()
	im.webD = d.String()
	d, _ = api.Digest()
	im.apiD = d.String()
	d, _ = worker.Digest()
	im.workerD = d.String()
	return im
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeShopChart writes a chart using the three images: web in a Deployment (also as an init
// container), api in a CronJob, worker only through the artifacthub.io/images annotation.
func writeShopChart(t *testing.T, im apImages, srcHost, ns string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shop")
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: shop\nversion: 0.3.0\nappVersion: \"1.0\"\nannotations:\n  artifacthub.io/images: |\n    - name: worker\n      image: " + im.worker + "\n",
		"values.yaml": "web:\n  image:\n    registry: " + srcHost + "\n    repository: " + ns + "/web\n    tag: \"1.0\"\napi:\n  image: " + im.api + "\n",
		"templates/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: "{{ .Release.Name }}-web"}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: init, image: "{{ .Values.web.image.registry }}/{{ .Values.web.image.repository }}:{{ .Values.web.image.tag }}"}]
      containers: [{name: web, image: "{{ .Values.web.image.registry }}/{{ .Values.web.image.repository }}:{{ .Values.web.image.tag }}"}]
`,
		"templates/api.yaml": `apiVersion: batch/v1
kind: CronJob
metadata: {name: "{{ .Release.Name }}-api"}
spec:
  schedule: "0 * * * *"
  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: api, image: {{ .Values.api.image | quote }}}]}}}}
`,
	}
	for n, c := range files {
		apCopyBytes(t, filepath.Join(dir, n), c)
	}
	return dir
}

func apCopyBytes(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// apResult is the part of `-o json` the tests read.
type apResult struct {
	Chart struct {
		Reference, Digest, Action string
	} `json:"chart"`
	Images []struct {
		Source, Target, Digest, Action string
		Bytes                          int64
	} `json:"images"`
	Transfer struct {
		BlobUploads int64 `json:"blobUploads"`
		BlobMounts  int64 `json:"blobMounts"`
	} `json:"transfer"`
}

func decodeAP(t *testing.T, r framework.Result) apResult {
	t.Helper()
	var res apResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("decoding -o json: %v\nstdout:\n%s\nstderr:\n%s", err, r.Stdout, r.Stderr)
	}
	return res
}

// uploadsSince counts blob upload requests for repositories under prefix in the ACR emulator's
// request log written after offset.
func (e *apEnv) uploadsSince(t *testing.T, offset int64, prefix string) (uploads, requests int) {
	t.Helper()
	f, err := os.Open(filepath.Join(e.env.Vars["PLATFORM_DIR"], "logs", "azure.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "acr: ") || !strings.Contains(line, "/v2/"+prefix+"/") {
			continue
		}
		requests++
		if strings.Contains(line, " PATCH ") || ((strings.Contains(line, " POST ") || strings.Contains(line, " PUT ")) && strings.Contains(line, "/blobs/uploads/")) {
			uploads++
		}
	}
	return uploads, requests
}

// logLinesSince returns the ACR emulator's request log lines for repositories under prefix written
// after offset.
func (e *apEnv) logLinesSince(t *testing.T, offset int64, prefix string) []string {
	t.Helper()
	var out []string
	for _, l := range e.logLinesAfter(t, offset) {
		if strings.Contains(l, "acr: ") && strings.Contains(l, "/v2/"+prefix+"/") {
			out = append(out, l)
		}
	}
	return out
}

// logLinesAfter returns the emulators' request log lines written after offset.
func (e *apEnv) logLinesAfter(t *testing.T, offset int64) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.env.Vars["PLATFORM_DIR"], "logs", "azure.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(data[min(offset, int64(len(data))):]), "\n")
}

func (e *apEnv) logSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(e.env.Vars["PLATFORM_DIR"], "logs", "azure.log"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestACRPushChartAndImages(t *testing.T) {
	e := newAPEnv(t)
	ns := "acrpush-e2e-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 256<<10)
	chart := writeShopChart(t, im, e.src, ns)
	prefix := "ap-" + apRandom()
	dst := e.acr + "/" + prefix

	// Dry run first: a plan on stdout, nothing in the registry.
	r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "--dry-run")
	if r.Code != 0 || strings.Count(r.Stdout, "would push") != 4 {
		t.Fatalf("dry run (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, repo := range []string{"shop", ns + "/web", ns + "/api", ns + "/worker"} {
		if tags := e.tags(t, dst+"/"+repo); len(tags) != 0 {
			t.Errorf("dry run wrote %s: %v", repo, tags)
		}
	}

	// The push, signed in only through the Entra variables of the platform env.
	overlay := filepath.Join(t.TempDir(), "pinned.yaml")
	offset := e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "-o", "json", "--values-out", overlay)
	if r.Code != 0 {
		t.Fatalf("push (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	res := decodeAP(t, r)
	// Every distinct blob went up once (web: 2 x (config + 2 layers); api: config, own and shared
	// layer; worker: config and own layer; chart: config and content), each in one PUT after its
	// POST (no PATCH); the shared layer was mounted into the second repository.
	time.Sleep(200 * time.Millisecond)
	var puts, patches, mounts int
	for _, l := range e.logLinesSince(t, offset, prefix) {
		switch {
		case strings.Contains(l, " PUT ") && strings.Contains(l, "/blobs/uploads/"):
			puts++
		case strings.Contains(l, " PATCH "):
			patches++
		case strings.Contains(l, " POST ") && strings.Contains(l, "/blobs/uploads/ -> 201"):
			mounts++
		}
	}
	if puts != 13 || patches != 0 || mounts != 1 || res.Transfer.BlobMounts != 1 {
		t.Errorf("registry log: %d blob uploads (want 13), %d PATCH (want 0), %d mounts (want 1); reported %d mounts", puts, patches, mounts, res.Transfer.BlobMounts)
	}
	want := map[string]string{dst + "/" + ns + "/web:1.0": im.webD, dst + "/" + ns + "/api:2.1": im.apiD, dst + "/" + ns + "/worker:2.1": im.workerD}
	for ref, d := range want {
		if got := e.digest(t, ref); got != d {
			t.Errorf("%s: digest %q in ACR, source has %s", ref, got, d)
		}
	}
	if len(res.Images) != 3 || res.Chart.Action != "pushed" || res.Chart.Reference != dst+"/shop:0.3.0" {
		t.Errorf("result: %+v", res)
	}
	if got := e.digest(t, dst+"/shop:0.3.0"); got != res.Chart.Digest {
		t.Errorf("chart digest in ACR %q, reported %s", got, res.Chart.Digest)
	}
	if data, err := os.ReadFile(overlay); err != nil || !strings.Contains(string(data), "tag: 1.0@"+im.webD) || !strings.Contains(string(data), dst+"/"+ns+"/api:2.1@"+im.apiD) {
		t.Errorf("values overlay (%v):\n%s", err, data)
	}

	// helm itself gets the chart back, signed in with the ACR refresh token.
	if r := e.runIn(t, nil, strings.NewReader(e.refresh), e.helm, "registry", "login", e.acr, "--username", "00000000-0000-0000-0000-000000000000", "--password-stdin"); r.Code != 0 {
		t.Fatalf("helm registry login: %s%s", r.Stdout, r.Stderr)
	}
	pullDir := t.TempDir()
	if r := e.run(t, nil, e.helm, "pull", "oci://"+dst+"/shop", "--version", "0.3.0", "-d", pullDir); r.Code != 0 {
		t.Fatalf("helm pull: %s%s", r.Stdout, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(pullDir, "shop-0.3.0.tgz")); err != nil {
		t.Errorf("helm pull wrote no chart: %v", err)
	}
	if r := e.run(t, nil, e.helm, "show", "chart", filepath.Join(pullDir, "shop-0.3.0.tgz")); !strings.Contains(r.Stdout, "name: shop") {
		t.Errorf("pulled chart: %s%s", r.Stdout, r.Stderr)
	}

	// A second run uploads no blob (counted in the registry's request log) and skips everything.
	offset = e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("second push (exit %d): %s", r.Code, r.Stderr)
	}
	res = decodeAP(t, r)
	time.Sleep(200 * time.Millisecond) // let the emulator flush its log
	uploads, requests := e.uploadsSince(t, offset, prefix)
	if uploads != 0 || requests == 0 {
		t.Errorf("second run: %d upload requests of %d requests to %s", uploads, requests, prefix)
	}
	if res.Chart.Action != "skipped" {
		t.Errorf("chart on second run: %s", res.Chart.Action)
	}
	for _, i := range res.Images {
		if i.Action != "skipped" || i.Bytes != 0 {
			t.Errorf("second run image %s: %s, %d bytes", i.Source, i.Action, i.Bytes)
		}
	}

	// Debug output at every verbosity carries no secret.
	e.acrpush(t, []string{"HELM_DEBUG=true"}, chart, dst, "--auth", "azure", "--dry-run")
	e.acrpush(t, nil, chart, dst, "--auth", "azure", "--debug", "-o", "json")
	e.assertNoSecrets(t)

	// Helm 4 loads the same plugin.yaml.
	if h4 := e.env.Vars["HELM4_BIN"]; h4 != "" {
		if _, err := os.Stat(h4); err == nil {
			data := t.TempDir()
			extra := []string{"HELM_DATA_HOME=" + data, "HELM_PLUGINS=" + filepath.Join(data, "plugins")}
			// Helm 4 installs into HELM_DATA_HOME/plugins whatever HELM_PLUGINS says; point both there.
			if r := e.run(t, extra, h4, "plugin", "install", e.pluginDir); r.Code != 0 {
				t.Fatalf("helm4 plugin install: %s%s", r.Stdout, r.Stderr)
			}
			if r := e.run(t, extra, h4, "acrpush", "version", "--short"); r.Code != 0 || strings.TrimSpace(r.Stdout) == "" {
				t.Errorf("helm4 acrpush version: %s%s", r.Stdout, r.Stderr)
			}
		}
	}
}

// jwtRE matches anything shaped like a JWT (Entra and ACR tokens are JWTs).
var jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

func (e *apEnv) assertNoSecrets(t *testing.T) {
	t.Helper()
	for _, out := range e.outputs {
		if strings.Contains(out, e.secret) {
			t.Error("plugin output contains AZURE_CLIENT_SECRET")
		}
		if strings.Contains(out, e.refresh) {
			t.Error("plugin output contains an ACR refresh token")
		}
		if m := jwtRE.FindString(out); m != "" {
			t.Errorf("plugin output contains a token: %.16s...", m)
		}
	}
}

// apOneError checks a failed run: exit 1, exactly one "error: " line from the plugin (helm adds
// its own "Error: plugin ... exited with error"), nothing on stdout.
func apOneError(t *testing.T, r framework.Result, want string) {
	t.Helper()
	if r.Code != 1 {
		t.Errorf("exit %d, want 1", r.Code)
	}
	var ours []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stderr), "\n") {
		if strings.HasPrefix(l, "Error: plugin \"acrpush\" exited with error") {
			continue
		}
		ours = append(ours, l)
	}
	t.Logf("stderr: %s", strings.Join(ours, " | "))
	if len(ours) != 1 || !strings.HasPrefix(ours[0], "error: ") || !strings.Contains(ours[0], want) {
		t.Errorf("stderr %q, want one line `error: ...%s...`", r.Stderr, want)
	}
	if r.Stdout != "" {
		t.Errorf("stdout %q", r.Stdout)
	}
}

func TestACRPushFailures(t *testing.T) {
	e := newAPEnv(t)
	ns := "acrpush-fail-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 16<<10)
	chart := writeShopChart(t, im, e.src, ns)

	noChart := func(t *testing.T, dst string) {
		t.Helper()
		if tags := e.tags(t, dst+"/shop"); len(tags) != 0 {
			t.Errorf("the chart is in the registry: %v", tags)
		}
	}
	t.Run("missing source image", func(t *testing.T) {
		dst := e.acr + "/ap-" + apRandom()
		r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "--image", e.src+"/"+ns+"/gone:1")
		apOneError(t, r, "source image "+e.src+"/"+ns+"/gone:1 does not exist")
		noChart(t, dst)
		if tags := e.tags(t, dst+"/"+ns+"/api"); len(tags) != 0 {
			t.Errorf("an image was copied before the check failed: %v", tags)
		}
	})
	t.Run("render failure", func(t *testing.T) {
		dst := e.acr + "/ap-" + apRandom()
		r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "--set", "web.image=flat")
		apOneError(t, r, `rendering chart "shop"`)
		noChart(t, dst)
	})
	t.Run("tag exists with another digest", func(t *testing.T) {
		prefix := "ap-" + apRandom()
		dst := e.acr + "/" + prefix
		other, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		target := dst + "/" + ns + "/api:2.1"
		if err := remote.Write(e.ref(t, target), other, remote.WithAuth(e.acrAuth), remote.WithTransport(e.transport)); err != nil {
			t.Fatal(err)
		}
		od, _ := other.Digest()
		r := e.acrpush(t, nil, chart, dst, "--auth", "azure")
		apOneError(t, r, target+" already exists with digest "+od.String())
		noChart(t, dst)
		if got := e.digest(t, target); got != od.String() {
			t.Errorf("the tag moved to %s without --force", got)
		}
	})
	t.Run("bad Entra credentials", func(t *testing.T) {
		dst := e.acr + "/ap-" + apRandom()
		r := e.acrpush(t, []string{"AZURE_CLIENT_SECRET=not-the-secret"}, chart, dst, "--auth", "azure")
		apOneError(t, r, "failed at the Entra ID token step")
		noChart(t, dst)
	})
	t.Run("exchange refused", func(t *testing.T) {
		// A TCP forwarder gives the emulator a second address: the TLS certificate (127.0.0.1) still
		// matches, but the exchange names a service that is not this registry and ACR refuses it.
		fwd := apForwarder(t, e.acr)
		prefix := "ap-" + apRandom()
		r := e.acrpush(t, nil, chart, fwd+"/"+prefix, "--auth", "azure")
		noChart(t, e.acr+"/"+prefix)
		apOneError(t, r, "failed at the ACR token exchange step")
		if !strings.Contains(r.Stderr, "401") {
			t.Errorf("stderr lacks the registry's answer: %s", r.Stderr)
		}
	})
	t.Run("unreachable registry", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		r := e.acrpush(t, nil, chart, addr+"/ap", "--auth", "azure")
		apOneError(t, r, "unreachable")
	})
	t.Run("bad input", func(t *testing.T) {
		r := e.acrpush(t, nil, chart, e.acr, "--auth", "azure", "-o", "yaml")
		apOneError(t, r, `unknown output format "yaml"`)
	})
	e.assertNoSecrets(t)
}

// apForwarder relays TCP connections to target until the test ends and returns its address.
func apForwarder(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestACRPushThroughFaults copies from SOURCE_REGISTRY through a proxy that answers a fifth of the
// requests with 500/502/503/429 (Retry-After: 1) and resets a fifth of the blob downloads half-way,
// and checks that every digest in ACR is the source's.
func TestACRPushThroughFaults(t *testing.T) {
	e := newAPEnv(t)
	ns := "acrpush-faults-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 512<<10)
	proxy := apFaultProxy(t, e.src)
	via := strings.NewReplacer(e.src, proxy)
	chart := writeShopChart(t, apImages{web: via.Replace(im.web), api: via.Replace(im.api), worker: via.Replace(im.worker)}, proxy, ns)
	dst := e.acr + "/ap-" + apRandom()
	r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("push through faults (exit %d): %s", r.Code, r.Stderr)
	}
	for ref, d := range map[string]string{dst + "/" + ns + "/web:1.0": im.webD, dst + "/" + ns + "/api:2.1": im.apiD, dst + "/" + ns + "/worker:2.1": im.workerD} {
		if got := e.digest(t, ref); got != d {
			t.Errorf("%s: %q, want %s", ref, got, d)
		}
	}
	if e.digest(t, dst+"/shop:0.3.0") == "" {
		t.Error("chart missing")
	}
}

// apFaultProxy is an HTTP proxy to target that fails a fifth of the requests (500, 502, 503, 429
// with Retry-After) and resets a fifth of the blob downloads half-way through. It counts what it injected and fails the test when it
// injected nothing.
func apFaultProxy(t *testing.T, target string) string {
	t.Helper()
	// Every fifth request fails and every fifth blob download is cut, cycling through the codes.
	var reqs, blobs, errorsN, resets atomic.Int64
	up := &url.URL{Scheme: "http", Host: target}
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" && reqs.Add(1)%5 == 0 {
			code := []int{500, 502, 503, 429}[errorsN.Add(1)%4]
			if code == 429 {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(code)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && blobs.Add(1)%5 == 2 {
			resets.Add(1)
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
			w.(http.Flusher).Flush()
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		t.Logf("fault proxy injected %d errors and %d resets", errorsN.Load(), resets.Load())
		if errorsN.Load() == 0 || resets.Load() == 0 {
			t.Error("the fault proxy injected nothing; the test proves nothing")
		}
	})
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestACRPushThroughFaultsToACR puts the fault proxy between the tool and the ACR emulator: it
// terminates TLS with the emulator's own certificate, fails every fifth request (500, 502, 503,
// 429 with Retry-After), resets every fifth blob upload half-way through, and relays the rest.
func TestACRPushThroughFaultsToACR(t *testing.T) {
	e := newAPEnv(t)
	ns := "acrpush-dstfaults-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 512<<10)
	chart := writeShopChart(t, im, e.src, ns)
	proxy := e.acrFaultProxy(t)
	prefix := "ap-" + apRandom()
	r := e.acrpush(t, nil, chart, proxy+"/"+prefix, "--auth", "azure", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("push through faults (exit %d): %s", r.Code, r.Stderr)
	}
	dst := e.acr + "/" + prefix
	for ref, d := range map[string]string{dst + "/" + ns + "/web:1.0": im.webD, dst + "/" + ns + "/api:2.1": im.apiD, dst + "/" + ns + "/worker:2.1": im.workerD} {
		if got := e.digest(t, ref); got != d {
			t.Errorf("%s: %q, want %s", ref, got, d)
		}
	}
	if got := e.digest(t, dst+"/shop:0.3.0"); got == "" || got != decodeAP(t, r).Chart.Digest {
		t.Errorf("chart digest %q", got)
	}
}

// acrFaultProxy relays to the ACR emulator (framework.ACRRelay) with faults: every fifth request
// answered 5xx or 429, every fifth blob body cut half-way by a reset connection.
func (e *apEnv) acrFaultProxy(t *testing.T) string {
	t.Helper()
	var reqs, uploads, errorsN, resets atomic.Int64
	self := e.env.ACRRelay(t, e.transport, framework.RelayOptions{Wrap: func(relay http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v2/" && reqs.Add(1)%5 == 0 {
				code := []int{500, 502, 503, 429}[errorsN.Add(1)%4]
				if code == 429 {
					w.Header().Set("Retry-After", "1")
				}
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(code)
				return
			}
			// Blob bodies: a PATCH, or a PUT carrying the whole blob.
			isUpload := r.Method == http.MethodPatch || (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 0)
			if isUpload && uploads.Add(1)%5 == 2 {
				resets.Add(1)
				_, _ = io.CopyN(io.Discard, r.Body, max(r.ContentLength/2, 1))
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
					conn.Close()
				}
				return
			}
			relay.ServeHTTP(w, r)
		})
	}})
	t.Cleanup(func() {
		t.Logf("ACR fault proxy injected %d errors and %d resets", errorsN.Load(), resets.Load())
		if errorsN.Load() == 0 || resets.Load() == 0 {
			t.Error("the fault proxy injected nothing; the test proves nothing")
		}
	})
	return self
}
