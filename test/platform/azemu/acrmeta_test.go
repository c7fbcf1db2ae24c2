package azemu

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeManifests is a registry that holds manifests only, as the token-auth registry would: it
// answers 401 without credentials, HEAD with the digest, PUT with 201 and DELETE with 202.
type fakeManifests struct {
	mu   sync.Mutex
	refs map[string]string // repository + "|" + tag or digest -> digest
}

// ServeHTTP answers /v2/{repository}/manifests/{reference}.
func (f *fakeManifests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	repo, ref, ok := manifestPath(r.URL.Path)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if auth := r.Header.Get("Authorization"); auth == "" || auth == forged {
		w.Header().Set("WWW-Authenticate", `Bearer realm="x",service="y"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, found := f.refs[repo+"|"+ref]
	switch r.Method {
	case http.MethodHead, http.MethodGet:
		if !found {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Docker-Content-Digest", d)
	case http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		d = digestOf(string(b))
		f.refs[repo+"|"+ref], f.refs[repo+"|"+d] = d, d
		w.Header().Set("Docker-Content-Digest", d)
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		if !found {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		for k, v := range f.refs {
			if strings.HasPrefix(k, repo+"|") && (k == repo+"|"+ref || isDigest(ref) && v == d) {
				delete(f.refs, k)
			}
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// put stores a manifest under repo:tag and returns its digest.
func (f *fakeManifests) put(repo, tag, body string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == nil {
		f.refs = map[string]string{}
	}
	d := digestOf(body)
	f.refs[repo+"|"+tag], f.refs[repo+"|"+d] = d, d
	return d
}

// digestOf is the sha256 digest of a manifest body.
func digestOf(body string) string { return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(body))) }

// newMetaHarness runs the front before a fakeManifests and returns an ACR refresh token for it.
func newMetaHarness(t *testing.T) (*harness, *fakeManifests, string) {
	t.Helper()
	f := &fakeManifests{}
	h := newHarness(t, f)
	return h, f, h.refreshToken(t)
}

// scopedToken gets a registry access token for scopes with the refresh token rt.
func scopedToken(t *testing.T, h *harness, rt string, scopes ...string) string {
	t.Helper()
	res := h.postForm(t, h.acrURL("/oauth2/token"), url.Values{"grant_type": {"refresh_token"}, "service": {h.cfg.ACRAddr}, "scope": scopes, "refresh_token": {rt}})
	if res.status != http.StatusOK {
		t.Fatalf("token: %d %s", res.status, res.raw)
	}
	return res.body["access_token"].(string)
}

// call sends method path to the front with auth as the Authorization header ("" for none).
func call(t *testing.T, h *harness, method, path, auth, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, h.acrURL(path), rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return h.do(t, req)
}

// saw counts the requests the upstream registry got for method path.
func (h *harness) saw(method, path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.upstreamReqs {
		if r.Method == method && r.URL.Path == path {
			n++
		}
	}
	return n
}

// properties decodes an answer of the tag attributes API.
func properties(t *testing.T, res result) tagProperties {
	t.Helper()
	var p tagProperties
	if err := json.Unmarshal([]byte(res.raw), &p); err != nil {
		t.Fatalf("decoding %s: %v", res.raw, err)
	}
	return p
}

// forged is a bearer token no registry accepts.
const forged = "Bearer forged"

const disallowedBody = `{"errors":[{"code":"REGISTRY_DISALLOWED_OPERATION","message":"The operation is disallowed on this registry, repository or image.","detail":{}}]}` + "\n"

func TestACRTagLock(t *testing.T) {
	h, f, rt := newMetaHarness(t)
	const repo = "team/app/model"
	v1 := f.put(repo, "v1", "manifest one")
	other := f.put(repo, "other", "manifest other")
	moved := digestOf("manifest one, again")
	read := "Bearer " + scopedToken(t, h, rt, "repository:"+repo+":metadata_read")
	write := "Bearer " + scopedToken(t, h, rt, "repository:"+repo+":metadata_read,metadata_write")
	push := "Bearer " + scopedToken(t, h, rt, "repository:"+repo+":pull,push,delete")
	meta := "/acr/v1/" + repo + "/_tags/v1?api-version=2021-07-01"
	man := "/v2/" + repo + "/manifests/"
	attrs := func(write, del bool) *changeableAttributes {
		return &changeableAttributes{WriteEnabled: write, DeleteEnabled: del, ReadEnabled: true, ListEnabled: true}
	}
	for _, step := range []struct {
		name, method, path, auth, body string
		status                         int
		attrs                          *changeableAttributes // the attributes a GET or PATCH answers
		digest                         string                // and the digest
		reaches                        bool                  // whether the registry gets the request
	}{
		{"GET defaults", http.MethodGet, meta, read, "", 200, attrs(true, true), v1, false},
		{"GET with the repository escaped whole", http.MethodGet, "/acr/v1/" + url.PathEscape(repo) + "/_tags/v1", read, "", 200, attrs(true, true), v1, false},
		{"PATCH locks", http.MethodPatch, meta, write, `{"writeEnabled":false,"deleteEnabled":false}`, 200, attrs(false, false), v1, false},
		{"GET shows the lock", http.MethodGet, meta, read, "", 200, attrs(false, false), v1, false},
		{"PUT to the locked tag", http.MethodPut, man + "v1", push, "manifest one, again", 405, nil, "", false},
		{"PUT to another tag", http.MethodPut, man + "v2", push, "manifest two", 201, nil, "", true},
		{"PUT by digest", http.MethodPut, man + v1, push, "manifest one", 201, nil, "", true},
		{"PUT without credentials", http.MethodPut, man + "v1", "", "manifest one, again", 401, nil, "", true},
		{"PUT with a token that does not verify", http.MethodPut, man + "v1", forged, "manifest one, again", 401, nil, "", true},
		{"DELETE the locked tag", http.MethodDelete, man + "v1", push, "", 405, nil, "", false},
		{"DELETE its digest", http.MethodDelete, man + v1, push, "", 405, nil, "", false},
		{"DELETE another digest", http.MethodDelete, man + other, push, "", 202, nil, "", true},
		{"PATCH unlocks writes", http.MethodPatch, meta, write, `{"writeEnabled":true}`, 200, attrs(true, false), v1, false},
		{"PUT moves the tag", http.MethodPut, man + "v1", push, "manifest one, again", 201, nil, "", true},
		{"DELETE the delete-locked tag", http.MethodDelete, man + "v1", push, "", 405, nil, "", false},
		{"DELETE its new digest", http.MethodDelete, man + moved, push, "", 405, nil, "", false},
		{"DELETE its old digest", http.MethodDelete, man + v1, push, "", 202, nil, "", true},
		{"GET follows the move", http.MethodGet, meta, read, "", 200, attrs(true, false), moved, false},
		{"PATCH unlocks deletes", http.MethodPatch, meta, write, `{"deleteEnabled":true}`, 200, attrs(true, true), moved, false},
		{"DELETE the tag", http.MethodDelete, man + "v1", push, "", 202, nil, "", true},
	} {
		t.Run(step.name, func(t *testing.T) {
			path, _, _ := strings.Cut(step.path, "?")
			before := h.saw(step.method, path)
			res := call(t, h, step.method, step.path, step.auth, step.body)
			if res.status != step.status {
				t.Fatalf("got %d %s, want %d", res.status, res.raw, step.status)
			}
			if reached := h.saw(step.method, path) > before; reached != step.reaches {
				t.Errorf("the registry got the request: %v, want %v", reached, step.reaches)
			}
			if step.status == http.StatusMethodNotAllowed && res.raw != disallowedBody {
				t.Errorf("body = %s, want %s", res.raw, disallowedBody)
			}
			if step.attrs == nil {
				return
			}
			if ct, _, _ := mime.ParseMediaType(res.header.Get("Content-Type")); ct != "application/json" {
				t.Errorf("Content-Type = %q", res.header.Get("Content-Type"))
			}
			p := properties(t, res)
			if p.Registry != h.cfg.ACRAddr || p.ImageName != repo || p.Tag.Name != "v1" || p.Tag.Digest != step.digest || p.Tag.Signed || p.Tag.ChangeableAttributes != *step.attrs {
				t.Errorf("properties = %+v, want digest %s and %+v", p, step.digest, *step.attrs)
			}
			if p.Tag.CreatedTime.IsZero() || p.Tag.LastUpdateTime.Before(p.Tag.CreatedTime) {
				t.Errorf("times = %v, %v", p.Tag.CreatedTime, p.Tag.LastUpdateTime)
			}
			for _, field := range []string{`"createdTime":"`, `"lastUpdateTime":"`, `"signed":false`} {
				if !strings.Contains(res.raw, field) {
					t.Errorf("no %s in %s", field, res.raw)
				}
			}
		})
	}
	t.Run("the lookup is a pull", func(t *testing.T) {
		h.mu.Lock()
		var head *http.Request
		for _, r := range h.upstreamReqs {
			if r.Method == http.MethodHead && r.URL.Path == man+"v1" {
				head = r
			}
		}
		h.mu.Unlock()
		if head == nil {
			t.Fatal("the registry saw no HEAD of the tag")
		}
		for _, mt := range []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"} {
			if !strings.Contains(head.Header.Get("Accept"), mt) {
				t.Errorf("Accept %q lacks %s", head.Header.Get("Accept"), mt)
			}
		}
		access := verifyAsDistribution(t, h, strings.TrimPrefix(head.Header.Get("Authorization"), "Bearer "))
		if len(access) != 1 || access[0].Name != repo || strings.Join(access[0].Actions, ",") != "pull" {
			t.Errorf("lookup token access = %+v", access)
		}
	})
	t.Run("deleted tags are forgotten", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(h.dir, FileACRTagAttributes))
		if err != nil {
			t.Fatal(err)
		}
		var recs []tagRecord
		if err := json.Unmarshal(b, &recs); err != nil || len(recs) != 0 {
			t.Errorf("records = %+v (%v), want none", recs, err)
		}
	})
}

func TestACRTagAttributesAuth(t *testing.T) {
	h, f, rt := newMetaHarness(t)
	f.put("team/app", "v1", "manifest")
	path := "/acr/v1/team/app/_tags/v1"
	base := `Bearer realm="https://` + h.cfg.ACRAddr + `/oauth2/token",service="` + h.cfg.ACRAddr + `"`
	readScope, writeScope := `,scope="repository:team/app:metadata_read"`, `,scope="repository:team/app:metadata_write"`
	insufficient := `,error="insufficient_scope"`
	token := func(scopes ...string) string { return "Bearer " + scopedToken(t, h, rt, scopes...) }
	tokenKey := h.key(t, FileRegistryTokenKey)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := strings.TrimPrefix(token("repository:team/app:metadata_read"), "Bearer ")
	reissue := func(key *rsa.PrivateKey, edit func(c map[string]any)) string {
		c := decodeClaims(t, valid)
		edit(c)
		tok, err := signJWT(key, decodeHeader(t, valid), c)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	hour := time.Hour
	for _, tc := range []struct {
		name, method, auth string
		status             int
		challenge          string
	}{
		{"GET without a token", http.MethodGet, "", 401, base + readScope},
		{"PATCH without a token", http.MethodPatch, "", 401, base + writeScope},
		{"Basic credentials", http.MethodGet, "Basic " + b64.EncodeToString([]byte(NullGUIDUser+":"+rt)), 401, base + readScope},
		{"refresh token as bearer", http.MethodGet, "Bearer " + rt, 401, base + readScope},
		{"other signing key", http.MethodGet, reissue(otherKey, func(map[string]any) {}), 401, base + readScope},
		{"expired", http.MethodGet, reissue(tokenKey, func(c map[string]any) { c["exp"] = time.Now().Add(-hour).Unix() }), 401, base + readScope},
		{"other registry", http.MethodGet, reissue(tokenKey, func(c map[string]any) { c["aud"] = "myregistry.azurecr.io" }), 401, base + readScope},
		{"other issuer", http.MethodGet, reissue(tokenKey, func(c map[string]any) { c["iss"] = "someone" }), 401, base + readScope},
		{"PATCH with metadata_read only", http.MethodPatch, token("repository:team/app:metadata_read"), 401, base + writeScope + insufficient},
		{"GET with pull only", http.MethodGet, token("repository:team/app:pull"), 401, base + readScope + insufficient},
		{"GET with another repository's scope", http.MethodGet, token("repository:team/other:metadata_read"), 401, base + readScope + insufficient},
		{"GET with metadata_read", http.MethodGet, "Bearer " + valid, 200, ""},
		{"PATCH with metadata_write", http.MethodPatch, token("repository:team/app:metadata_write"), 200, ""},
		{"PATCH with *", http.MethodPatch, token("repository:team/app:*"), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, h, tc.method, path, tc.auth, `{}`)
			if res.status != tc.status || res.header.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("got %d %q, want %d %q", res.status, res.header.Get("WWW-Authenticate"), tc.status, tc.challenge)
			}
			if tc.status == http.StatusUnauthorized && acrErrorCode(res) != "UNAUTHORIZED" {
				t.Errorf("body = %s", res.raw)
			}
		})
	}
	// What ggcr's bearer transport does: ask for the challenge's scope on top of its own, and retry.
	t.Run("a client recovers with the challenged scope", func(t *testing.T) {
		res := call(t, h, http.MethodPatch, path, "Bearer "+valid, `{"listEnabled":false}`)
		m := regexp.MustCompile(`scope="([^"]+)"`).FindStringSubmatch(res.header.Get("WWW-Authenticate"))
		if res.status != http.StatusUnauthorized || m == nil {
			t.Fatalf("got %d %q", res.status, res.header.Get("WWW-Authenticate"))
		}
		res = call(t, h, http.MethodPatch, path, token(m[1]+" repository:team/app:metadata_read"), `{"listEnabled":false}`)
		if res.status != http.StatusOK || properties(t, res).Tag.ChangeableAttributes.ListEnabled {
			t.Errorf("retry: %d %s", res.status, res.raw)
		}
	})
}

