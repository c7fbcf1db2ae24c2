package acrpush

import (
	"encoding/json"
	"fmt"
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
	// expireWhen, when set, makes every token issued so far expire at the first request it
	// matches, as an access token does during a push that outlasts it.
	expireWhen func(*http.Request) bool
	generation int
	refused    int // requests refused with an expired token
	// padding lengthens every token (ACR's run to kilobytes): requests whose headers outgrow
	// net/http's 4 KB write buffer cannot be rescued by its own retry on a reused connection.
	padding string
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
			r.mu.Lock()
			gen := r.generation
			r.mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]string{"token": fmt.Sprintf("scoped-%d-%s-%s", gen, strings.Join(req.Form["scope"], " "), r.padding)})
			return
		}
		r.mu.Lock()
		if r.expireWhen != nil && r.expireWhen(req) {
			r.expireWhen = nil
			r.generation++
		}
		current := fmt.Sprintf("Bearer scoped-%d-", r.generation)
		expired := strings.HasPrefix(req.Header.Get("Authorization"), "Bearer scoped-") && !strings.HasPrefix(req.Header.Get("Authorization"), current)
		if expired {
			r.refused++
		}
		r.mu.Unlock()
		if expired {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+r.URL+`/token",service="test",error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
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
	if strings.Contains(strings.Join(dst.tokens[0], " "), "metadata") {
		t.Errorf("without --lock the token asks for metadata: %v", dst.tokens[0])
	}
}

// With --lock the run's one token also covers reading and writing each target's tag attributes.
func TestLockAsksForMetadataScopes(t *testing.T) {
	f := newFixture(t, 1024)
	dst := newTokenRegistry(t)
	if _, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: dst.Host, Prefix: "mirror"}, anonymous(), fastRetry(), Lock, DryRun); err != nil {
		t.Fatal(err)
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if len(dst.tokens) != 1 {
		t.Fatalf("token requests %v", dst.tokens)
	}
	for _, repo := range []string{"mirror/team/web", "mirror/team/api", "mirror/team/worker", "mirror/shop"} {
		if !slices.Contains(dst.tokens[0], "repository:"+repo+":"+lockAPIScope) {
			t.Errorf("token scopes %v lack the metadata of %s", dst.tokens[0], repo)
		}
	}
}

// An access token that expires during a push is renewed and the request sent again whole:
// go-containerregistry's bearer transport sends the same request a second time after fetching
// the new token, its body already read. A manifest is sent again from a fresh copy of its bytes;
// a blob, streamed from its source, is uploaded again in a new session.
func TestPushOutlastsItsToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expire func(*http.Request) bool
	}{
		{"before the first manifest", func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
		}},
		{"before a blob's bytes", func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 1000
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 64<<10)
			dst := newTokenRegistry(t)
			dst.expireWhen = tc.expire
			dst.padding = strings.Repeat("p", 5000)
			res, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: dst.Host, Prefix: "mirror"}, anonymous(), fastRetry())
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range res.Images {
				if img.Action != ActionPushed || digestAt(t, img.Target) != img.Digest {
					t.Errorf("image %+v not pushed whole", img)
				}
			}
			if res.Chart == nil || res.Chart.Action != ActionPushed || digestAt(t, res.Chart.Reference) != res.Chart.Digest {
				t.Fatalf("chart %+v not pushed whole", res.Chart)
			}
			dst.mu.Lock()
			defer dst.mu.Unlock()
			if dst.refused == 0 || len(dst.tokens) < 2 {
				t.Fatalf("the token never expired: %d refusals, %d token requests", dst.refused, len(dst.tokens))
			}
		})
	}
}
