package acrpush

import (
	"bytes"
	"errors"
	"regexp"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
)

func TestMediaTypesMatchHelm(t *testing.T) {
	if ChartConfigMediaType != registry.ConfigMediaType || ChartLayerMediaType != registry.ChartLayerMediaType {
		t.Fatalf("media types drifted from helm's: %q %q", registry.ConfigMediaType, registry.ChartLayerMediaType)
	}
}

func TestPushChartAndImages(t *testing.T) {
	f := newFixture(t, 2048)
	dst := newTestRegistry(t)
	chartDir := f.writeChart(t)
	d := Destination{Registry: dst.Host, Prefix: "mirror"}

	res, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		dst.Host + "/mirror/team/web:1.0":    f.indexDigest.String(),
		dst.Host + "/mirror/team/api:2.1":    f.apiDigest.String(),
		dst.Host + "/mirror/team/worker:2.1": f.workerDigest.String(),
	}
	if len(res.Images) != 3 {
		t.Fatalf("images = %+v", res.Images)
	}
	for _, img := range res.Images {
		if img.Action != ActionPushed || want[img.Target] != img.Digest {
			t.Errorf("image %+v, want digest %s pushed", img, want[img.Target])
		}
	}
	for ref, dg := range want {
		if got := digestAt(t, ref); got != dg {
			t.Errorf("%s has %q, want %s", ref, got, dg)
		}
	}
	// Both platforms of the index arrived by digest.
	for _, img := range []v1.Image{f.amd64, f.arm64} {
		dg, _ := img.Digest()
		if digestAt(t, dst.Host+"/mirror/team/web@"+dg.String()) != dg.String() {
			t.Errorf("platform manifest %s missing", dg)
		}
	}
	// Every distinct blob was uploaded once; the shared layer was mounted into the second repo.
	// Each upload is one POST and one PUT carrying the blob: no PATCH, no HEAD in between.
	if got := dst.count(isBlobPut); got != f.distinctBlobs+2 {
		t.Errorf("blob PUT uploads = %d, want %d (distinct image blobs + chart config + chart layer)", got, f.distinctBlobs+2)
	}
	if got := dst.count(func(s string) bool { return strings.HasPrefix(s, "PATCH ") }); got != 0 {
		t.Errorf("PATCH requests = %d, want 0", got)
	}
	if got := dst.count(func(s string) bool { return strings.Contains(s, "/blobs/uploads/?") && strings.Contains(s, "mount=") }); got != 1 || res.Transfer.BlobMounts != 1 {
		t.Errorf("mount requests = %d, reported mounts %d; want the shared layer mounted once", got, res.Transfer.BlobMounts)
	}
	if res.Chart == nil || res.Chart.Action != ActionPushed || res.Chart.Reference != dst.Host+"/mirror/shop:0.3.0" {
		t.Fatalf("chart = %+v", res.Chart)
	}

	// Helm's own registry client gets the chart back.
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(&bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := rc.Pull(strings.TrimPrefix(res.Chart.Reference, ""), registry.PullOptWithChart(true))
	if err != nil {
		t.Fatalf("helm registry client pull: %v", err)
	}
	if pulled.Manifest.Digest != res.Chart.Digest {
		t.Errorf("pulled manifest %s, pushed %s", pulled.Manifest.Digest, res.Chart.Digest)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(pulled.Chart.Data))
	if err != nil || ch.Name() != "shop" || ch.Metadata.Version != "0.3.0" {
		t.Fatalf("pulled chart %v: %v", ch, err)
	}

	// The overlay points every image field at the copy, by digest.
	web := res.Overlay["web"].(map[string]any)["image"].(map[string]any)
	if web["registry"] != dst.Host || web["repository"] != "mirror/team/web" || web["tag"] != "1.0@"+f.indexDigest.String() {
		t.Errorf("web overlay = %v", web)
	}
	if got := res.Overlay["api"].(map[string]any)["image"]; got != dst.Host+"/mirror/team/api:2.1@"+f.apiDigest.String() {
		t.Errorf("api overlay = %v", got)
	}
	if len(res.Unmapped) != 1 || !strings.Contains(res.Unmapped[0], "worker") {
		t.Errorf("unmapped = %v, want the annotation-only worker", res.Unmapped)
	}

	// A second run uploads nothing and skips everything.
	dst.reset()
	res2, err := Push(ctxT(t), chartDir, d, anonymous(), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	if n := dst.count(isUpload); n != 0 {
		t.Errorf("second run made %d upload requests", n)
	}
	if n := dst.count(func(s string) bool { return strings.Contains(s, "/blobs/") }); n != 0 {
		t.Errorf("second run made %d blob requests", n)
	}
	if res2.Chart.Action != ActionSkipped || res2.Transfer.BytesPushed != 0 {
		t.Errorf("chart second run: %+v transfer %+v", res2.Chart, res2.Transfer)
	}
	for _, img := range res2.Images {
		if img.Action != ActionSkipped || img.Bytes != 0 {
			t.Errorf("second run image %+v", img)
		}
	}
}

func TestPushRefusesBeforeWriting(t *testing.T) {
	f := newFixture(t, 512)
	chartDir := f.writeChart(t)

	t.Run("missing source image", func(t *testing.T) {
		dst := newTestRegistry(t)
		_, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), WithImages(f.src.Host+"/team/gone:1"))
		if err == nil || !strings.Contains(err.Error(), "source image "+f.src.Host+"/team/gone:1 does not exist") {
			t.Fatalf("err = %v", err)
		}
		if n := dst.count(func(s string) bool { return !strings.HasPrefix(s, "GET /v2/?") && !strings.HasPrefix(s, "HEAD ") }); n != 0 {
			t.Errorf("%d writes/reads beyond checks: %v", n, dst.reqs)
		}
	})
	t.Run("tag exists with another digest", func(t *testing.T) {
		dst := newTestRegistry(t)
		if err := pushImage(dst.Host+"/team/api:2.1", f.worker); err != nil {
			t.Fatal(err)
		}
		dst.reset()
		_, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry())
		if err == nil || !strings.Contains(err.Error(), dst.Host+"/team/api:2.1 already exists with digest "+f.workerDigest.String()) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("err = %v", err)
		}
		if n := dst.count(isUpload); n != 0 || digestAt(t, dst.Host+"/shop:0.3.0") != "" {
			t.Errorf("wrote %d uploads / chart present", n)
		}
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), Force)
		if err != nil {
			t.Fatal(err)
		}
		if digestAt(t, dst.Host+"/team/api:2.1") != f.apiDigest.String() {
			t.Error("--force did not move the tag")
		}
		for _, img := range res.Images {
			if strings.HasSuffix(img.Target, "api:2.1") && img.Replaces != f.workerDigest.String() {
				t.Errorf("replaces = %q", img.Replaces)
			}
		}
	})
	t.Run("render failure", func(t *testing.T) {
		dst := newTestRegistry(t)
		_, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), WithSetValues("web.image=oops"))
		if err == nil || !strings.Contains(err.Error(), "rendering chart \"shop\"") {
			t.Fatalf("err = %v", err)
		}
		if len(dst.reqs) != 0 {
			t.Errorf("registry was contacted: %v", dst.reqs)
		}
	})
	t.Run("dry run", func(t *testing.T) {
		dst := newTestRegistry(t)
		res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), DryRun)
		if err != nil {
			t.Fatal(err)
		}
		if n := dst.count(func(s string) bool { return !strings.HasPrefix(s, "GET /v2/?") && !strings.HasPrefix(s, "HEAD ") }); n != 0 {
			t.Errorf("dry run made %d non-read requests", n)
		}
		if res.Chart.Action != ActionWouldPush || len(res.Images) != 3 || res.Images[0].Action != ActionWouldPush {
			t.Errorf("plan = %+v %+v", res.Chart, res.Images)
		}
	})
}