func TestACRTagAttributesErrors(t *testing.T) {
	h, f, rt := newMetaHarness(t)
	f.put("team/app", "v1", "manifest")
	auth := "Bearer " + scopedToken(t, h, rt, "repository:team/app:metadata_read,metadata_write", "repository:team/gone:metadata_read")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, message            string
	}{
		{"unknown tag", http.MethodGet, "/acr/v1/team/app/_tags/v9", "", 404, "TAG_UNKNOWN", "the specified tag does not exist"},
		{"unknown repository", http.MethodGet, "/acr/v1/team/gone/_tags/v1", "", 404, "TAG_UNKNOWN", "the specified tag does not exist"},
		{"PATCH of an unknown tag", http.MethodPatch, "/acr/v1/team/app/_tags/v9", `{"writeEnabled":false}`, 404, "TAG_UNKNOWN", "the specified tag does not exist"},
		{"truncated JSON", http.MethodPatch, "/acr/v1/team/app/_tags/v1", `{"writeEnabled":`, 400, "BAD_REQUEST", ""},
		{"wrong type", http.MethodPatch, "/acr/v1/team/app/_tags/v1", `{"writeEnabled":"no"}`, 400, "BAD_REQUEST", ""},
		{"not an object", http.MethodPatch, "/acr/v1/team/app/_tags/v1", `[true]`, 400, "BAD_REQUEST", ""},
		{"empty body", http.MethodPatch, "/acr/v1/team/app/_tags/v1", "", 400, "BAD_REQUEST", ""},
		{"no _tags", http.MethodGet, "/acr/v1/team/app", "", 404, "NOT_FOUND", ""},
		{"no tag", http.MethodGet, "/acr/v1/team/app/_tags/", "", 404, "NOT_FOUND", ""},
		{"no repository", http.MethodGet, "/acr/v1/_tags/v1", "", 404, "NOT_FOUND", ""},
		{"invalid repository", http.MethodGet, "/acr/v1/Team/App/_tags/v1", "", 404, "NOT_FOUND", ""},
		{"invalid tag", http.MethodGet, "/acr/v1/team/app/_tags/.v1", "", 404, "NOT_FOUND", ""},
		{"manifests API", http.MethodGet, "/acr/v1/team/app/_manifests", "", 404, "NOT_FOUND", ""},
		{"POST", http.MethodPost, "/acr/v1/team/app/_tags/v1", "{}", 405, "UNSUPPORTED", ""},
		{"DELETE", http.MethodDelete, "/acr/v1/team/app/_tags/v1", "", 405, "UNSUPPORTED", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, h, tc.method, tc.path, auth, tc.body)
			if res.status != tc.status || acrErrorCode(res) != tc.code {
				t.Fatalf("got %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
			if tc.message != "" && !strings.Contains(res.raw, `"message":"`+tc.message+`"`) {
				t.Errorf("body = %s", res.raw)
			}
			if tc.status == http.StatusMethodNotAllowed && res.header.Get("Allow") != "GET, PATCH" {
				t.Errorf("Allow = %q", res.header.Get("Allow"))
			}
		})
	}
	t.Run("registry down", func(t *testing.T) {
		h.upstream.Close()
		if res := call(t, h, http.MethodGet, "/acr/v1/team/app/_tags/v1", auth, ""); res.status != http.StatusBadGateway || acrErrorCode(res) != "UNAVAILABLE" {
			t.Errorf("got %d %s", res.status, res.raw)
		}
	})
}

