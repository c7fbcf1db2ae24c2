package azemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FileACRTagAttributes is where the ACR login server keeps tag attributes (locks) in Config.Dir,
// so that a restarted emulator keeps them.
const FileACRTagAttributes = "acr-tag-attributes.json"

// manifestAccept is the Accept header of the front's tag lookups: OCI and Docker, images and indexes.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// Repository and tag grammars of the distribution spec; they also keep names out of the challenge's quoting.
var (
	repoNameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagNameRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// errTagUnknown is ACR's message for a tag the registry does not hold.
var errTagUnknown = errors.New("the specified tag does not exist")

// changeableAttributes are a tag's ACR changeable attributes. writeEnabled and deleteEnabled are
// enforced on manifest PUT and DELETE through the front; readEnabled and listEnabled are stored and
// reported but not enforced (pulls and tag lists go to the registry untouched).
type changeableAttributes struct {
	DeleteEnabled bool `json:"deleteEnabled"`
	WriteEnabled  bool `json:"writeEnabled"`
	ReadEnabled   bool `json:"readEnabled"`
	ListEnabled   bool `json:"listEnabled"`
}

// defaultAttributes are those of a tag nobody has locked.
var defaultAttributes = changeableAttributes{DeleteEnabled: true, WriteEnabled: true, ReadEnabled: true, ListEnabled: true}

// attributesPatch is a PATCH body: absent fields stay unchanged.
type attributesPatch struct {
	DeleteEnabled *bool `json:"deleteEnabled"`
	WriteEnabled  *bool `json:"writeEnabled"`
	ReadEnabled   *bool `json:"readEnabled"`
	ListEnabled   *bool `json:"listEnabled"`
}

// apply returns c with the fields p sets.
func (p attributesPatch) apply(c changeableAttributes) changeableAttributes {
	set := func(dst, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.DeleteEnabled, p.DeleteEnabled)
	set(&c.WriteEnabled, p.WriteEnabled)
	set(&c.ReadEnabled, p.ReadEnabled)
	set(&c.ListEnabled, p.ListEnabled)
	return c
}

// tagProperties is ACR's ArtifactTagProperties, the answer of GET and PATCH.
type tagProperties struct {
	Registry  string     `json:"registry"`
	ImageName string     `json:"imageName"`
	Tag       tagDetails `json:"tag"`
}

// tagDetails is the tag part of tagProperties.
type tagDetails struct {
	Name                 string               `json:"name"`
	Digest               string               `json:"digest"`
	CreatedTime          time.Time            `json:"createdTime"`
	LastUpdateTime       time.Time            `json:"lastUpdateTime"`
	Signed               bool                 `json:"signed"`
	ChangeableAttributes changeableAttributes `json:"changeableAttributes"`
}

// ociError is one element of an OCI error body, with the detail ACR adds to some of them.
type ociError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Detail  map[string]any `json:"detail"`
}

// writeDisallowed writes ACR's answer to a manifest write or delete that a tag lock forbids.
func writeDisallowed(w http.ResponseWriter) {
	w.Header().Set("X-Ms-Correlation-Request-Id", newUUID())
	writeJSON(w, http.StatusMethodNotAllowed, map[string][]ociError{"errors": {{
		Code:    "REGISTRY_DISALLOWED_OPERATION",
		Message: "The operation is disallowed on this registry, repository or image.",
		Detail:  map[string]any{},
	}}})
}

// meta serves ACR's tag attributes API, GET and PATCH /acr/v1/{repository}/_tags/{tag}, which
// `az acr repository show` and `az acr repository update --write-enabled false` call.
func (a *acrFront) meta(w http.ResponseWriter, r *http.Request) {
	repo, tag, ok := tagPath(r.URL.Path)
	if !ok {
		writeACRError(w, http.StatusNotFound, "NOT_FOUND", "the requested resource was not found")
		return
	}
	action := "metadata_read"
	switch r.Method {
	case http.MethodGet:
	case http.MethodPatch:
		action = "metadata_write"
	default:
		w.Header().Set("Allow", "GET, PATCH")
		writeACRError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the method is not allowed on tag attributes")
		return
	}
	caller, ok := a.authorize(w, r, repo, action)
	if !ok {
		return
	}
	var patch attributesPatch
	if r.Method == http.MethodPatch {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&patch); err != nil {
			writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "the body is not a JSON object of changeable attributes")
			return
		}
	}
	digest, err := a.resolveTag(r.Context(), caller, repo, tag)
	if errors.Is(err, errTagUnknown) {
		writeACRError(w, http.StatusNotFound, "TAG_UNKNOWN", errTagUnknown.Error())
		return
	}
	if err != nil {
		a.logf("acr: looking up %s:%s: %v", repo, tag, err)
		writeACRError(w, http.StatusBadGateway, "UNAVAILABLE", "the registry backend is unavailable")
		return
	}
	rec, err := a.tags.record(repo, tag, digest, patch)
	if err != nil {
		a.logf("acr: %v", err)
		writeACRError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "could not save the tag attributes")
		return
	}
	writeJSON(w, http.StatusOK, tagProperties{Registry: a.loginServer, ImageName: repo, Tag: tagDetails{
		Name:                 tag,
		Digest:               rec.Digest,
		CreatedTime:          rec.CreatedTime,
		LastUpdateTime:       rec.LastUpdateTime,
		ChangeableAttributes: rec.Attributes,
	}})
}