func TestPushPlatformsAndExclude(t *testing.T) {
	f := newFixture(t, 512)
	dst := newTestRegistry(t)
	chartDir := f.writeChart(t)
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), ImagesOnly,
		WithPlatforms(v1.Platform{OS: "linux", Architecture: "arm64"}), WithExclude(regexp.MustCompile(`worker`)))
	if err != nil {
		t.Fatal(err)
	}
	arm, _ := f.arm64.Digest()
	var targets []string
	for _, img := range res.Images {
		targets = append(targets, img.Target)
		if strings.Contains(img.Target, "/team/web:") && img.Digest != arm.String() {
			t.Errorf("web narrowed to %s, want the arm64 image %s", img.Digest, arm)
		}
	}
	sort.Strings(targets)
	if strings.Join(targets, ",") != dst.Host+"/team/api:2.1,"+dst.Host+"/team/web:1.0" {
		t.Errorf("targets = %v", targets)
	}
	if res.Chart != nil || digestAt(t, dst.Host+"/shop:0.3.0") != "" {
		t.Error("images-only pushed the chart")
	}
	if digestAt(t, dst.Host+"/team/web:1.0") != arm.String() {
		t.Error("narrowed image not at the tag")
	}
}

func TestCopyFailureKeepsChartOut(t *testing.T) {
	f := newFixture(t, 512)
	dst := newTestRegistry(t)
	chartDir := f.writeChart(t)
	// A proxy that refuses every upload into team/api.
	proxy := newFaultProxy(t, dst.URL, faultConfig{refuse: func(method, path string) bool {
		return method == "POST" && strings.Contains(path, "/team/api/blobs/uploads")
	}})
	_, err := Push(ctxT(t), chartDir, Destination{Registry: proxy.Host}, anonymous(), fastRetry())
	var ce *CopyError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a CopyError", err)
	}
	if len(ce.Failed) != 1 || !strings.Contains(ce.Failed[0], "team/api") || len(ce.Arrived) != 2 || !strings.Contains(err.Error(), "chart not pushed") {
		t.Errorf("failed %v arrived %v", ce.Failed, ce.Arrived)
	}
	if digestAt(t, dst.Host+"/shop:0.3.0") != "" {
		t.Error("chart was pushed although an image failed")
	}
	// A rerun without the fault completes and re-uses what arrived.
	dst.reset()
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, img := range res.Images {
		if img.Action == ActionSkipped {
			skipped++
		}
	}
	if skipped != 2 || res.Chart.Action != ActionPushed {
		t.Errorf("rerun: %+v %+v", res.Images, res.Chart)
	}
}

