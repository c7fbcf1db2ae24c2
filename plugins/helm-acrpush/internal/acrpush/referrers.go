package acrpush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxReferrerDepth is how many levels of referrers travel with an image: its signatures and
// SBOMs, their signatures, and one level more.
const maxReferrerDepth = 3

// referrer is an artifact whose subject is one of an image's manifests: a signature (Notation,
// cosign), an SBOM, an attestation. With --referrers it travels with the image, by digest.
type referrer struct {
	subject      v1.Hash
	digest       v1.Hash
	artifactType string
	manifests    []manifestNode // children first, the referrer's own manifest last
	blobs        []blobDesc
	action       string // ActionSkipped when the target repository holds it
}

// ReferrerResult describes one referrer of an image.
type ReferrerResult struct {
	// Subject is the digest of the manifest it refers to.
	Subject string `json:"subject"`
	// Target is where it is (or goes): the image's target repository, by digest.
	Target       string `json:"target"`
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifactType,omitempty"`
	Action       string `json:"action"`
}

// findReferrers lists at the source the referrers of every manifest the image copies, theirs in
// turn (up to maxReferrerDepth levels), through the Referrers API or, where the registry has none,
// its tag schema; then it asks the target repository which it holds. When an index is narrowed
// to some platforms, the source index's own referrers stay behind: they name a manifest the
// target does not get.
func findReferrers(ctx context.Context, sess *sessions, img *plannedImage, jobs int, log *logger) error {
	repo := img.ref.From.Context()
	puller, err := sess.puller(ctx, repo.Registry)
	if err != nil {
		return sourceError(img.ref, err)
	}
	seen := map[v1.Hash]bool{}
	var subjects []v1.Hash
	for _, m := range img.manifests {
		seen[m.Digest] = true
		subjects = append(subjects, m.Digest)
	}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		found := make([][]*referrer, len(subjects))
		if err := forEach(len(subjects), jobs, func(i int) error {
			var err error
			found[i], err = listReferrers(ctx, puller, img, repo, subjects[i], log)
			return err
		}); err != nil {
			return err
		}
		subjects = nil
		for _, rs := range found {
			for _, r := range rs {
				if seen[r.digest] {
					continue
				}
				seen[r.digest] = true
				img.referrers = append(img.referrers, r)
				subjects = append(subjects, r.digest)
			}
		}
	}
	return forEach(len(img.referrers), jobs, func(i int) error {
		r := img.referrers[i]
		existing, err := checkTarget(ctx, sess, img.ref.To.Digest(r.digest.String()))
		if err != nil {
			return err
		}
		r.action = ActionWouldPush
		if existing == r.digest.String() {
			r.action = ActionSkipped
		}
		return nil
	})
}

// listReferrers fetches the referrers of subject, each with its manifests and blobs. An entry of
// a tag-schema index whose manifest was deleted since (nothing prunes those indexes) is passed over.
func listReferrers(ctx context.Context, puller *remote.Puller, img *plannedImage, repo name.Repository, subject v1.Hash, log *logger) ([]*referrer, error) {
	idx, err := remote.Referrers(repo.Digest(subject.String()), remote.Reuse(puller), remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("source image %s: listing the referrers of %s: %w", img.ref.Source, subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("source image %s: listing the referrers of %s: %w", img.ref.Source, subject, err)
	}
	var out []*referrer
	for _, d := range im.Manifests {
		desc, err := puller.Get(ctx, repo.Digest(d.Digest.String()))
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode)) {
			log.printf("referrer %s of %s is listed in %s but gone: passed over", d.Digest, subject, repo)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("source image %s: referrer %s of %s: %w", img.ref.Source, d.Digest, subject, err)
		}
		// walk gathers the referrer's manifests and blobs as it does an image's.
		w := &plannedImage{ref: img.ref}
		if err := w.walk(ctx, puller, repo, manifestNode{Digest: desc.Digest, MediaType: desc.MediaType, Raw: desc.Manifest}, map[v1.Hash]bool{}); err != nil {
			return nil, err
		}
		at := d.ArtifactType
		if at == "" && desc.MediaType == types.OCIManifestSchema1 {
			if m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest)); err == nil {
				at = string(m.Config.MediaType)
			}
		}
		out = append(out, &referrer{subject: subject, digest: desc.Digest, artifactType: at, manifests: w.manifests, blobs: w.blobs})
	}
	return out, nil
}

// planReferrerCopy settles what the image's copy carries once its referrers are known: the
// blobs of the referrers the target lacks, and no image blob when the image is there already.
// claimed holds the referrers another image bound for the same repository carries already.
func (p *plannedImage) planReferrerCopy(claimed map[string]bool) {
	if p.action == ActionSkipped {
		p.blobs = nil
		p.imageThere = true
	}
	for _, r := range p.referrers {
		if r.action != ActionWouldPush {
			continue
		}
		key := p.ref.To.Digest(r.digest.String()).String()
		if claimed[key] {
			r.action = ActionSkipped // written by another image of this run
			continue
		}
		claimed[key] = true
		p.referrersToCopy = append(p.referrersToCopy, r)
		for _, b := range r.blobs {
			p.needBlob(b)
		}
	}
}

// needBlob adds a blob to what the copy carries (its size is not the image's).
func (p *plannedImage) needBlob(b blobDesc) {
	for _, have := range p.blobs {
		if have.Digest == b.Digest {
			return
		}
	}
	p.blobs = append(p.blobs, b)
}

// putReferrers writes the referrers the target lacks, one after another: on a registry without
// the Referrers API each write updates the subject's tag-schema index, read and rewritten whole,
// and two writes at once would lose one.
func (c *copier) putReferrers(ctx context.Context, img *plannedImage) error {
	for _, r := range img.referrersToCopy {
		for _, m := range r.manifests {
			if err := c.pusher.Put(ctx, img.ref.To.Digest(m.Digest.String()), rawManifest{raw: m.Raw, mt: m.MediaType}); err != nil {
				return fmt.Errorf("writing referrer %s of %s: %w", m.Digest, r.subject, err)
			}
		}
		c.log.printf("referrer %s (%s) of %s in %s", r.digest, r.artifactType, r.subject, img.ref.To)
	}
	return nil
}

// referrerResults reports an image's referrers after the run.
func referrerResults(img *plannedImage) []ReferrerResult {
	var out []ReferrerResult
	for _, r := range img.referrers {
		action := r.action
		if action == ActionWouldPush {
			switch {
			case img.arrived:
				action = ActionPushed
			case img.action == ActionFailed:
				action = ActionNotPushed
			}
		}
		out = append(out, ReferrerResult{Subject: r.subject.String(), Target: img.ref.To.Name() + "@" + r.digest.String(), Digest: r.digest.String(), ArtifactType: r.artifactType, Action: action})
	}
	return out
}

// forEach runs f(0..n-1), at most jobs at once, and returns the first error.
func forEach(n, jobs int, f func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, max(jobs, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
