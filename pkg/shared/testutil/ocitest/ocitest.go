// Package ocitest writes and reads OCI referrers in test registries: the signatures and SBOMs
// that `notation sign` or `oras attach` would leave next to an image.
package ocitest

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Attach writes into repo an artifact of artifactType (an OCI image manifest whose config media
// type is artifactType, with a small random layer and a config of its own) whose subject is the
// manifest subject of media type subjectMT, and returns its digest. On a registry without the
// Referrers API, go-containerregistry keeps the subject's tag-schema index.
func Attach(repo string, subject v1.Hash, subjectMT types.MediaType, artifactType string, opts ...remote.Option) (v1.Hash, error) {
	layer, err := random.Layer(512, types.MediaType("application/jose+json"))
	if err != nil {
		return v1.Hash{}, err
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Config: v1.Config{Labels: map[string]string{"subject": subject.String(), "type": artifactType}}})
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.MediaType(artifactType)), layer)
	if err != nil {
		return v1.Hash{}, err
	}
	art, ok := mutate.Subject(img, v1.Descriptor{MediaType: subjectMT, Digest: subject, Size: 1}).(v1.Image)
	if !ok {
		return v1.Hash{}, fmt.Errorf("artifact is not an image")
	}
	d, err := art.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.NewDigest(repo + "@" + d.String())
	if err != nil {
		return v1.Hash{}, err
	}
	return d, remote.Write(ref, art, opts...)
}

// Referrers lists what refers to subject in repo, as `notation verify` or Ratify would find it:
// digest -> artifact type.
func Referrers(repo string, subject v1.Hash, opts ...remote.Option) (map[string]string, error) {
	d, err := name.NewDigest(repo + "@" + subject.String())
	if err != nil {
		return nil, err
	}
	idx, err := remote.Referrers(d, opts...)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", d, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range im.Manifests {
		out[m.Digest.String()] = m.ArtifactType
	}
	return out, nil
}

// CosignTag writes into repo, under cosign's tag for subject (sha256-<hex> plus suffix: .sig,
// .att or .sbom), an image whose one layer has media type layerType, as cosign does when it does
// not use OCI referrers, and returns its digest. note makes the content differ between calls.
func CosignTag(repo string, subject v1.Hash, suffix, layerType, note string, opts ...remote.Option) (v1.Hash, error) {
	layer, err := random.Layer(256, types.MediaType(layerType))
	if err != nil {
		return v1.Hash{}, err
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Config: v1.Config{Labels: map[string]string{"note": note}}})
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(base, types.OCIManifestSchema1), layer)
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.NewTag(repo + ":" + subject.Algorithm + "-" + subject.Hex + suffix)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}