// TestPushWhenMountsAreDeclined: a registry that declines the mount of the shared layer gets it
// uploaded instead, and the push still completes with the source's digests.
func TestPushWhenMountsAreDeclined(t *testing.T) {
	f := newFixture(t, 1024)
	dst := newTestRegistryMounting(t, false)
	chartDir := f.writeChart(t)
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.count(func(s string) bool { return strings.Contains(s, "mount=") }); got != 1 {
		t.Errorf("mount requests = %d, want 1", got)
	}
	if got := dst.count(isBlobPut); got != f.distinctBlobs+3 || res.Transfer.BlobMounts != 0 {
		t.Errorf("blob uploads = %d (want %d: the shared layer twice), reported mounts %d", got, f.distinctBlobs+3, res.Transfer.BlobMounts)
	}
	want := map[string]string{"team/web:1.0": f.indexDigest.String(), "team/api:2.1": f.apiDigest.String(), "team/worker:2.1": f.workerDigest.String()}
	for suffix, dg := range want {
		if got := digestAt(t, dst.Host+"/"+suffix); got != dg {
			t.Errorf("%s: digest %q, want %s", suffix, got, dg)
		}
	}
}

// TestPushTwoTagsOfOneRepository: two images bound for the same target repository share blobs;
// each blob is uploaded once into that repository, never again for the second tag, and the
// other repository that needs them mounts them.
func TestPushTwoTagsOfOneRepository(t *testing.T) {
	f := newFixture(t, 1024)
	// team/api:2.2 is the worker image (the shared layer, worker's own layer and config) in api's repository.
	second := f.src.Host + "/team/api:2.2"
	if err := pushImage(second, f.worker); err != nil {
		t.Fatal(err)
	}
	dst := newTestRegistry(t)
	chartDir := f.writeChart(t)
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dst.Host}, anonymous(), fastRetry(), WithImages(second))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 4 {
		t.Fatalf("images = %+v", res.Images)
	}
	if got := digestAt(t, dst.Host+"/team/api:2.2"); got != f.workerDigest.String() {
		t.Errorf("team/api:2.2 = %q, want %s", got, f.workerDigest)
	}
	// The same 11 distinct blobs as without the second tag (+ the chart's two); the worker's
	// blobs and the shared layer reach the repository they are not uploaded to by mounts.
	if got := dst.count(isBlobPut); got != f.distinctBlobs+2 {
		t.Errorf("blob PUT uploads = %d, want %d: a blob went twice into one repository", got, f.distinctBlobs+2)
	}
	if got := dst.count(func(s string) bool { return strings.Contains(s, "mount=") }); got != 3 || res.Transfer.BlobMounts != 3 {
		t.Errorf("mounts = %d requested, %d reported; want 3 (shared layer, worker's layer and config into the other repository)", got, res.Transfer.BlobMounts)
	}
}
