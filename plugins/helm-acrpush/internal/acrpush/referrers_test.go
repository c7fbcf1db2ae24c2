package acrpush

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/aks-mlops/mlplugins/pkg/shared/testutil/ocitest"
)

const (
	notarySignature = "application/vnd.cncf.notary.signature"
	spdxSBOM        = "application/spdx+json"
)

func attach(t *testing.T, repo string, subject v1.Hash, subjectMT types.MediaType, artifactType string) v1.Hash {
	t.Helper()
	d, err := ocitest.Attach(repo, subject, subjectMT, artifactType)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func referrersAt(t *testing.T, repo string, subject v1.Hash) map[string]string {
	t.Helper()
	got, err := ocitest.Referrers(repo, subject)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestPushReferrers: with Referrers, an image's signature, an index's SBOM and the SBOM's own
// signature travel with the images, into a registry without the Referrers API (tag schema) and
// one with it; a rerun writes nothing, and a signature added later is the only thing a third run
// uploads. Without Referrers no referrer is asked for.
func TestPushReferrers(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []registry.Option
	}{
		{"tag schema", nil},
		{"referrers API", []registry.Option{registry.WithReferrersSupport(true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The source lists referrers the same way as the target (tag schema or API).
			f := newFixture(t, 512, tc.opts...)
			apiSig := attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, notarySignature)
			sbom := attach(t, f.src.Host+"/team/web", f.indexDigest, types.OCIImageIndex, spdxSBOM)
			sbomSig := attach(t, f.src.Host+"/team/web", sbom, types.OCIManifestSchema1, notarySignature)
			chartDir := f.writeChart(t)
			dst := newTestRegistryMounting(t, true, tc.opts...)
			d := Destination{Registry: dst.Host}

			dry, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Referrers, DryRun)
			if err != nil {
				t.Fatal(err)
			}
			if got := countReferrers(dry, ActionWouldPush); got != 3 {
				t.Errorf("dry run: %d referrers would be pushed, want 3: %+v", got, dry.Images)
			}
			if dst.count(func(s string) bool { return strings.HasPrefix(s, "PUT ") }) != 0 {
				t.Fatal("the dry run wrote")
			}

			res, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Referrers)
			if err != nil {
				t.Fatal(err)
			}
			// The signature is there before the tag is.
			sigAt, tagAt := -1, -1
			dst.mu.Lock()
			for i, r := range dst.reqs {
				switch r {
				case "PUT /v2/team/api/manifests/" + apiSig.String() + "?":
					sigAt = i
				case "PUT /v2/team/api/manifests/2.1?":
					tagAt = i
				}
			}
			dst.mu.Unlock()
			if sigAt < 0 || tagAt < sigAt {
				t.Errorf("signature written at request %d, tag at %d: want the signature first", sigAt, tagAt)
			}
			if got := countReferrers(res, ActionPushed); got != 3 {
				t.Errorf("%d referrers pushed, want 3: %+v", got, res.Images)
			}
			if got := referrersAt(t, dst.Host+"/team/api", f.apiDigest); got[apiSig.String()] != notarySignature || len(got) != 1 {
				t.Errorf("referrers of api = %v, want its signature %s", got, apiSig)
			}
			if got := referrersAt(t, dst.Host+"/team/web", f.indexDigest); got[sbom.String()] != spdxSBOM || len(got) != 1 {
				t.Errorf("referrers of web = %v, want its SBOM %s", got, sbom)
			}
			if got := referrersAt(t, dst.Host+"/team/web", sbom); got[sbomSig.String()] != notarySignature {
				t.Errorf("referrers of the SBOM = %v, want its signature %s", got, sbomSig)
			}
			if got := referrersAt(t, dst.Host+"/team/worker", f.workerDigest); len(got) != 0 {
				t.Errorf("worker has referrers %v, none at the source", got)
			}

			// Rerun: everything there, nothing written.
			dst.reset()
			again, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Referrers)
			if err != nil {
				t.Fatal(err)
			}
			if got := countReferrers(again, ActionSkipped); got != 3 {
				t.Errorf("rerun: %d referrers skipped, want 3", got)
			}
			if n := dst.count(func(s string) bool { return isUpload(s) || strings.HasPrefix(s, "PUT ") }); n != 0 {
				t.Errorf("rerun wrote %d times", n)
			}

			// A signature added at the source later: the image is skipped, the signature travels alone.
			workerSig := attach(t, f.src.Host+"/team/worker", f.workerDigest, types.DockerManifestSchema2, notarySignature)
			dst.reset()
			third, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry(), Referrers)
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range third.Images {
				if img.Action != ActionSkipped {
					t.Errorf("%s: %s, want skipped", img.Target, img.Action)
				}
			}
			if got := countReferrers(third, ActionPushed); got != 1 {
				t.Errorf("third run pushed %d referrers, want 1", got)
			}
			if got := referrersAt(t, dst.Host+"/team/worker", f.workerDigest); got[workerSig.String()] != notarySignature {
				t.Errorf("referrers of worker = %v, want %s", got, workerSig)
			}
			// Its config and its layer.
			if got := dst.count(isBlobPut); got != 2 {
				t.Errorf("third run uploaded %d blobs, want 2", got)
			}
		})
	}

	// A referrer deleted at the source stays listed in the tag-schema index: it is passed over.
	t.Run("deleted referrer", func(t *testing.T) {
		f := newFixture(t, 512)
		gone := attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, notarySignature)
		kept := attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, spdxSBOM)
		ref, err := name.NewDigest(f.src.Host + "/team/api@" + gone.String())
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Delete(ref); err != nil {
			t.Fatal(err)
		}
		if got := referrersAt(t, f.src.Host+"/team/api", f.apiDigest); len(got) != 2 {
			t.Fatalf("source index lists %v, want both", got)
		}
		dst := newTestRegistry(t)
		res, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers)
		if err != nil {
			t.Fatal(err)
		}
		if got := referrersAt(t, dst.Host+"/team/api", f.apiDigest); len(got) != 1 || got[kept.String()] != spdxSBOM {
			t.Errorf("referrers of api = %v, want only %s", got, kept)
		}
		if got := countReferrers(res, ActionPushed); got != 1 {
			t.Errorf("%d referrers pushed, want 1", got)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], gone.String()) || !strings.Contains(res.Warnings[0], "it is gone") {
			t.Errorf("warnings = %q, want one naming %s", res.Warnings, gone)
		}
	})

	// cosign's tag convention: sha256-<hex>.sig travels under its tag; a different one at the
	// target is an error before anything is written, unless --force.
	t.Run("cosign tags", func(t *testing.T) {
		const simpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
		f := newFixture(t, 512)
		sig, err := ocitest.CosignTag(f.src.Host+"/team/api", f.apiDigest, ".sig", simpleSigning, "source")
		if err != nil {
			t.Fatal(err)
		}
		sigTag := "sha256-" + f.apiDigest.Hex + ".sig"
		chartDir := f.writeChart(t)
		dst := newTestRegistry(t)
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers)
		if err != nil {
			t.Fatal(err)
		}
		if got := digestAt(t, dst.Host+"/team/api:"+sigTag); got != sig.String() {
			t.Errorf("%s at the target = %q, want %s", sigTag, got, sig)
		}
		var rr []ReferrerResult
		for _, img := range res.Images {
			rr = append(rr, img.Referrers...)
		}
		if len(rr) != 1 || rr[0].Target != dst.Host+"/team/api:"+sigTag || rr[0].ArtifactType != simpleSigning || rr[0].Action != ActionPushed {
			t.Errorf("referrers = %+v", rr)
		}
		again, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers)
		if err != nil || countReferrers(again, ActionSkipped) != 1 {
			t.Fatalf("rerun: %v, %+v", err, again)
		}

		other := newTestRegistry(t)
		theirs, err := ocitest.CosignTag(other.Host+"/team/api", f.apiDigest, ".sig", simpleSigning, "target")
		if err != nil {
			t.Fatal(err)
		}
		other.reset()
		_, err = Push(ctxT(t), chartDir, Destination{Registry: other.Host}, anonymous(), fastRetry(), Referrers)
		if err == nil || !strings.Contains(err.Error(), sigTag+" already exists with digest "+theirs.String()) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("err = %v, want the cosign tag conflict", err)
		}
		if n := other.count(func(s string) bool { return isUpload(s) || strings.HasPrefix(s, "PUT ") }); n != 0 {
			t.Errorf("the refused push wrote %d times", n)
		}
		if _, err := Push(ctxT(t), chartDir, Destination{Registry: other.Host}, anonymous(), fastRetry(), Referrers, Force); err != nil {
			t.Fatal(err)
		}
		if got := digestAt(t, other.Host+"/team/api:"+sigTag); got != sig.String() {
			t.Errorf("with --force %s = %q, want %s", sigTag, got, sig)
		}
	})

	// Two tags of one image in one repository share its signature: written once, before either tag.
	t.Run("two tags share a signature", func(t *testing.T) {
		f := newFixture(t, 512)
		sig := attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, notarySignature)
		if err := pushImage(f.src.Host+"/team/api:latest", f.api); err != nil {
			t.Fatal(err)
		}
		dst := newTestRegistry(t)
		// The signature's write is slow: a tag that does not wait for it is written first.
		target, err := url.Parse(dst.URL)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(target)
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifests/"+sig.String()) {
				time.Sleep(300 * time.Millisecond)
			}
			rp.ServeHTTP(w, r)
		}))
		defer slow.Close()
		res, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: strings.TrimPrefix(slow.URL, "http://")}, anonymous(), fastRetry(), Referrers, WithImages(f.src.Host+"/team/api:latest"))
		if err != nil {
			t.Fatal(err)
		}
		sigAt, tags := -1, map[string]int{}
		dst.mu.Lock()
		for i, r := range dst.reqs {
			switch r {
			case "PUT /v2/team/api/manifests/" + sig.String() + "?":
				if sigAt < 0 {
					sigAt = i
				}
			case "PUT /v2/team/api/manifests/2.1?", "PUT /v2/team/api/manifests/latest?":
				tags[r] = i
			}
		}
		dst.mu.Unlock()
		if len(tags) != 2 {
			t.Fatalf("tags written: %v", tags)
		}
		for tag, at := range tags {
			if sigAt < 0 || at < sigAt {
				t.Errorf("%s at request %d, the signature at %d: want the signature first", tag, at, sigAt)
			}
		}
		if n := dst.count(func(s string) bool { return s == "PUT /v2/team/api/manifests/"+sig.String()+"?" }); n != 1 {
			t.Errorf("signature written %d times, want once", n)
		}
		if got := countReferrers(res, ActionPushed); got != 2 {
			t.Errorf("rows with the signature pushed = %d, want 2 (one per tag): %+v", got, res.Images)
		}
	})

	// One SBOM attached by cosign to an index and to one of its platform images has the same
	// bytes under two tags: both tags travel.
	t.Run("cosign tags with the same bytes", func(t *testing.T) {
		f := newFixture(t, 512)
		sbomImg, err := random.Image(128, 1)
		if err != nil {
			t.Fatal(err)
		}
		amd, _ := f.amd64.Digest()
		var tags []string
		for _, d := range []v1.Hash{f.indexDigest, amd} {
			tag := "sha256-" + d.Hex + ".sbom"
			tags = append(tags, tag)
			if err := pushImage(f.src.Host+"/team/web:"+tag, sbomImg); err != nil {
				t.Fatal(err)
			}
		}
		dst := newTestRegistry(t)
		if _, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers); err != nil {
			t.Fatal(err)
		}
		want, _ := sbomImg.Digest()
		for _, tag := range tags {
			if got := digestAt(t, dst.Host+"/team/web:"+tag); got != want.String() {
				t.Errorf("%s at the target = %q, want %s", tag, got, want)
			}
		}
	})

	// A referrer that fails to be written: those before it are reported pushed, it and the rest
	// not pushed, the tag is not written and the chart stays out.
	t.Run("a referrer write fails", func(t *testing.T) {
		f := newFixture(t, 512)
		first := attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, notarySignature)
		second := attach(t, f.src.Host+"/team/api", first, types.OCIManifestSchema1, notarySignature)
		dst := newTestRegistry(t)
		proxy := newFaultProxy(t, dst.URL, faultConfig{refuse: func(method, path string) bool {
			return method == "PUT" && strings.HasSuffix(path, "/manifests/"+second.String())
		}})
		res, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: proxy.Host}, anonymous(), fastRetry(), Referrers)
		var ce *CopyError
		if !errors.As(err, &ce) || res == nil {
			t.Fatalf("err = %v, want a CopyError", err)
		}
		actions := map[string]string{}
		for _, img := range res.Images {
			for _, r := range img.Referrers {
				actions[r.Digest] = r.Action
			}
		}
		if actions[first.String()] != ActionPushed || actions[second.String()] != ActionNotPushed {
			t.Errorf("referrer actions = %v, want %s pushed and %s not pushed", actions, first, second)
		}
		if digestAt(t, dst.Host+"/team/api:2.1") != "" || digestAt(t, dst.Host+"/shop:0.3.0") != "" {
			t.Error("the tag or the chart was written although a referrer failed")
		}
	})

	// Signed again at the source, cosign's .sig holds the old signature and a new one: a rerun
	// replaces the target's without --force.
	t.Run("cosign signed again", func(t *testing.T) {
		f := newFixture(t, 512)
		tag := f.src.Host + "/team/api:sha256-" + f.apiDigest.Hex + ".sig"
		once, err := random.Image(128, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := pushImage(tag, once); err != nil {
			t.Fatal(err)
		}
		chartDir := f.writeChart(t)
		dst := newTestRegistry(t)
		if _, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers); err != nil {
			t.Fatal(err)
		}
		more, err := random.Layer(128, types.MediaType("application/vnd.dev.cosign.simplesigning.v1+json"))
		if err != nil {
			t.Fatal(err)
		}
		twice, err := mutate.AppendLayers(once, more)
		if err != nil {
			t.Fatal(err)
		}
		if err := pushImage(tag, twice); err != nil {
			t.Fatal(err)
		}
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers)
		if err != nil {
			t.Fatalf("rerun after signing again: %v", err)
		}
		want, _ := twice.Digest()
		if got := digestAt(t, dst.Host+"/team/api:sha256-"+f.apiDigest.Hex+".sig"); got != want.String() || countReferrers(res, ActionPushed) != 1 {
			t.Errorf(".sig at the target = %s, want %s", got, want)
		}
	})

	// --platform narrowing an index leaves the index's SBOM behind, with a warning.
	t.Run("narrowed index", func(t *testing.T) {
		f := newFixture(t, 512)
		attach(t, f.src.Host+"/team/web", f.indexDigest, types.OCIImageIndex, spdxSBOM)
		dst := newTestRegistry(t)
		res, err := Push(ctxT(t), f.writeChart(t), Destination{Registry: dst.Host}, anonymous(), fastRetry(), Referrers,
			WithPlatforms(v1.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "1 referrers of "+f.src.Host+"/team/web@"+f.indexDigest.String()) || !strings.Contains(res.Warnings[0], "--platform narrowed") {
			t.Errorf("warnings = %q", res.Warnings)
		}
	})

	// Without Referrers nothing asks for them.
	f := newFixture(t, 512)
	attach(t, f.src.Host+"/team/api", f.apiDigest, types.DockerManifestSchema2, notarySignature)
	if _, err := ocitest.CosignTag(f.src.Host+"/team/api", f.apiDigest, ".sig", "application/vnd.dev.cosign.simplesigning.v1+json", "source"); err != nil {
		t.Fatal(err)
	}
	chartDir := f.writeChart(t)
	dst := newTestRegistry(t)
	f.src.reset()
	if _, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry()); err != nil {
		t.Fatal(err)
	}
	asked := func(s string) bool {
		return strings.Contains(s, "/referrers/") || strings.Contains(s, "/manifests/sha256-")
	}
	if n := f.src.count(asked) + dst.count(asked); n != 0 {
		t.Errorf("%d referrer requests without Referrers", n)
	}
	if got := referrersAt(t, dst.Host+"/team/api", f.apiDigest); len(got) != 0 {
		t.Errorf("referrers copied without Referrers: %v", got)
	}
	if got := digestAt(t, dst.Host+"/team/api:sha256-"+f.apiDigest.Hex+".sig"); got != "" {
		t.Errorf("cosign signature copied without Referrers: %s", got)
	}
}

func countReferrers(res *Result, action string) int {
	n := 0
	for _, img := range res.Images {
		for _, r := range img.Referrers {
			if r.Action == action {
				n++
			}
		}
	}
	return n
}
