package acrpush

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// buildOverlay walks the chart's merged values for image fields and returns an overlay that points
// each at the pushed copy by digest, with the images it found no field for. Two shapes are
// recognised:
//
//   - a map with "repository" (and optionally "registry", "tag", "digest"), the common
//     image: {registry, repository, tag} block; a missing tag defaults to the chart's appVersion.
//     "registry" becomes the destination registry and "repository" the path under it; the digest
//     goes into "digest" when the map has that key, else the tag becomes "<tag>@<digest>".
//   - a string holding a whole reference, replaced by "<target>:<tag>@<digest>".
func buildOverlay(c *Chart, vals map[string]any, images []ImageResult) (map[string]any, []string) {
	bySource := map[string]ImageResult{}
	for _, img := range images {
		if img.Action == ActionPushed || img.Action == ActionSkipped {
			bySource[normalise(img.Source)] = img
		}
	}
	if len(bySource) == 0 {
		return nil, nil
	}
	appVersion := ""
	if c != nil && c.Chart.Metadata != nil {
		appVersion = c.Chart.Metadata.AppVersion
	}
	used := map[string]bool{}
	overlay := walkOverlay(vals, bySource, appVersion, used)
	var unmapped []string
	for src, img := range bySource {
		if !used[src] {
			unmapped = append(unmapped, img.Source)
		}
	}
	sort.Strings(unmapped)
	if overlay == nil {
		overlay = map[string]any{}
	}
	return overlay, unmapped
}

// normalise returns a reference in ggcr's fully qualified form (index.docker.io/library/nginx:1).
func normalise(ref string) string {
	base, dig, hasDigest := strings.Cut(ref, "@")
	r, err := name.ParseReference(base, name.WeakValidation)
	if err != nil {
		return ref
	}
	s := r.Context().Name()
	if t, ok := r.(name.Tag); ok && (strings.Contains(base[strings.LastIndex(base, "/")+1:], ":") || !hasDigest) {
		s += ":" + t.TagStr()
	}
	if hasDigest {
		s += "@" + dig
	}
	return s
}

func walkOverlay(v map[string]any, bySource map[string]ImageResult, appVersion string, used map[string]bool) map[string]any {
	out := map[string]any{}
	if m := imageBlock(v, bySource, appVersion, used); m != nil {
		return m
	}
	for k, val := range v {
		switch x := val.(type) {
		case map[string]any:
			if sub := walkOverlay(x, bySource, appVersion, used); len(sub) > 0 {
				out[k] = sub
			}
		case string:
			if img, ok := bySource[normalise(x)]; ok && strings.ContainsAny(x, ":/@") {
				used[normalise(x)] = true
				out[k] = pinned(img)
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func imageBlock(v map[string]any, bySource map[string]ImageResult, appVersion string, used map[string]bool) map[string]any {
	repo, ok := v["repository"].(string)
	if !ok || repo == "" {
		return nil
	}
	reg, _ := v["registry"].(string)
	tag := scalar(v["tag"])
	if tag == "" {
		tag = appVersion
	}
	if tag == "" {
		tag = "latest"
	}
	full := repo
	if reg != "" {
		full = reg + "/" + repo
	}
	digest, hasDigestKey := v["digest"].(string)
	key := normalise(full + ":" + tag)
	if digest != "" {
		key = normalise(full + ":" + tag + "@" + digest)
	}
	img, ok := bySource[key]
	if !ok {
		return nil
	}
	used[key] = true
	target, _, _ := strings.Cut(img.Target, "@")
	if i := strings.LastIndex(target, ":"); i > strings.LastIndex(target, "/") {
		target = target[:i]
	}
	out := map[string]any{}
	if _, has := v["registry"]; has {
		r, rest, _ := strings.Cut(target, "/")
		out["registry"] = r
		out["repository"] = rest
	} else {
		out["repository"] = target
	}
	if _, has := v["digest"]; has || hasDigestKey {
		out["digest"] = img.Digest
		if tag != "" {
			out["tag"] = tag
		}
	} else {
		out["tag"] = fmt.Sprintf("%s@%s", tag, img.Digest)
	}
	return out
}

func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strings.TrimSuffix(fmt.Sprintf("%v", x), ".0")
	default:
		return fmt.Sprint(x)
	}
}

// pinned is the target reference with the tag kept and the digest added.
func pinned(img ImageResult) string {
	t, _, _ := strings.Cut(img.Target, "@")
	return t + "@" + img.Digest
}
