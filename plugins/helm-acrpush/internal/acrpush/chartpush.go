package acrpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"helm.sh/helm/v3/pkg/chart"
)

// Helm's OCI media types (helm.sh/helm/v3/pkg/registry; kept here so the binary does not link
// Helm's registry client, and pinned to Helm's values by a test).
const (
	ChartConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
	ChartLayerMediaType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// chartArtifact is a chart laid out as Helm stores it in an OCI registry: a config blob with the
// Chart.yaml metadata as JSON, one layer with the packaged chart, and the OCI annotations
// `helm push` writes.
type chartArtifact struct {
	config, layer blobBytes
	manifest      []byte
	digest        v1.Hash
}

type blobBytes struct {
	data []byte
	desc v1.Descriptor
}

func newBlob(data []byte, mt string) blobBytes {
	h, n, _ := v1.SHA256(bytes.NewReader(data))
	return blobBytes{data: data, desc: v1.Descriptor{MediaType: types.MediaType(mt), Digest: h, Size: n}}
}

func newChartArtifact(c *Chart) (*chartArtifact, error) {
	cfg, err := json.Marshal(c.Chart.Metadata)
	if err != nil {
		return nil, err
	}
	a := &chartArtifact{
		config: newBlob(cfg, ChartConfigMediaType),
		layer:  newBlob(c.Archive, ChartLayerMediaType),
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        a.config.desc,
		Layers:        []v1.Descriptor{a.layer.desc},
		Annotations:   chartAnnotations(c.Chart.Metadata, c.Created),
	}
	if a.manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	a.digest, _, err = v1.SHA256(bytes.NewReader(a.manifest))
	return a, err
}

// chartAnnotations mirrors Helm's generateOCIAnnotations: the standard OCI keys from Chart.yaml,
// then every Chart.yaml annotation except title and version. The creation time is the chart's
// (not the clock's), so pushing the same chart again gives the same digest.
func chartAnnotations(meta *chart.Metadata, created time.Time) map[string]string {
	out := map[string]string{}
	put := func(k, v string) {
		if strings.TrimSpace(v) != "" {
			out[k] = v
		}
	}
	put("org.opencontainers.image.description", meta.Description)
	put("org.opencontainers.image.title", meta.Name)
	put("org.opencontainers.image.version", meta.Version)
	put("org.opencontainers.image.url", meta.Home)
	if !created.IsZero() {
		put("org.opencontainers.image.created", created.UTC().Format(time.RFC3339))
	}
	if len(meta.Sources) > 0 {
		put("org.opencontainers.image.source", meta.Sources[0])
	}
	if len(meta.Maintainers) > 0 {
		var sb strings.Builder
		for i, m := range meta.Maintainers {
			sb.WriteString(m.Name)
			if m.Email != "" {
				sb.WriteString(" (" + m.Email + ")")
			}
			if i < len(meta.Maintainers)-1 {
				sb.WriteString(", ")
			}
		}
		put("org.opencontainers.image.authors", sb.String())
	}
	for k, v := range meta.Annotations {
		if k == "org.opencontainers.image.title" || k == "org.opencontainers.image.version" {
			continue
		}
		out[k] = v
	}
	return out
}

// uploadBlobs writes the config and chart blobs into ref's repository, both at once, skipping
// those it holds already.
func (a *chartArtifact) uploadBlobs(ctx context.Context, up *blobUploader, sess *sessions, ref name.Reference, count func(int64)) error {
	blobs := []blobBytes{a.config, a.layer}
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, b := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			there, err := blobExists(ctx, sess, ref.Context(), b.desc.Digest)
			if err != nil || there {
				errs[i] = err
				return
			}
			d := blobDesc{Digest: b.desc.Digest, Size: b.desc.Size, MediaType: b.desc.MediaType}
			open := func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.data)), nil }
			_, errs[i] = up.upload(ctx, ref.Context(), d, nil, open, count)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// putManifest writes the manifest under ref: from then on the chart exists.
func (a *chartArtifact) putManifest(ctx context.Context, pusher *remote.Pusher, ref name.Reference) error {
	return pusher.Put(ctx, ref, rawManifest{raw: a.manifest, mt: types.OCIManifestSchema1})
}
