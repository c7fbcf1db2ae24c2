package acrpush

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
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

// FindImages walks every pod spec in the rendered manifests (containers, init containers and
// ephemeral containers of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs
// and pod templates) and adds the images listed in the artifacthub.io/images annotation of the
// chart and its enabled subcharts. The result is sorted by reference.
func FindImages(rendered map[string]string, ch *chart.Chart) ([]FoundImage, error) {
	found := map[string]*FoundImage{}
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
			return nil, fmt.Errorf("reading rendered %s: %w", file, err)
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
				}
			}
		}
	}
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
					add(e.Image, fmt.Sprintf("chart %s annotation %s", c.Name(), ArtifactHubImagesAnnotation))
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
			return nil, err
		}
	}
	out := make([]FoundImage, 0, len(found))
	for _, f := range found {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
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