// tagPath splits /acr/v1/{repository}/_tags/{tag} on its last /_tags/ (repositories hold slashes).
func tagPath(p string) (repo, tag string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/acr/v1/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/_tags/")
	if i < 0 {
		return "", "", false
	}
	repo, tag = rest[:i], rest[i+len("/_tags/"):]
	return repo, tag, repoNameRE.MatchString(repo) && tagNameRE.MatchString(tag)
}

// authorize checks that the bearer access token grants action on repo. Otherwise it answers 401
// with a challenge naming the scope, from which ggcr's bearer transport and the az CLI get a token
// that does.
func (a *acrFront) authorize(w http.ResponseWriter, r *http.Request, repo, action string) (*accessClaims, bool) {
	challenge := a.challenge() + fmt.Sprintf(",scope=%q", "repository:"+repo+":"+action)
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		w.Header().Set("WWW-Authenticate", challenge)
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
		return nil, false
	}
	c, err := a.verifyAccessToken(raw)
	if err != nil {
		a.logf("acr: tag attributes: access token refused: %v", err)
		w.Header().Set("WWW-Authenticate", challenge)
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
		return nil, false
	}
	if !c.allows(repo, action) {
		w.Header().Set("WWW-Authenticate", challenge+`,error="insufficient_scope"`)
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", fmt.Sprintf("the access token does not grant %s on repository %s", action, repo))
		return nil, false
	}
	return c, true
}

// resolveTag asks the registry for the digest repo:tag points at, with a pull token the front
// issues to the caller for that repository.
func (a *acrFront) resolveTag(ctx context.Context, caller *accessClaims, repo, tag string) (string, error) {
	tok, err := a.issueAccessToken(caller.Sub, caller.Tenant, caller.Appid, []accessEntry{{Type: "repository", Name: repo, Actions: []string{"pull"}}})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, a.upstream.JoinPath("v2", repo, "manifests", tag).String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", manifestAccept)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := a.client.Do(req)
	if err != nil {
		return "", err
	}
	_ = resp.Body.Close()
	switch digest := resp.Header.Get("Docker-Content-Digest"); {
	case resp.StatusCode == http.StatusNotFound:
		return "", errTagUnknown
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("the registry answered %s", resp.Status)
	case digest == "":
		return "", errors.New("the registry named no digest")
	default:
		return digest, nil
	}
}

// tagKey names a tag in a repository.
type tagKey struct{ repo, tag string }

// tagRecord is what the front knows of a tag: its attributes, and the digest it pointed at when
// last seen (a tag with writeEnabled=false cannot move).
type tagRecord struct {
	Repository     string               `json:"repository"`
	Tag            string               `json:"tag"`
	Digest         string               `json:"digest"`
	CreatedTime    time.Time            `json:"createdTime"`
	LastUpdateTime time.Time            `json:"lastUpdateTime"`
	Attributes     changeableAttributes `json:"changeableAttributes"`
}

// guarded reports whether the tag forbids deleting its manifest.
func (r tagRecord) guarded() bool { return !r.Attributes.WriteEnabled || !r.Attributes.DeleteEnabled }

// tagStore holds the tags the front has seen, in memory and, when path is set, in a JSON file.
// The counts let every registry request check for locks without taking mu.
type tagStore struct {
	path    string
	now     func() time.Time
	mu      sync.Mutex
	tags    map[tagKey]tagRecord
	size    atomic.Int64 // len(tags)
	guarded atomic.Int64 // records that forbid a manifest write or delete
}

// newTagStore loads the records saved at path ("" keeps them in memory only); a missing file is empty.
func newTagStore(path string, now func() time.Time) (*tagStore, error) {
	s := &tagStore{path: path, now: now, tags: map[tagKey]tagRecord{}}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []tagRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	for _, rec := range recs {
		s.tags[tagKey{rec.Repository, rec.Tag}] = rec
	}
	s.recount()
	return s, nil
}

