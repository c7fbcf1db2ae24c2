package acrpush

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// lockingRegistry is an in-memory registry with Azure Container Registry's tag attributes API
// (/acr/v1/{repo}/_tags/{tag}, GET and PATCH) and its enforcement: a manifest written to a tag
// whose writeEnabled is false gets 405 REGISTRY_DISALLOWED_OPERATION.
type lockingRegistry struct {
	*testRegistry
	mu          sync.Mutex
	attrs       map[string]map[string]bool // repo:tag -> attribute -> value
	refusePatch bool                       // answer every PATCH 403
	busyPatches int                        // answer this many PATCH requests 503 first
}

func newLockingRegistry(t *testing.T) *lockingRegistry {
	t.Helper()
	r := &lockingRegistry{testRegistry: &testRegistry{}, attrs: map[string]map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.testRegistry.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
		r.testRegistry.mu.Unlock()
		if repo, tag, ok := strings.Cut(strings.TrimPrefix(req.URL.Path, "/acr/v1/"), "/_tags/"); ok && strings.HasPrefix(req.URL.Path, "/acr/v1/") {
			r.serveTag(w, req, h, repo, tag)
			return
		}
		if repo, ref, ok := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/manifests/"); ok && req.Method == http.MethodPut && !strings.HasPrefix(ref, "sha256:") {
			r.mu.Lock()
			a, locked := r.attrs[repo+":"+ref]
			r.mu.Unlock()
			if locked && !a["writeEnabled"] {
				w.WriteHeader(http.StatusMethodNotAllowed)
				_, _ = io.WriteString(w, `{"errors":[{"code":"REGISTRY_DISALLOWED_OPERATION","message":"The operation is disallowed on this registry, repository or image."}]}`)
				return
			}
		}
		if mountBlob(h, w, req) {
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.Host = strings.TrimPrefix(r.URL, "http://")
	return r
}

func (r *lockingRegistry) serveTag(w http.ResponseWriter, req *http.Request, h http.Handler, repo, tag string) {
	head := httptest.NewRecorder()
	h.ServeHTTP(head, httptest.NewRequest(http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil))
	if head.Code != http.StatusOK {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errors":[{"code":"TAG_UNKNOWN","message":"the specified tag does not exist"}]}`)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.attrs[repo+":"+tag]
	if !ok {
		a = map[string]bool{"writeEnabled": true, "deleteEnabled": true, "readEnabled": true, "listEnabled": true}
	}
	switch req.Method {
	case http.MethodGet:
	case http.MethodPatch:
		if r.busyPatches > 0 {
			r.busyPatches--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.refusePatch {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
			return
		}
		var in map[string]bool
		if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for k, v := range in {
			a[k] = v
		}
		r.attrs[repo+":"+tag] = a
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"registry": r.Host, "imageName": repo,
		"tag": map[string]any{"name": tag, "digest": head.Header().Get("Docker-Content-Digest"), "changeableAttributes": a}})
}

// locked reports whether repo:tag has writeEnabled and deleteEnabled false.
func (r *lockingRegistry) locked(repo, tag string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.attrs[repo+":"+tag]
	return ok && !a["writeEnabled"] && !a["deleteEnabled"]
}

func isPatch(s string) bool { return strings.HasPrefix(s, "PATCH /acr/v1/") }

func TestPushLock(t *testing.T) {
	f := newFixture(t, 1024)
	dst := newLockingRegistry(t)
	chartDir := f.writeChart(t)
	d := Destination{Registry: dst.Host, Prefix: "mirror"}
	tags := [][2]string{{"mirror/team/web", "1.0"}, {"mirror/team/api", "2.1"}, {"mirror/team/worker", "2.1"}, {"mirror/shop", "0.3.0"}}

	t.Run("a dry run locks nothing", func(t *testing.T) {
		res, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Lock, DryRun)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range res.Images {
			if img.Lock != LockWould {
				t.Errorf("image %s lock %q", img.Target, img.Lock)
			}
		}
		if res.Chart.Lock != LockWould || dst.count(isPatch) != 0 {
			t.Errorf("chart lock %q, %d PATCH", res.Chart.Lock, dst.count(isPatch))
		}
	})

	t.Run("the first push locks every tag after the chart", func(t *testing.T) {
		dst.reset()
		res, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Lock)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range res.Images {
			if img.Action != ActionPushed || img.Lock != LockLocked {
				t.Errorf("image %s: %s, lock %q", img.Target, img.Action, img.Lock)
			}
		}
		if res.Chart.Action != ActionPushed || res.Chart.Lock != LockLocked {
			t.Errorf("chart: %s, lock %q", res.Chart.Action, res.Chart.Lock)
		}
		for _, rt := range tags {
			if !dst.locked(rt[0], rt[1]) {
				t.Errorf("%s:%s not locked", rt[0], rt[1])
			}
		}
		// Every lock comes after the chart's manifest: nothing is locked in a half-pushed release.
		dst.testRegistry.mu.Lock()
		chartAt, firstPatch := -1, -1
		for i, s := range dst.reqs {
			if strings.HasPrefix(s, "PUT /v2/mirror/shop/manifests/0.3.0") {
				chartAt = i
			}
			if isPatch(s) && firstPatch < 0 {
				firstPatch = i
			}
		}
		dst.testRegistry.mu.Unlock()
		if chartAt < 0 || firstPatch < chartAt {
			t.Errorf("chart written at request %d, first lock at %d", chartAt, firstPatch)
		}
		if n := dst.count(isPatch); n != 4 {
			t.Errorf("%d PATCH, want 4", n)
		}
	})

	t.Run("a rerun finds them locked and changes nothing", func(t *testing.T) {
		dst.reset()
		res, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Lock)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range res.Images {
			if img.Action != ActionSkipped || img.Lock != LockAlready {
				t.Errorf("image %s: %s, lock %q", img.Target, img.Action, img.Lock)
			}
		}
		if res.Chart.Lock != LockAlready || dst.count(isPatch) != 0 || dst.count(isUpload) != 0 {
			t.Errorf("chart lock %q; %d PATCH, %d uploads", res.Chart.Lock, dst.count(isPatch), dst.count(isUpload))
		}
	})

	// The source's api image changes: its target tag is locked with the old digest.
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := pushImage(f.apiRef, img); err != nil {
		t.Fatal(err)
	}

	t.Run("--force with --lock refuses a locked tag before writing", func(t *testing.T) {
		dst.reset()
		_, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Lock, Force)
		if err == nil || !strings.Contains(err.Error(), "mirror/team/api:2.1 is locked in the registry (writeEnabled=false)") {
			t.Fatalf("err = %v", err)
		}
		if n := dst.count(func(s string) bool {
			return strings.HasPrefix(s, "PUT ") || strings.HasPrefix(s, "POST ") || isPatch(s)
		}); n != 0 {
			t.Errorf("%d writes", n)
		}
	})

	t.Run("--force without --lock says the tag is locked", func(t *testing.T) {
		_, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Force)
		var ce *CopyError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "the tag or its repository is locked, writeEnabled=false (unlock it with 'az acr repository update --name "+dst.Host+" --image mirror/team/api:2.1 --write-enabled true'") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestPushLockFailures(t *testing.T) {
	f := newFixture(t, 1024)
	chartDir := f.writeChart(t)

	t.Run("a refused lock fails the run after the push", func(t *testing.T) {
		dst := newLockingRegistry(t)
		dst.refusePatch = true
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host, Prefix: "m"}, anonymous(), fastRetry(), Lock)
		var le *LockError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), "everything was pushed, but locking failed") || !strings.Contains(err.Error(), "metadata read and write permissions") {
			t.Fatalf("err = %v", err)
		}
		if res.Chart.Action != ActionPushed || res.Chart.Lock != LockFailed {
			t.Errorf("chart %s, lock %q", res.Chart.Action, res.Chart.Lock)
		}
		for _, img := range res.Images {
			if img.Action != ActionPushed || img.Lock != LockFailed {
				t.Errorf("image %s: %s, lock %q", img.Target, img.Action, img.Lock)
			}
		}
	})

	t.Run("a lock answered 503 is sent again", func(t *testing.T) {
		dst := newLockingRegistry(t)
		dst.busyPatches = 2
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host, Prefix: "m"}, anonymous(), fastRetry(), Lock)
		if err != nil {
			t.Fatal(err)
		}
		if res.Chart.Lock != LockLocked || !dst.locked("m/shop", "0.3.0") || dst.count(isPatch) != 6 {
			t.Errorf("chart lock %q, %d PATCH", res.Chart.Lock, dst.count(isPatch))
		}
	})

	t.Run("a registry without the API", func(t *testing.T) {
		dst := newTestRegistry(t)
		_, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host, Prefix: "m"}, anonymous(), fastRetry(), Lock)
		if err == nil || !strings.Contains(err.Error(), "--lock works with Azure Container Registry only") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("a failed copy locks nothing", func(t *testing.T) {
		dst := newLockingRegistry(t)
		dst.refusePatch = true // would fail the run too, were a lock tried
		failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.Contains(req.URL.Path, "/blobs/uploads/") && req.Method == http.MethodPut {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			dst.Config.Handler.ServeHTTP(w, req)
		}))
		t.Cleanup(failing.Close)
		res, err := Push(ctxT(t), chartDir, Destination{Registry: strings.TrimPrefix(failing.URL, "http://"), Prefix: "m"}, anonymous(), fastRetry(), Lock)
		var ce *CopyError
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v", err)
		}
		if res.Chart.Lock != LockNotDone || dst.count(isPatch) != 0 {
			t.Errorf("chart lock %q, %d PATCH", res.Chart.Lock, dst.count(isPatch))
		}
		for _, img := range res.Images {
			if img.Lock != LockNotDone {
				t.Errorf("image %s lock %q", img.Target, img.Lock)
			}
		}
	})
}