func TestACRTagLockPersists(t *testing.T) {
	h, f, rt := newMetaHarness(t)
	f.put("team/app", "v1", "manifest")
	auth := "Bearer " + scopedToken(t, h, rt, "repository:team/app:metadata_read,metadata_write,pull,push")
	if res := call(t, h, http.MethodPatch, "/acr/v1/team/app/_tags/v1", auth, `{"writeEnabled":false,"readEnabled":false}`); res.status != http.StatusOK {
		t.Fatalf("PATCH: %d %s", res.status, res.raw)
	}
	// A second front from the same directory: the emulator after a restart.
	_, acrH, _, err := newHandlers(h.cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(method, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "https://"+h.cfg.ACRAddr+path, strings.NewReader("manifest two"))
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		acrH.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve(http.MethodPut, "/v2/team/app/manifests/v1"); rec.Code != http.StatusMethodNotAllowed || rec.Body.String() != disallowedBody {
		t.Errorf("PUT after a restart: %d %s", rec.Code, rec.Body)
	}
	rec := serve(http.MethodGet, "/acr/v1/team/app/_tags/v1")
	want := changeableAttributes{DeleteEnabled: true, ListEnabled: true}
	if p := properties(t, result{raw: rec.Body.String()}); rec.Code != http.StatusOK || p.Tag.ChangeableAttributes != want {
		t.Errorf("GET after a restart: %d %s", rec.Code, rec.Body)
	}

	if err := os.WriteFile(filepath.Join(h.dir, FileACRTagAttributes), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := newHandlers(h.cfg, time.Now); err == nil || !strings.Contains(err.Error(), "tag attributes") {
		t.Errorf("a corrupt attributes file: %v", err)
	}
}

// The lock check is on the path of every blob byte pushed through the front.
func TestTagLockCheckAllocs(t *testing.T) {
	s, err := newTagStore("", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	locked := false
	if _, err := s.record("team/app", "v1", "sha256:aa", attributesPatch{WriteEnabled: &locked}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, target string
		refused        bool
	}{
		{http.MethodPatch, "/v2/team/app/blobs/uploads/u-1?_state=x", false},
		{http.MethodPut, "/v2/team/app/blobs/uploads/u-1?digest=sha256:feed", false},
		{http.MethodPut, "/v2/team/app/manifests/v2", false},
		{http.MethodPut, "/v2/team/app/manifests/v1", true},
		{http.MethodDelete, "/v2/team/app/manifests/sha256:aa", true},
	} {
		req := httptest.NewRequest(tc.method, tc.target, nil)
		req.Header.Set("Authorization", "Bearer tok")
		if got := s.refuses(req); got != tc.refused {
			t.Errorf("%s %s refused: %v, want %v", tc.method, tc.target, got, tc.refused)
		}
		if n := testing.AllocsPerRun(100, func() { s.refuses(req) }); n != 0 {
			t.Errorf("%s %s: %v allocations per check", tc.method, tc.target, n)
		}
	}
}

func TestParseScopesMetadata(t *testing.T) {
	got := parseScopes([]string{"repository:a/b:metadata_read,metadata_write"})
	if len(got) != 1 || got[0].Type != "repository" || got[0].Name != "a/b" || strings.Join(got[0].Actions, ",") != "metadata_read,metadata_write" {
		t.Errorf("parseScopes = %+v", got)
	}
}
