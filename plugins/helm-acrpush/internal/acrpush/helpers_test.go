package acrpush

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is an in-memory registry that records every request.
type testRegistry struct {
	*httptest.Server
	Host string
	mu   sync.Mutex
	reqs []string // "METHOD path?query"
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	return newTestRegistryMounting(t, true)
}

// newTestRegistryMounting is a test registry that answers cross-repository mounts (as
// distribution does) or declines every one (202, as a registry does when the identity may not
// read the other repository).
func newTestRegistryMounting(t *testing.T, mounts bool, opts ...registry.Option) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(append([]registry.Option{registry.Logger(log.New(io.Discard, "", 0))}, opts...)...)
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
		r.mu.Unlock()
		if mounts && mountBlob(h, w, req) {
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.Host = strings.TrimPrefix(r.URL, "http://")
	return r
}

// mountBlob answers a cross-repository mount as distribution does (go-containerregistry's
// in-memory registry ignores mount requests): 201 when the blob is in the from repository.
func mountBlob(h http.Handler, w http.ResponseWriter, req *http.Request) bool {
	q := req.URL.Query()
	if req.Method != http.MethodPost || q.Get("mount") == "" || q.Get("from") == "" || !strings.HasSuffix(req.URL.Path, "/blobs/uploads/") {
		return false
	}
	head := httptest.NewRecorder()
	h.ServeHTTP(head, httptest.NewRequest(http.MethodHead, "/v2/"+q.Get("from")+"/blobs/"+q.Get("mount"), nil))
	if head.Code != http.StatusOK {
		return false
	}
	w.Header().Set("Location", strings.TrimSuffix(req.URL.Path, "uploads/")+q.Get("mount"))
	w.Header().Set("Docker-Content-Digest", q.Get("mount"))
	w.WriteHeader(http.StatusCreated)
	return true
}

func (r *testRegistry) reset() {
	r.mu.Lock()
	r.reqs = nil
	r.mu.Unlock()
}

// count returns how many recorded requests start with prefix ("PATCH ", "POST /v2/x/blobs/uploads/").
func (r *testRegistry) count(match func(string) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.reqs {
		if match(s) {
			n++
		}
	}
	return n
}

func isUpload(s string) bool {
	return strings.HasPrefix(s, "PATCH ") || isBlobPut(s) || (strings.HasPrefix(s, "POST ") && strings.Contains(s, "/blobs/uploads/") && !strings.Contains(s, "mount="))
}

// isBlobPut is a PUT that completes a blob upload.
func isBlobPut(s string) bool {
	return strings.HasPrefix(s, "PUT ") && strings.Contains(s, "/blobs/uploads/")
}

// fixture is three source images: an index for two platforms, and two images sharing a layer.
type fixture struct {
	src           *testRegistry
	index         v1.ImageIndex
	api, worker   v1.Image
	indexRef      string
	apiRef        string
	workerRef     string
	indexDigest   v1.Hash
	apiDigest     v1.Hash
	workerDigest  v1.Hash
	amd64, arm64  v1.Image
	sharedLayer   v1.Layer
	distinctBlobs int
}

func newFixture(t *testing.T, layerSize int64, srcOpts ...registry.Option) *fixture {
	t.Helper()
	f := &fixture{src: newTestRegistryMounting(t, true, srcOpts...)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	f.amd64, err = random.Image(layerSize, 2)
	must(err)
	f.arm64, err = random.Image(layerSize, 2)
	must(err)
	f.index = mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: f.amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: f.arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	f.index = mutate.IndexMediaType(f.index, types.OCIImageIndex)
	f.sharedLayer, err = random.Layer(layerSize, types.DockerLayer)
	must(err)
	mk := func() v1.Image {
		own, err := random.Layer(layerSize/2, types.DockerLayer)
		must(err)
		img, err := mutate.AppendLayers(empty.Image, f.sharedLayer, own)
		must(err)
		return img
	}
	f.api, f.worker = mk(), mk()
	f.indexRef = f.src.Host + "/team/web:1.0"
	f.apiRef = f.src.Host + "/team/api:2.1"
	f.workerRef = f.src.Host + "/team/worker:2.1"
	must(pushIndex(f.indexRef, f.index))
	must(pushImage(f.apiRef, f.api))
	must(pushImage(f.workerRef, f.worker))
	f.indexDigest, _ = f.index.Digest()
	f.apiDigest, _ = f.api.Digest()
	f.workerDigest, _ = f.worker.Digest()
	// 2 images x (2 layers + config) in the index; api/worker: shared + own + config each.
	f.distinctBlobs = 6 + 1 + 2 + 2
	return f
}

func pushImage(ref string, img v1.Image) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}

func pushIndex(ref string, idx v1.ImageIndex) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.WriteIndex(r, idx)
}

// writeChart writes a chart using the fixture's images: the index in a Deployment (with an init
// container), api in a CronJob, worker through the artifacthub.io/images annotation only.
func (f *fixture) writeChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shop")
	files := map[string]string{
		"Chart.yaml": `apiVersion: v2
name: shop
version: 0.3.0
appVersion: "1.0"
description: test chart
annotations:
  artifacthub.io/images: |
    - name: worker
      image: ` + f.workerRef + `
`,
		"values.yaml": `web:
  image:
    registry: ` + f.src.Host + `
    repository: team/web
    tag: "1.0"
api:
  image: ` + f.apiRef + `
`,
		"templates/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "{{ .Values.web.image.registry }}/{{ .Values.web.image.repository }}:{{ .Values.web.image.tag }}"
      containers:
        - name: web
          image: "{{ .Values.web.image.registry }}/{{ .Values.web.image.repository }}:{{ .Values.web.image.tag }}"
`,
		"templates/api.yaml": `apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ .Release.Name }}-api
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: api
              image: {{ .Values.api.image | quote }}
`,
		"templates/NOTES.txt": "image: not-an-image\n",
	}
	for n, c := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func digestAt(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

func fastRetry() Option {
	return WithRetry(RetryPolicy{Attempts: 8, Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond})
}

func anonymous() Option { return WithKeychain(authn.NewMultiKeychain()) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
