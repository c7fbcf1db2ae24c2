package acrpush

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Chart is a loaded chart together with the archive that will be pushed.
type Chart struct {
	// Chart is the chart as Helm's loader sees it.
	Chart *chart.Chart
	// Archive is the packaged chart (.tgz) pushed as the chart layer.
	Archive []byte
	// Created is the time recorded in the OCI annotations: the newest file of the chart, so that
	// packaging the same chart twice gives the same digest.
	Created time.Time
}

// LoadChart loads a chart directory or packaged .tgz. A directory is packaged the way
// `helm package` lays it out, with file times set to the newest file's time (or
// SOURCE_DATE_EPOCH) so that the archive is reproducible. A non-empty version replaces the chart's
// version, as `helm package --version` does.
func LoadChart(p, version string) (*Chart, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("loading chart %q: %w", p, err)
	}
	var (
		ch      *chart.Chart
		archive []byte
		created time.Time
	)
	if fi.IsDir() {
		if ch, err = loader.LoadDir(p); err != nil {
			return nil, fmt.Errorf("loading chart %q: %w", p, err)
		}
		if created, err = newestFile(p); err != nil {
			return nil, fmt.Errorf("loading chart %q: %w", p, err)
		}
	} else {
		if archive, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("loading chart %q: %w", p, err)
		}
		if ch, err = loader.LoadArchive(bytes.NewReader(archive)); err != nil {
			return nil, fmt.Errorf("loading chart %q: %w", p, err)
		}
		created = newestEntry(archive)
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
			created = time.Unix(sec, 0)
		}
	}
	created = created.UTC().Truncate(time.Second)
	if version != "" && version != ch.Metadata.Version {
		ch.Metadata.Version = version
		archive = nil
	}
	if err := ch.Validate(); err != nil {
		return nil, fmt.Errorf("chart %q is invalid: %w", p, err)
	}
	if err := checkDependencies(ch); err != nil {
		return nil, err
	}
	if archive == nil {
		if archive, err = packageChart(ch, created); err != nil {
			return nil, fmt.Errorf("packaging chart %q: %w", ch.Name(), err)
		}
	}
	return &Chart{Chart: ch, Archive: archive, Created: created}, nil
}

// checkDependencies fails when Chart.yaml names a dependency that is not vendored in charts/,
// the same check `helm install` makes.
func checkDependencies(ch *chart.Chart) error {
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	var missing []string
	for _, d := range ch.Metadata.Dependencies {
		if !have[d.Name] {
			missing = append(missing, d.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("chart %q: dependencies %s are missing from charts/ (run 'helm dependency build')", ch.Name(), strings.Join(missing, ", "))
	}
	return nil
}

func newestFile(dir string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.ModTime().After(newest) {
				newest = fi.ModTime()
			}
		}
		return nil
	})
	return newest, err
}

func newestEntry(archive []byte) time.Time {
	var newest time.Time
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return newest
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return newest
		}
		if h.ModTime.After(newest) {
			newest = h.ModTime
		}
	}
}

// packageChart writes ch as a gzipped tar laid out like chartutil.Save, with fixed file times and
// no gzip timestamp, so that the same chart always gives the same bytes.
func packageChart(ch *chart.Chart, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Comment = "Helm"
	tw := tar.NewWriter(zw)
	if err := writeChart(tw, ch, "", mtime); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeChart(tw *tar.Writer, c *chart.Chart, prefix string, mtime time.Time) error {
	if c.Name() == "" || path.Base(c.Name()) != c.Name() {
		return fmt.Errorf("invalid chart name %q", c.Name())
	}
	base := path.Join(prefix, c.Name())
	put := func(name string, data []byte) error {
		h := &tar.Header{Name: path.Join(base, name), Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	meta := *c.Metadata
	if meta.APIVersion == chart.APIVersionV1 {
		meta.Dependencies = nil
	}
	cdata, err := yaml.Marshal(&meta)
	if err != nil {
		return err
	}
	if err := put(chartutil.ChartfileName, cdata); err != nil {
		return err
	}
	if c.Metadata.APIVersion == chart.APIVersionV2 && c.Lock != nil {
		ldata, err := yaml.Marshal(c.Lock)
		if err != nil {
			return err
		}
		if err := put("Chart.lock", ldata); err != nil {
			return err
		}
	}
	for _, f := range c.Raw {
		if f.Name == chartutil.ValuesfileName {
			if err := put(chartutil.ValuesfileName, f.Data); err != nil {
				return err
			}
		}
	}
	if c.Schema != nil {
		if !json.Valid(c.Schema) {
			return errors.New("invalid JSON in " + chartutil.SchemafileName)
		}
		if err := put(chartutil.SchemafileName, c.Schema); err != nil {
			return err
		}
	}
	for _, f := range c.Templates {
		if err := put(f.Name, f.Data); err != nil {
			return err
		}
	}
	for _, f := range c.Files {
		if err := put(f.Name, f.Data); err != nil {
			return err
		}
	}
	for _, dep := range c.Dependencies() {
		if err := writeChart(tw, dep, path.Join(base, chartutil.ChartsDir), mtime); err != nil {
			return err
		}
	}
	return nil
}

// ReadValues merges values files and --set expressions the way helm does: files in order, each
// deep-merged over the previous, then every --set applied.
func ReadValues(files, sets []string) (map[string]any, error) {
	base := map[string]any{}
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("reading values file %q: %w", f, err)
		}
		cur := map[string]any{}
		if err := yaml.Unmarshal(data, &cur); err != nil {
			return nil, fmt.Errorf("parsing values file %q: %w", f, err)
		}
		base = mergeMaps(base, cur)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, base); err != nil {
			return nil, fmt.Errorf("parsing --set %q: %w", s, err)
		}
	}
	return base, nil
}

func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]any); ok {
			if bv, ok := out[k]; ok {
				if bvm, ok := bv.(map[string]any); ok {
					out[k] = mergeMaps(bvm, vm)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// Render renders the chart's templates with vals through Helm's engine, as `helm template` does
// (release name "release-name", namespace "default", default capabilities, no cluster lookups),
// and returns the rendered manifests by template name.
func (c *Chart) Render(vals map[string]any) (map[string]string, chartutil.Values, error) {
	ch := c.Chart
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return nil, nil, fmt.Errorf("rendering chart %q: %w", ch.Name(), err)
	}
	opts := chartutil.ReleaseOptions{Name: "release-name", Namespace: "default", Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, nil, fmt.Errorf("rendering chart %q: %w", ch.Name(), err)
	}
	out, err := engine.Render(ch, top)
	if err != nil {
		return nil, nil, fmt.Errorf("rendering chart %q: %w", ch.Name(), err)
	}
	merged, _ := top["Values"].(chartutil.Values)
	return out, merged, nil
}

// Ref returns the chart's OCI reference under dst: REGISTRY/PREFIX/<name>:<version> with + in the
// version written as _, as helm push does.
func (c *Chart) Ref(dst Destination) string {
	return dst.join(c.Chart.Name()) + ":" + strings.ReplaceAll(c.Chart.Metadata.Version, "+", "_")
}
