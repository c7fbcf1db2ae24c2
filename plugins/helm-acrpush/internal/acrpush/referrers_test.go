package acrpush

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
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
			f := newFixture(t, 512)
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
