package acrpush

import (
	"encoding/json"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
)

func TestBuildOverlayShapes(t *testing.T) {
	const d1, d2, d3, d4 = "sha256:1111", "sha256:2222", "sha256:3333", "sha256:4444"
	images := []ImageResult{
		{Source: "index.docker.io/library/nginx:1.25", Target: "acr.io/m/library/nginx:1.25", Digest: d1, Action: ActionPushed},
		{Source: "ghcr.io/org/app:2.0", Target: "acr.io/m/org/app:2.0", Digest: d2, Action: ActionSkipped},
		{Source: "quay.io/x/sidecar:0.9", Target: "acr.io/m/x/sidecar:0.9", Digest: d3, Action: ActionPushed},
		{Source: "quay.io/x/extra:1", Target: "acr.io/m/x/extra:1", Digest: d4, Action: ActionPushed},
	}
	vals := map[string]any{
		"web":     map[string]any{"image": map[string]any{"repository": "nginx", "tag": "1.25", "pullPolicy": "IfNotPresent"}},
		"app":     map[string]any{"image": map[string]any{"registry": "ghcr.io", "repository": "org/app", "digest": ""}},
		"sidecar": map[string]any{"image": "quay.io/x/sidecar:0.9"},
		"other":   map[string]any{"repository": "https://github.com/x/y", "name": "not an image"},
	}
	c := &Chart{Chart: &chart.Chart{Metadata: &chart.Metadata{Name: "c", AppVersion: "2.0"}}}
	overlay, unmapped := buildOverlay(c, vals, images)
	got, _ := json.Marshal(overlay)
	want := `{"app":{"image":{"digest":"sha256:2222","registry":"acr.io","repository":"m/org/app","tag":"2.0"}},` +
		`"sidecar":{"image":"acr.io/m/x/sidecar:0.9@sha256:3333"},` +
		`"web":{"image":{"repository":"acr.io/m/library/nginx","tag":"1.25@sha256:1111"}}}`
	if string(got) != want {
		t.Errorf("overlay\n got %s\nwant %s", got, want)
	}
	if len(unmapped) != 1 || unmapped[0] != "quay.io/x/extra:1" {
		t.Errorf("unmapped = %v", unmapped)
	}
}
