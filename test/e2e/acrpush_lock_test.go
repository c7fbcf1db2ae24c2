package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// tagAttributes reads a tag's changeable attributes through the ACR emulator's /acr/v1 API, with
// a token of the test's own.
func (e *apEnv) tagAttributes(t *testing.T, repo, tag string) map[string]bool {
	t.Helper()
	reg, err := name.NewRegistry(e.acr)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := transport.NewWithContext(context.Background(), reg, e.acrAuth, e.transport, []string{"repository:" + repo + ":metadata_read"})
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "https", Host: e.acr, Path: "/acr/v1/" + repo + "/_tags/" + tag}
	resp, err := (&http.Client{Transport: rt}).Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u.Path, resp.Status)
	}
	var props struct {
		Tag struct {
			Attributes map[string]bool `json:"changeableAttributes"`
		} `json:"tag"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&props); err != nil {
		t.Fatal(err)
	}
	return props.Tag.Attributes
}

// apLockResult is the part of `-o json` that says what --lock did.
type apLockResult struct {
	Chart  struct{ Action, Lock string } `json:"chart"`
	Images []struct {
		Target, Action, Lock string
	} `json:"images"`
}

func decodeLock(t *testing.T, stdout string) apLockResult {
	t.Helper()
	var res apLockResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("decoding -o json: %v\n%s", err, stdout)
	}
	return res
}

// TestACRPushLock: through the real helm, --lock locks the chart's and the images' tags in the
// ACR emulator after the push (its /acr/v1 API, enforced on later writes); a rerun finds them
// locked and sends no PATCH; a locked tag that --force would move is refused before anything is
// written; without --lock, the refused write says the tag is locked.
func TestACRPushLock(t *testing.T) {
	e := newAPEnv(t)
	ns := "acrpush-lock-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 64<<10)
	chart := writeShopChart(t, im, e.src, ns)
	prefix := "ap-" + apRandom()
	dst := e.acr + "/" + prefix
	tags := [][2]string{{prefix + "/" + ns + "/web", "1.0"}, {prefix + "/" + ns + "/api", "2.1"}, {prefix + "/" + ns + "/worker", "2.1"}, {prefix + "/shop", "0.3.0"}}
	patches := func(offset int64) int {
		n := 0
		for _, l := range e.logLinesSinceAny(t, offset, "/acr/v1/"+prefix+"/") {
			if strings.Contains(l, " PATCH ") {
				n++
			}
		}
		return n
	}

	r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "--lock", "--dry-run", "-o", "json")
	if r.Code != 0 || !strings.Contains(r.Stderr, "4 tags would be locked, 0 already locked") {
		t.Fatalf("dry run (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if res := decodeLock(t, r.Stdout); res.Chart.Lock != "would lock" || len(res.Images) != 3 || res.Images[0].Lock != "would lock" {
		t.Errorf("dry run: %+v", res)
	}
	if got := e.tags(t, dst+"/shop"); got != nil {
		t.Fatalf("the dry run wrote the chart: %v", got)
	}

	offset := e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--lock", "-o", "json")
	if r.Code != 0 || !strings.Contains(r.Stderr, "4 tags locked, 0 already locked") {
		t.Fatalf("push (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	res := decodeLock(t, r.Stdout)
	if res.Chart.Action != "pushed" || res.Chart.Lock != "locked" {
		t.Errorf("chart %+v", res.Chart)
	}
	for _, img := range res.Images {
		if img.Action != "pushed" || img.Lock != "locked" {
			t.Errorf("image %+v", img)
		}
	}
	for _, rt := range tags {
		if a := e.tagAttributes(t, rt[0], rt[1]); a["writeEnabled"] || a["deleteEnabled"] || !a["readEnabled"] {
			t.Errorf("%s:%s attributes %v", rt[0], rt[1], a)
		}
	}
	if n := patches(offset); n != 4 {
		t.Errorf("%d PATCH requests in the emulator's log, want 4", n)
	}

	// The registry enforces the lock: another image cannot take the tag.
	other, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(e.ref(t, dst+"/"+ns+"/api:2.1"), other, remote.WithAuth(e.acrAuth), remote.WithTransport(e.transport)); err == nil || !strings.Contains(err.Error(), "REGISTRY_DISALLOWED_OPERATION") {
		t.Errorf("writing over the locked tag: %v", err)
	}

	offset = e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--lock")
	if r.Code != 0 || strings.Count(r.Stdout, "skipped, already locked") != 4 || !strings.Contains(r.Stderr, "0 tags locked, 4 already locked") {
		t.Fatalf("rerun (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if n := patches(offset); n != 0 {
		t.Errorf("the rerun sent %d PATCH", n)
	}

	// The source's api image changes; its target tag is locked with the old digest.
	if err := remote.Write(e.ref(t, im.api), other); err != nil {
		t.Fatal(err)
	}
	offset = e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--lock", "--force")
	apOneError(t, r, prefix+"/"+ns+"/api:2.1 is locked in the registry (writeEnabled=false): --force cannot move it")
	for _, l := range e.logLinesSince(t, offset, prefix) {
		if strings.Contains(l, " PUT ") || strings.Contains(l, " POST ") || strings.Contains(l, " PATCH ") || strings.Contains(l, " DELETE ") {
			t.Errorf("--force --lock wrote: %s", l)
		}
	}
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--force")
	if r.Code != 1 || !strings.Contains(r.Stderr, "the tag or its repository is locked, writeEnabled=false (unlock it with 'az acr repository update --name "+e.acr+" --image "+prefix+"/"+ns+"/api:2.1 --write-enabled true'") {
		t.Errorf("--force without --lock (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := e.digest(t, dst+"/"+ns+"/api:2.1"); got != im.apiD {
		t.Errorf("the locked tag moved to %s", got)
	}

	// Outside ACR there is no tag lock.
	r = e.acrpush(t, nil, chart, e.src+"/"+prefix, "--auth", "anonymous", "--plain-http", "--lock")
	apOneError(t, r, "--lock sets tag attributes through Azure Container Registry's API: "+e.src+" is not an ACR login server")
	e.assertNoSecrets(t)
}

// logLinesSinceAny returns the ACR emulator's request log lines containing path written after
// offset.
func (e *apEnv) logLinesSinceAny(t *testing.T, offset int64, path string) []string {
	t.Helper()
	var out []string
	for _, l := range e.logLinesAfter(t, offset) {
		if strings.Contains(l, "acr: ") && strings.Contains(l, path) {
			out = append(out, l)
		}
	}
	return out
}
