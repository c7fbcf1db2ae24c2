package acrpush

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// tokenRegistry is an in-memory registry behind bearer-token auth (the flow of ACR and Docker
// Hub): it records pings and the scopes of every token request.
type tokenRegistry struct {
	*httptest.Server
	Host   string
	mu     sync.Mutex
	pings  int
	tokens [][]string // scopes asked, per token request
}

func newTokenRegistry(t *testing.T) *tokenRegistry {
	t.Helper()
	r := &tokenRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/token" {
			_ = req.ParseForm()
			r.mu.Lock()
			r.tokens = append(r.tokens, req.Form["scope"])
			r.mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]string{"token": "scoped-" + strings.Join(req.Form["scope"], " ")})
			return
		}
		if req.URL.Path == "/v2/" {
			r.mu.Lock()
			r.pings++
			r.mu.Unlock()
		}
		if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer scoped-") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+r.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// The token must cover the repository of the request.
		if parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/v2/"), "/", 3); len(parts) == 3 && req.URL.Path != "/v2/" {
			repo := parts[0] + "/" + strings.Split(parts[1]+"/"+parts[2], "/blobs/")[0]
			repo = strings.Split(repo, "/manifests/")[0]
			if !strings.Contains(req.Header.Get("Authorization"), "repository:"+repo+":") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+r.URL+`/token",service="test",scope="repository:`+repo+`:push,pull"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.Host = strings.TrimPrefix(r.URL, "http://")
	return r
}

// A run signs in to the target registry once: one ping and one token that covers every target
// repository (and the chart's), not a ping and a token per repository.
func TestOneTokenPerRegistry(t *testing.T) {
	f := newFixture(t, 1024)
	dst := newTokenRegistry(t)
	chartDir := f.writeChart(t)
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host, Prefix: "mirror"}, anonymous(), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range res.Images {
		if img.Action != ActionPushed {
			t.Errorf("image %+v not pushed", img)
		}
	}
	if res.Chart == nil || res.Chart.Action != ActionPushed {
		t.Fatalf("chart %+v not pushed", res.Chart)
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.pings != 1 || len(dst.tokens) != 1 {
		t.Fatalf("pings = %d, token requests = %d %v; want 1 and 1", dst.pings, len(dst.tokens), dst.tokens)
	}
	for _, repo := range []string{"mirror/team/web", "mirror/team/api", "mirror/team/worker", "mirror/shop"} {
		if !slices.Contains(dst.tokens[0], "repository:"+repo+":push,pull") {
			t.Errorf("token scopes %v lack %s", dst.tokens[0], repo)
		}
	}
}
