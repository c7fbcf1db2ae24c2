package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/aks-mlops/mlplugins/examples/model-server/models"
)

// ServerPackage is the Go package of the model server.
const ServerPackage = "github.com/aks-mlops/mlplugins/examples/model-server"

// Image layout and runtime settings, matching the mlapp chart (port 8080, MODEL_PATH=/models, user 65532).
const (
	binaryPath = "model-server"
	modelDir   = "models"
	modelFile  = "models/model.json"
	port       = "8080"
	nonRoot    = "65532"
)

// Options says what to build and where to push it.
type Options struct {
	// Registry is host[:port] with an optional path prefix; "http://" forces plain HTTP.
	Registry string
	// Repository is the repository under Registry.
	Repository string
	// Versions are the model versions; each becomes a tag.
	Versions []string
	// Platforms are "os/arch[/variant]" strings.
	Platforms []string
	// PlainHTTP talks HTTP instead of HTTPS to the registry.
	PlainHTTP bool
	// Epoch is the time of every file and of the image config (reproducible builds); zero means
	// 1970-01-01T00:00:00Z.
	Epoch time.Time
	// Binaries maps a platform to a prebuilt server binary; platforms not in it are cross-built.
	Binaries map[string]string
	// Transport is the HTTP transport to the registry; nil uses remote.DefaultTransport.
	Transport http.RoundTripper
	// Log receives progress; nil discards it.
	Log io.Writer
}

// Validate checks the options without I/O.
func (o *Options) Validate() error {
	if o.Registry == "" {
		return errors.New("no registry: set --registry or SOURCE_REGISTRY")
	}
	if len(o.Versions) == 0 || len(o.Platforms) == 0 {
		return errors.New("need at least one version and one platform")
	}
	for _, v := range o.Versions {
		if _, err := models.Read(v); err != nil {
			return err
		}
	}
	for _, p := range o.Platforms {
		if _, err := v1.ParsePlatform(p); err != nil || !strings.Contains(p, "/") {
			return fmt.Errorf("invalid platform %q (want os/arch[/variant])", p)
		}
	}
	return nil
}

// Result is what Build pushed: printed as JSON.
type Result struct {
	Repository string        `json:"repository"`
	Images     []ImageResult `json:"images"`
}

// ImageResult is one pushed multi-arch index.
type ImageResult struct {
	Tag       string `json:"tag"`
	Reference string `json:"reference"` // repository@digest
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// Size is the sum of the unique blobs and manifests of the index, in bytes (compressed).
	Size      int64            `json:"size"`
	Manifests []ManifestResult `json:"manifests"`
}

// ManifestResult is one platform image of an index.
type ManifestResult struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
	// Size is the image's manifest, config and compressed layers, in bytes.
	Size int64 `json:"size"`
}

// Build cross-builds the server, assembles one index per version and pushes it.
func Build(ctx context.Context, o *Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	registry, insecure := strings.CutPrefix(o.Registry, "http://")
	registry = strings.TrimSuffix(registry, "/")
	var nameOpts []name.Option
	if insecure || o.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	repo, err := name.NewRepository(registry+"/"+o.Repository, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("parsing repository: %w", err)
	}

	binaries, cleanup, err := buildBinaries(ctx, o.Platforms, o.Binaries, logw)
	defer cleanup()
	if err != nil {
		return nil, err
	}

	remoteOpts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if o.Transport != nil {
		remoteOpts = append(remoteOpts, remote.WithTransport(o.Transport))
	}
	res := &Result{Repository: repo.String()}
	epoch := o.Epoch
	if epoch.IsZero() {
		epoch = time.Unix(0, 0).UTC()
	}
	for _, version := range o.Versions {
		idx, err := Assemble(version, o.Platforms, binaries, epoch)
		if err != nil {
			return nil, err
		}
		tag := repo.Tag(version)
		if err := remote.WriteIndex(tag, idx, remoteOpts...); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", tag, err)
		}
		ir, err := describe(repo, version, idx)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "pushed %s %s (%d bytes)\n", tag, ir.Digest, ir.Size)
		res.Images = append(res.Images, *ir)
	}
	return res, nil
}