// record returns the tag's record after noting its current digest and applying patch, creating it
// with the default attributes the first time. A change that cannot be saved is undone.
func (s *tagStore) record(repo, tag, digest string, patch attributesPatch) (tagRecord, error) {
	k := tagKey{repo, tag}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, existed := s.tags[k]
	now := s.now().UTC()
	rec := old
	if !existed {
		rec = tagRecord{Repository: repo, Tag: tag, CreatedTime: now, Attributes: defaultAttributes}
	}
	rec.Digest = digest
	rec.Attributes = patch.apply(rec.Attributes)
	if existed && rec.Digest == old.Digest && rec.Attributes == old.Attributes {
		return rec, nil
	}
	rec.LastUpdateTime = now
	s.tags[k] = rec
	if err := s.save(); err != nil {
		if existed {
			s.tags[k] = old
		} else {
			delete(s.tags, k)
		}
		return tagRecord{}, err
	}
	s.recount()
	return rec, nil
}

// refuses reports whether a tag lock forbids r: a PUT of a manifest by tag when that tag has
// writeEnabled=false, or a DELETE of a manifest by a tag, or by a digest a tag points at, when that
// tag has writeEnabled=false or deleteEnabled=false. Every registry request passes here: blob
// requests leave at the method, the count or the path test, without locking or allocating.
// Requests without credentials go on to the registry, whose 401 comes first, as on ACR.
func (s *tagStore) refuses(r *http.Request) bool {
	if r.Method != http.MethodPut && r.Method != http.MethodDelete || s.guarded.Load() == 0 {
		return false
	}
	repo, ref, ok := manifestPath(r.URL.Path)
	if !ok || r.Header.Get("Authorization") == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !isDigest(ref) {
		rec, ok := s.tags[tagKey{repo, ref}]
		return ok && (!rec.Attributes.WriteEnabled || r.Method == http.MethodDelete && !rec.Attributes.DeleteEnabled)
	}
	if r.Method == http.MethodPut {
		return false
	}
	for k, rec := range s.tags {
		if k.repo == repo && rec.Digest == ref && rec.guarded() {
			return true
		}
	}
	return false
}

// observe follows the manifest writes the registry accepted: a PUT by tag moves that tag's record
// to the new digest, a DELETE drops the records of the tags it removed (the tag, or every tag at
// the digest). It runs on every proxied response and leaves early unless the front knows tags.
func (s *tagStore) observe(resp *http.Response) error {
	r := resp.Request
	put := r.Method == http.MethodPut && resp.StatusCode == http.StatusCreated
	del := r.Method == http.MethodDelete && resp.StatusCode == http.StatusAccepted
	if !put && !del || s.size.Load() == 0 {
		return nil
	}
	repo, ref, ok := manifestPath(r.URL.Path)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for k, rec := range s.tags {
		switch {
		case k.repo != repo:
		case put && k.tag == ref:
			if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != rec.Digest {
				rec.Digest, rec.LastUpdateTime = d, s.now().UTC()
				s.tags[k] = rec
				changed = true
			}
		case del && (k.tag == ref || rec.Digest == ref):
			delete(s.tags, k)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	s.recount()
	return s.save()
}

// recount refreshes the counts after a change; s.mu is held.
func (s *tagStore) recount() {
	var guarded int64
	for _, rec := range s.tags {
		if rec.guarded() {
			guarded++
		}
	}
	s.size.Store(int64(len(s.tags)))
	s.guarded.Store(guarded)
}

// save writes every record to s.path, sorted, in one rename; s.mu is held.
func (s *tagStore) save() error {
	if s.path == "" {
		return nil
	}
	recs := make([]tagRecord, 0, len(s.tags))
	for _, rec := range s.tags {
		recs = append(recs, rec)
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Repository != recs[j].Repository {
			return recs[i].Repository < recs[j].Repository
		}
		return recs[i].Tag < recs[j].Tag
	})
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding tag attributes: %w", err)
	}
	return writeFileAtomic(s.path, append(b, '\n'), 0o644)
}

// manifestPath splits /v2/{repository}/manifests/{reference} without allocating.
func manifestPath(p string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	repo, ref = rest[:i], rest[i+len("/manifests/"):]
	return repo, ref, ref != "" && !strings.Contains(ref, "/")
}

// isDigest tells a digest reference (algorithm:hex) from a tag, which cannot hold a colon.
func isDigest(ref string) bool { return strings.Contains(ref, ":") }
