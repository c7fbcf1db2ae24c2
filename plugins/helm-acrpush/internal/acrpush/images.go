package acrpush

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// ArtifactHubImagesAnnotation is the Chart.yaml annotation listing a chart's images
// (https://artifacthub.io/docs/topics/annotations/helm/).
const ArtifactHubImagesAnnotation = "artifacthub.io/images"

// podSpecPaths says where each workload kind keeps its pod spec.
var podSpecPaths = map[string][]string{
	"Pod":                   {"spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"PodTemplate":           {"template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

// FoundImage is an image reference and where it was found.
type FoundImage struct {
	// Ref is the reference as written.
	Ref string
	// Where lists the places that use it, such as "Deployment/web (templates/web.yaml) container app".
	Where []string
}

// SupersededImage is an artifacthub.io/images entry left out because the rendered chart runs a
// container of that name with another image: the values moved it.
type SupersededImage struct {
	Image     string   `json:"image"`
	Container string   `json:"container"`
	Rendered  []string `json:"rendered"`
}

// FindImages walks every pod spec in the rendered manifests (containers, init containers and
// ephemeral containers of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs
// and pod templates) and adds the images listed in the artifacthub.io/images annotation of the
// chart and its enabled subcharts. The annotation is written for the chart's default values: an
// entry whose name is a rendered container that runs another image is superseded by the rendering
// and left out (returned apart); entries naming no rendered container are kept, as the annotation
// may list images the templates do not show. The result is sorted by reference.
func FindImages(rendered map[string]string, ch *chart.Chart) ([]FoundImage, []SupersededImage, error) {
	found := map[string]*FoundImage{}
	containers := map[string][]string{} // rendered container name -> images
	add := func(ref, where string) {
		ref = strings.TrimSpace(ref)
		if ref == "" {
			return
		}
		f := found[ref]
		if f == nil {
			f = &FoundImage{Ref: ref}
			found[ref] = f
		}
		f.Where = append(f.Where, where)
	}
	names := make([]string, 0, len(rendered))
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, file := range names {
		if !isManifestFile(file) {
			continue
		}
		docs, err := splitDocuments(rendered[file])
		if err != nil {
			return nil, nil, fmt.Errorf("reading rendered %s: %w", file, err)
		}
		for _, doc := range docs {
			kind, _ := doc["kind"].(string)
			specPath, ok := podSpecPaths[kind]
			if !ok {
				continue
			}
			objName, _ := lookup(doc, "metadata", "name").(string)
			spec, _ := lookup(doc, specPath...).(map[string]any)
			if spec == nil {
				continue
			}
			for _, field := range []string{"initContainers", "containers", "ephemeralContainers"} {
				list, _ := spec[field].([]any)
				for _, c := range list {
					cm, _ := c.(map[string]any)
					img, _ := cm["image"].(string)
					cname, _ := cm["name"].(string)
					add(img, fmt.Sprintf("%s/%s (%s) %s %s", kind, objName, file, strings.TrimSuffix(field, "s"), cname))
					if img = strings.TrimSpace(img); cname != "" && img != "" && !slices.Contains(containers[cname], img) {
						containers[cname] = append(containers[cname], img)
					}
				}
			}
		}
	}
	var superseded []SupersededImage
	var walk func(c *chart.Chart) error
	walk = func(c *chart.Chart) error {
		if c.Metadata != nil {
			if s := c.Metadata.Annotations[ArtifactHubImagesAnnotation]; strings.TrimSpace(s) != "" {
				var list []struct {
					Name  string `json:"name"`
					Image string `json:"image"`
				}
				if err := yaml.Unmarshal([]byte(s), &list); err != nil {
					return fmt.Errorf("chart %q: parsing annotation %s: %w", c.Name(), ArtifactHubImagesAnnotation, err)
				}
				for _, e := range list {
					img := strings.TrimSpace(e.Image)
					if imgs := containers[e.Name]; len(imgs) > 0 && !slices.Contains(imgs, img) {
						superseded = append(superseded, SupersededImage{Image: img, Container: e.Name, Rendered: imgs})
						continue
					}
					add(img, fmt.Sprintf("chart %s annotation %s", c.Name(), ArtifactHubImagesAnnotation))
				}
			}
		}
		for _, d := range c.Dependencies() {
			if err := walk(d); err != nil {
				return err
			}
		}
		return nil
	}
	if ch != nil {
		if err := walk(ch); err != nil {
			return nil, nil, err
		}
	}
	out := make([]FoundImage, 0, len(found))
	for _, f := range found {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, superseded, nil
}

func isManifestFile(name string) bool {
	base := name[strings.LastIndex(name, "/")+1:]
	if strings.HasPrefix(base, "_") || strings.EqualFold(base, "NOTES.txt") {
		return false
	}
	return !strings.HasSuffix(base, ".tpl")
}

// splitDocuments decodes a multi-document YAML stream into objects; List kinds are flattened.
func splitDocuments(s string) ([]map[string]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	var out []map[string]any
	for {
		raw, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			return nil, err
		}
		if obj == nil {
			continue
		}
		if kind, _ := obj["kind"].(string); strings.HasSuffix(kind, "List") {
			items, _ := obj["items"].([]any)
			for _, it := range items {
				if m, ok := it.(map[string]any); ok {
					out = append(out, m)
				}
			}
			continue
		}
		out = append(out, obj)
	}
}

func lookup(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}