// buildBinaries returns a server binary per platform, cross-building the ones not given.
func buildBinaries(ctx context.Context, platforms []string, given map[string]string, logw io.Writer) (map[string]string, func(), error) {
	out := map[string]string{}
	dir, err := os.MkdirTemp("", "model-server-build-")
	if err != nil {
		return nil, func() {}, fmt.Errorf("creating build directory: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	for _, p := range platforms {
		if b, ok := given[p]; ok {
			out[p] = b
			continue
		}
		bin := filepath.Join(dir, strings.ReplaceAll(p, "/", "-"), "model-server")
		if err := CrossBuild(ctx, p, bin); err != nil {
			return nil, cleanup, err
		}
		fi, _ := os.Stat(bin)
		fmt.Fprintf(logw, "built %s for %s (%d bytes)\n", ServerPackage, p, fi.Size())
		out[p] = bin
	}
	return out, cleanup, nil
}

// CrossBuild compiles the model server statically for platform into out. The flags make the binary
// depend on the sources only: no cgo, no paths, no build ID, no VCS stamp.
func CrossBuild(ctx context.Context, platform, out string) error {
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return fmt.Errorf("parsing platform %q: %w", platform, err)
	}
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, ServerPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-mod=readonly")
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the server for %s: %w: %s", platform, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Assemble builds the multi-arch index of one model version from a server binary per platform. It does
// no I/O besides reading the binaries, so the digests can be checked without a registry.
func Assemble(version string, platforms []string, binaries map[string]string, epoch time.Time) (v1.ImageIndex, error) {
	modelJSON, err := models.Read(version)
	if err != nil {
		return nil, err
	}
	modelLayer, err := tarLayer(epoch, entry{name: modelDir + "/", mode: 0o755}, entry{name: modelFile, mode: 0o444, data: modelJSON})
	if err != nil {
		return nil, fmt.Errorf("model layer: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, ps := range platforms {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, fmt.Errorf("parsing platform %q: %w", ps, err)
		}
		bin, err := os.ReadFile(binaries[ps])
		if err != nil {
			return nil, fmt.Errorf("reading the %s binary: %w", ps, err)
		}
		binLayer, err := tarLayer(epoch, entry{name: binaryPath, mode: 0o555, data: bin})
		if err != nil {
			return nil, fmt.Errorf("binary layer: %w", err)
		}
		img, err := image(*p, version, epoch, binLayer, modelLayer)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        plainImage{img},
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}},
		})
	}
	return idx, nil
}

// image stacks the binary layer (shared by every version) and the model layer on an empty OCI base.
func image(p v1.Platform, version string, epoch time.Time, binLayer, modelLayer v1.Layer) (v1.Image, error) {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	created := v1.Time{Time: epoch}
	img, err := mutate.Append(base,
		mutate.Addendum{Layer: binLayer, History: v1.History{Created: created, CreatedBy: "go build -trimpath " + ServerPackage, Comment: "model server, CGO_ENABLED=0"}},
		mutate.Addendum{Layer: modelLayer, History: v1.History{Created: created, CreatedBy: "go run ./examples/model-server/train", Comment: "model " + version}},
	)
	if err != nil {
		return nil, fmt.Errorf("appending layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = created
	cf.Config = v1.Config{
		Entrypoint:   []string{"/" + binaryPath},
		User:         nonRoot + ":" + nonRoot,
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{port + "/tcp": {}},
		Env: []string{
			"HOST=0.0.0.0",
			"PORT=" + port,
			"MODEL_PATH=/" + modelDir,
		},
		Labels: map[string]string{
			"org.opencontainers.image.source":      "https://github.com/aks-mlops/mlplugins/tree/main/examples/model-server",
			"org.opencontainers.image.title":       "mlapp model-server",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.description": "Iris classifier served over the KServe v1 protocol",
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// plainImage describes itself in an index without the artifactType go-containerregistry derives from
// the config media type: it is a runnable image, not an artifact, and indexes built by Docker or ko
// carry no artifactType for images either.
type plainImage struct{ v1.Image }

// Descriptor returns the image's descriptor without artifactType.
func (p plainImage) Descriptor() (*v1.Descriptor, error) {
	d, err := partial.Descriptor(p.Image)
	if err != nil {
		return nil, err
	}
	d.ArtifactType = ""
	return d, nil
}

type entry struct {
	name string
	mode int64
	data []byte
}

// tarLayer writes entries into a gzip-compressed OCI layer, owned by root, timestamped epoch.
func tarLayer(epoch time.Time, entries ...entry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// describe summarises a pushed index.
func describe(repo name.Repository, tag string, idx v1.ImageIndex) (*ImageResult, error) {
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	mt, _ := idx.MediaType()
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	isz, _ := idx.Size()
	r := &ImageResult{Tag: tag, Reference: repo.Digest(d.String()).String(), Digest: d.String(), MediaType: string(mt), Size: isz}
	seen := map[v1.Hash]bool{}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		size := desc.Size + m.Config.Size
		blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
		for _, l := range m.Layers {
			size += l.Size
		}
		r.Size += desc.Size
		for _, b := range blobs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				r.Size += b.Size
			}
		}
		r.Manifests = append(r.Manifests, ManifestResult{Platform: desc.Platform.String(), Digest: desc.Digest.String(), Size: size})
	}
	return r, nil
}
