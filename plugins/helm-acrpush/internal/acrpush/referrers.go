package acrpush

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// maxReferrerDepth is how many levels of referrers travel with an image: its signatures and
// SBOMs, their signatures, and one level more.
const maxReferrerDepth = 3

// cosignSuffixes are the tags cosign gives what it attaches to a manifest sha256:<hex> when it does
// not use OCI referrers (its default): sha256-<hex>.sig, .att and .sbom.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// referrer is an artifact that refers to one of an image's manifests: through its subject field
// (a Notation or OCI 1.1 cosign signature, an SBOM, an attestation), written by digest, or through
// cosign's tag convention (tag is then set), written under that tag. With --referrers it travels
// with the image.
type referrer struct {
	subject      v1.Hash
	digest       v1.Hash
	tag          string // cosign's sha256-<hex>.sig (.att, .sbom); "" for an OCI referrer
	artifactType string
	manifests    []manifestNode // children first, the referrer's own manifest last
	blobs        []blobDesc
	action       string // ActionSkipped when the target repository holds it
}

// ReferrerResult describes one referrer of an image.
type ReferrerResult struct {
	// Subject is the digest of the manifest it refers to.
	Subject string `json:"subject"`
	// Source and Target are where it comes from and goes to: repository@digest, or
	// repository:tag for cosign's tag convention, in the image's source and target repositories.
	Source       string `json:"source"`
	Target       string `json:"target"`
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifactType,omitempty"`
	Action       string `json:"action"`
}

// findReferrers lists at the source the referrers of every manifest the image copies, theirs in
// turn (up to maxReferrerDepth levels), through the Referrers API or, where the registry has none,
// its tag schema, and the signatures, attestations and SBOMs cosign keeps under tags; then it asks
// the target repository which it holds. A cosign tag that points at something else at the target
// is an error unless force. When an index is narrowed to some platforms, the source index's own
// referrers stay behind: they name a manifest the target does not get.
func findReferrers(ctx context.Context, sess *sessions, img *plannedImage, jobs int, force bool, log *logger) error {
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
				if r.tag == "" {
					subjects = append(subjects, r.digest)
				}
			}
		}
	}
	return forEach(len(img.referrers), jobs, func(i int) error {
		r := img.referrers[i]
		existing, err := checkTarget(ctx, sess, r.targetRef(img.ref.To))
		if err != nil {
			return err
		}
		switch {
		case existing == r.digest.String():
			r.action = ActionSkipped
		case existing != "" && !force:
			return fmt.Errorf("%s already exists with digest %s, not %s as in %s (use --force to replace it)", r.targetRef(img.ref.To), existing, r.digest, r.targetRef(repo))
		default:
			r.action = ActionWouldPush
		}
		return nil
	})
}

// targetRef is where the referrer is in repo: under its cosign tag, or by digest.
func (r *referrer) targetRef(repo name.Repository) name.Reference {
	if r.tag != "" {
		return repo.Tag(r.tag)
	}
	return repo.Digest(r.digest.String())
}

// listReferrers fetches the referrers of subject, each with its manifests and blobs: those the
// Referrers API (or its tag schema) lists and those under cosign's tags, looked up together. An
// entry of a tag-schema index whose manifest was deleted since (nothing prunes those indexes) is
// passed over.
func listReferrers(ctx context.Context, puller *remote.Puller, img *plannedImage, repo name.Repository, subject v1.Hash, log *logger) ([]*referrer, error) {
	var tagged []*referrer
	cosign := make(chan error, 1)
	go func() {
		var err error
		tagged, err = cosignTagged(ctx, puller, img, repo, subject)
		cosign <- err
	}()
	listed, err := listedReferrers(ctx, puller, img, repo, subject, log)
	if cerr := <-cosign; err == nil {
		err = cerr
	}
	return append(tagged, listed...), err
}

