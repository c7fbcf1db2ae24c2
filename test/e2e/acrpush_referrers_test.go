package e2e

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/aks-mlops/mlplugins/pkg/shared/testutil/ocitest"
)

// apAttach writes into repo (in SOURCE_REGISTRY) an artifact of artifactType that refers to
// subject, as `notation sign` or `oras attach` would, and returns its digest.
func apAttach(t *testing.T, repo, subject string, subjectMT types.MediaType, artifactType string) string {
	t.Helper()
	h, err := v1.NewHash(subject)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ocitest.Attach(repo, h, subjectMT, artifactType)
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// referrers lists what refers to subject in an ACR repository.
func (e *apEnv) referrers(t *testing.T, repo, subject string) map[string]string {
	t.Helper()
	h, err := v1.NewHash(subject)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ocitest.Referrers(repo, h, remote.WithAuth(e.acrAuth), remote.WithTransport(e.transport))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestACRPushReferrers: through the real helm, --referrers copies an image's signature, an
// index's SBOM, the SBOM's signature and a cosign tag-convention signature into ACR, before the tags; a rerun writes nothing; without
// the flag nothing refers to the copies.
func TestACRPushReferrers(t *testing.T) {
	const signature, sbomType = "application/vnd.cncf.notary.signature", "application/spdx+json"
	e := newAPEnv(t)
	ns := "acrpush-ref-" + apRandom()
	im := pushSourceImages(t, e.src, ns, 64<<10)
	apiSig := apAttach(t, e.src+"/"+ns+"/api", im.apiD, types.DockerManifestSchema2, signature)
	sbom := apAttach(t, e.src+"/"+ns+"/web", im.webD, types.OCIImageIndex, sbomType)
	sbomSig := apAttach(t, e.src+"/"+ns+"/web", sbom, types.OCIManifestSchema1, signature)
	// cosign's default: a signature under the tag sha256-<hex>.sig.
	wd, err := v1.NewHash(im.workerD)
	if err != nil {
		t.Fatal(err)
	}
	cosignSig, err := ocitest.CosignTag(e.src+"/"+ns+"/worker", wd, ".sig", "application/vnd.dev.cosign.simplesigning.v1+json", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	cosignTag := "sha256-" + wd.Hex + ".sig"
	chart := writeShopChart(t, im, e.src, ns)

	// Without --referrers the images travel alone.
	plain := e.acr + "/ap-" + apRandom()
	if r := e.acrpush(t, nil, chart, plain, "--auth", "azure", "--images-only"); r.Code != 0 {
		t.Fatalf("push (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := e.referrers(t, plain+"/"+ns+"/api", im.apiD); len(got) != 0 {
		t.Errorf("without --referrers the copy has referrers %v", got)
	}

	dst := e.acr + "/ap-" + apRandom()
	r := e.acrpush(t, nil, chart, dst, "--auth", "azure", "--referrers", "--dry-run")
	if r.Code != 0 || strings.Count(r.Stdout, "referrer") != 4 || !strings.Contains(r.Stderr, "4 referrers would be pushed") {
		t.Fatalf("dry run (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := e.referrers(t, dst+"/"+ns+"/api", im.apiD); len(got) != 0 {
		t.Errorf("the dry run wrote referrers %v", got)
	}

	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--referrers")
	if r.Code != 0 || !strings.Contains(r.Stderr, "4 referrers pushed, 0 skipped") {
		t.Fatalf("push (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(l, "referrer ") && !strings.HasSuffix(strings.TrimSpace(l), "pushed") {
			t.Errorf("table row %q, want pushed", l)
		}
	}
	if got := e.referrers(t, dst+"/"+ns+"/api", im.apiD); got[apiSig] != signature || len(got) != 1 {
		t.Errorf("referrers of api in ACR = %v, want its signature %s", got, apiSig)
	}
	if got := e.referrers(t, dst+"/"+ns+"/web", im.webD); got[sbom] != sbomType || len(got) != 1 {
		t.Errorf("referrers of web in ACR = %v, want its SBOM %s", got, sbom)
	}
	if got := e.referrers(t, dst+"/"+ns+"/web", sbom); got[sbomSig] != signature {
		t.Errorf("referrers of the SBOM in ACR = %v, want its signature %s", got, sbomSig)
	}
	for ref, want := range map[string]string{dst + "/" + ns + "/api@" + apiSig: apiSig, dst + "/" + ns + "/api:2.1": im.apiD, dst + "/" + ns + "/worker:" + cosignTag: cosignSig.String(), dst + "/shop:0.3.0": ""} {
		if got := e.digest(t, ref); got == "" || (want != "" && got != want) {
			t.Errorf("%s: %q, want %s", ref, got, want)
		}
	}

	// A rerun finds everything there and uploads nothing.
	offset := e.logSize(t)
	r = e.acrpush(t, nil, chart, dst, "--auth", "azure", "--referrers")
	if r.Code != 0 || !strings.Contains(r.Stderr, "0 referrers pushed, 4 skipped") {
		t.Fatalf("rerun (exit %d):\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if uploads, _ := e.uploadsSince(t, offset, strings.TrimPrefix(dst, e.acr+"/")); uploads != 0 {
		t.Errorf("rerun uploaded %d blobs", uploads)
	}
	e.assertNoSecrets(t)
}