// listedReferrers fetches what the Referrers API (or its tag schema) lists for subject.
func listedReferrers(ctx context.Context, puller *remote.Puller, img *plannedImage, repo name.Repository, subject v1.Hash, log *logger) ([]*referrer, error) {
	idx, err := remote.Referrers(repo.Digest(subject.String()), remote.Reuse(puller), remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("source image %s: listing the referrers of %s: %w", img.ref.Source, subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("source image %s: listing the referrers of %s: %w", img.ref.Source, subject, err)
	}
	found := make([]*referrer, len(im.Manifests))
	err = forEach(len(im.Manifests), 4, func(i int) error {
		d := im.Manifests[i]
		desc, err := puller.Get(ctx, repo.Digest(d.Digest.String()))
		if notFound(err) {
			log.printf("referrer %s of %s is listed in %s but gone: passed over", d.Digest, subject, repo)
			return nil
		}
		if err != nil {
			return fmt.Errorf("source image %s: referrer %s of %s: %w", img.ref.Source, d.Digest, subject, err)
		}
		r, err := newReferrer(ctx, puller, img, repo, subject, desc)
		if err != nil {
			return err
		}
		if r.artifactType = d.ArtifactType; r.artifactType == "" {
			if m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest)); err == nil {
				r.artifactType = string(m.Config.MediaType)
			}
		}
		found[i] = r
		return nil
	})
	return compact(found), err
}

// cosignTagged fetches what cosign keeps under the tags sha256-<hex>.sig, .att and .sbom of
// subject, when they exist.
func cosignTagged(ctx context.Context, puller *remote.Puller, img *plannedImage, repo name.Repository, subject v1.Hash) ([]*referrer, error) {
	found := make([]*referrer, len(cosignSuffixes))
	err := forEach(len(cosignSuffixes), len(cosignSuffixes), func(i int) error {
		tag := subject.Algorithm + "-" + subject.Hex + cosignSuffixes[i]
		desc, err := puller.Get(ctx, repo.Tag(tag))
		if notFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("source image %s: %s: %w", img.ref.Source, repo.Tag(tag), err)
		}
		r, err := newReferrer(ctx, puller, img, repo, subject, desc)
		if err != nil {
			return err
		}
		r.tag = tag
		// cosign names what it holds by its layers' media type (simple signing, DSSE envelope, SBOM format).
		if m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest)); err == nil && len(m.Layers) > 0 {
			r.artifactType = string(m.Layers[0].MediaType)
		}
		found[i] = r
		return nil
	})
	return compact(found), err
}

// compact drops the nils of found, keeping the order.
func compact(found []*referrer) []*referrer {
	var out []*referrer
	for _, r := range found {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

// newReferrer gathers a referrer's manifests and blobs, as walk does an image's.
func newReferrer(ctx context.Context, puller *remote.Puller, img *plannedImage, repo name.Repository, subject v1.Hash, desc *remote.Descriptor) (*referrer, error) {
	w := &plannedImage{ref: img.ref}
	if err := w.walk(ctx, puller, repo, manifestNode{Digest: desc.Digest, MediaType: desc.MediaType, Raw: desc.Manifest}, map[v1.Hash]bool{}); err != nil {
		return nil, err
	}
	return &referrer{subject: subject, digest: desc.Digest, manifests: w.manifests, blobs: w.blobs}, nil
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
		key := r.targetRef(p.ref.To).String()
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
		for k, m := range r.manifests {
			ref := name.Reference(img.ref.To.Digest(m.Digest.String()))
			if k == len(r.manifests)-1 {
				ref = r.targetRef(img.ref.To)
			}
			if err := c.pusher.Put(ctx, ref, rawManifest{raw: m.Raw, mt: m.MediaType}); err != nil {
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
		out = append(out, ReferrerResult{Subject: r.subject.String(), Source: r.targetRef(img.ref.From.Context()).String(), Target: r.targetRef(img.ref.To).String(),
			Digest: r.digest.String(), ArtifactType: r.artifactType, Action: action})
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
