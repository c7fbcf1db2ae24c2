package acrpush

import (
	"bytes"
	"context"
	"errors"
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

	// The copy: one image of the run writes it (two images bound for one repository can share a
	// referrer); the others wait for it before writing their tags.
	done    chan struct{} // closed when written or failed
	once    sync.Once
	err     error
	written bool
}

// end records how the referrer's write ended and wakes the images waiting for it.
func (r *referrer) end(err error) {
	r.once.Do(func() {
		r.err, r.written = err, err == nil
		close(r.done)
	})
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

// referrerLookup finds one image's referrers. Its requests share the run's lookup slots: an image
// has a few manifests, each a few lookups, and the run several images.
type referrerLookup struct {
	img    *plannedImage
	repo   name.Repository
	puller *remote.Puller
	slots  chan struct{}
	log    *logger
	mu     sync.Mutex // warnings
}

// call runs one registry request in a lookup slot.
func (l *referrerLookup) call(f func() error) error {
	l.slots <- struct{}{}
	defer func() { <-l.slots }()
	return f()
}

func (l *referrerLookup) warn(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.img.warnings = append(l.img.warnings, fmt.Sprintf(format, args...))
}

// findReferrers lists at the source the referrers of every manifest the image copies, theirs in
// turn (up to maxReferrerDepth levels), through the Referrers API or, where the registry has none,
// its tag schema, and the signatures, attestations and SBOMs cosign keeps under tags; then it asks
// the target repository which it holds. A cosign tag that holds something else at the target is
// replaced when the source's holds every signature the target's does, and is an error otherwise,
// unless force. When an index is narrowed to some platforms, the source index's own referrers
// stay behind (they name a manifest the target does not get), with a warning.
func findReferrers(ctx context.Context, sess *sessions, img *plannedImage, slots chan struct{}, force bool, log *logger) error {
	repo := img.ref.From.Context()
	puller, err := sess.puller(ctx, repo.Registry)
	if err != nil {
		return sourceError(img.ref, err)
	}
	l := &referrerLookup{img: img, repo: repo, puller: puller, slots: slots, log: log}
	seen := map[string]bool{}
	var subjects []v1.Hash
	for _, m := range img.manifests {
		seen[m.Digest.String()] = true
		subjects = append(subjects, m.Digest)
	}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		found := make([][]*referrer, len(subjects))
		if err := forEach(len(subjects), len(subjects), func(i int) error {
			var err error
			found[i], err = l.list(ctx, subjects[i])
			return err
		}); err != nil {
			return err
		}
		subjects = nil
		for _, rs := range found {
			for _, r := range rs {
				// A cosign tag is its own artifact even when its manifest has the same bytes as
				// another's (one SBOM attached to an index and to a child).
				key := r.digest.String()
				if r.tag != "" {
					key = r.tag
				}
				if seen[key] {
					continue
				}
				seen[key] = true
				img.referrers = append(img.referrers, r)
				if r.tag == "" {
					subjects = append(subjects, r.digest)
				}
			}
		}
	}
	if img.narrowedFrom != (v1.Hash{}) {
		left, err := l.list(ctx, img.narrowedFrom)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			l.warn("%d referrers of %s@%s (signatures, SBOMs) are not copied: --platform narrowed the index to %s, which they do not name",
				len(left), repo, img.narrowedFrom, img.digest)
		}
	}
	return forEach(len(img.referrers), len(img.referrers), func(i int) error {
		return l.call(func() error { return checkReferrerTarget(ctx, sess, img, img.referrers[i], force, log) })
	})
}

// checkReferrerTarget decides what happens to r at the target.
func checkReferrerTarget(ctx context.Context, sess *sessions, img *plannedImage, r *referrer, force bool, log *logger) error {
	at := r.targetRef(img.ref.To)
	existing, err := checkTarget(ctx, sess, at)
	switch {
	case err != nil:
		return err
	case existing == r.digest.String():
		r.action = ActionSkipped
		return nil
	case existing == "" || force:
		r.action = ActionWouldPush
		return nil
	}
	// A cosign tag that moved: cosign adds each new signature to the same tag, so a source signed
	// again holds the target's signatures and more, and replacing loses nothing.
	puller, err := sess.puller(ctx, img.ref.To.Registry)
	if err != nil {
		return registryError(img.ref.To.RegistryStr(), err)
	}
	theirs, err := puller.Get(ctx, at)
	if err != nil {
		return registryError(img.ref.To.RegistryStr(), err)
	}
	if missing := layersMissing(theirs.Manifest, r.manifests[len(r.manifests)-1].Raw); missing > 0 {
		return fmt.Errorf("%s already exists with digest %s, not %s as in %s, and holds %d signatures or attestations the source's does not (added at the target?); use --force to replace it",
			at, existing, r.digest, r.targetRef(img.ref.From.Context()), missing)
	}
	log.printf("%s moves from %s to %s: the source's holds every layer the target's does", at, existing, r.digest)
	r.action = ActionWouldPush
	return nil
}

// layersMissing counts the layers of the manifest theirs that ours lacks (all of them when either
// does not parse).
func layersMissing(theirs, ours []byte) int {
	t, err := v1.ParseManifest(bytes.NewReader(theirs))
	if err != nil {
		return 1
	}
	o, err := v1.ParseManifest(bytes.NewReader(ours))
	if err != nil {
		return len(t.Layers) + 1
	}
	have := map[v1.Hash]bool{}
	for _, l := range o.Layers {
		have[l.Digest] = true
	}
	n := 0
	for _, l := range t.Layers {
		if !have[l.Digest] {
			n++
		}
	}
	return n
}

// targetRef is where the referrer is in repo: under its cosign tag, or by digest.
func (r *referrer) targetRef(repo name.Repository) name.Reference {
	if r.tag != "" {
		return repo.Tag(r.tag)
	}
	return repo.Digest(r.digest.String())
}

// list fetches the referrers of subject, each with its manifests and blobs: those the Referrers
// API (or its tag schema) lists and those under cosign's tags, looked up together.
func (l *referrerLookup) list(ctx context.Context, subject v1.Hash) ([]*referrer, error) {
	var tagged []*referrer
	cosign := make(chan error, 1)
	go func() {
		var err error
		tagged, err = l.cosignTagged(ctx, subject)
		cosign <- err
	}()
	listed, err := l.listed(ctx, subject)
	if cerr := <-cosign; err == nil {
		err = cerr
	}
	return append(tagged, listed...), err
}

// listed fetches what the Referrers API (or its tag schema) lists for subject. An entry whose
// manifest is gone (nothing prunes a tag-schema index) or of a kind that cannot be copied (the
// withdrawn OCI artifact manifest) is left out with a warning.
func (l *referrerLookup) listed(ctx context.Context, subject v1.Hash) ([]*referrer, error) {
	var im *v1.IndexManifest
	err := l.call(func() error {
		idx, err := remote.Referrers(l.repo.Digest(subject.String()), remote.Reuse(l.puller), remote.WithContext(ctx))
		if err == nil {
			im, err = idx.IndexManifest()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("source image %s: listing the referrers of %s: %w", l.img.ref.Source, subject, err)
	}
	found := make([]*referrer, len(im.Manifests))
	err = forEach(len(im.Manifests), len(im.Manifests), func(i int) error {
		d := im.Manifests[i]
		if !d.MediaType.IsImage() && !d.MediaType.IsIndex() && !isManifestType(d.MediaType) {
			l.warn("referrer %s@%s of %s is not copied: its media type %s is not an image manifest or index", l.repo, d.Digest, subject, d.MediaType)
			return nil
		}
		var desc *remote.Descriptor
		err := l.call(func() error {
			var err error
			desc, err = l.puller.Get(ctx, l.repo.Digest(d.Digest.String()))
			return err
		})
		if notFound(err) {
			l.warn("referrer %s@%s of %s is not copied: the source lists it, but it is gone", l.repo, d.Digest, subject)
			return nil
		}
		if err != nil {
			return fmt.Errorf("source image %s: referrer %s of %s: %w", l.img.ref.Source, d.Digest, subject, err)
		}
		r, err := l.newReferrer(ctx, subject, desc)
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
// subject, when they exist (a HEAD each: most do not, and registries meter GETs).
func (l *referrerLookup) cosignTagged(ctx context.Context, subject v1.Hash) ([]*referrer, error) {
	found := make([]*referrer, len(cosignSuffixes))
	err := forEach(len(cosignSuffixes), len(cosignSuffixes), func(i int) error {
		tag := l.repo.Tag(subject.Algorithm + "-" + subject.Hex + cosignSuffixes[i])
		var desc *remote.Descriptor
		err := l.call(func() error {
			if _, err := l.puller.Head(ctx, tag); err != nil {
				return err
			}
			var err error
			desc, err = l.puller.Get(ctx, tag)
			return err
		})
		if notFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("source image %s: %s: %w", l.img.ref.Source, tag, err)
		}
		r, err := l.newReferrer(ctx, subject, desc)
		if err != nil {
			return err
		}
		r.tag = tag.TagStr()
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
func (l *referrerLookup) newReferrer(ctx context.Context, subject v1.Hash, desc *remote.Descriptor) (*referrer, error) {
	w := &plannedImage{ref: l.img.ref}
	if err := w.walk(ctx, l.puller, l.repo, manifestNode{Digest: desc.Digest, MediaType: desc.MediaType, Raw: desc.Manifest}, map[v1.Hash]bool{}); err != nil {
		return nil, err
	}
	return &referrer{subject: subject, digest: desc.Digest, manifests: w.manifests, blobs: w.blobs}, nil
}

// planReferrerCopy settles what the image's copy carries once its referrers are known: the
// blobs of the referrers the target lacks, and no image blob when the image is there already.
// claimed holds the referrers an earlier image bound for the same repository writes: this image
// shares them and waits for them before its tag.
func (p *plannedImage) planReferrerCopy(claimed map[string]*referrer) {
	if p.action == ActionSkipped {
		p.blobs = nil
		p.imageThere = true
	}
	for i, r := range p.referrers {
		if r.action != ActionWouldPush {
			continue
		}
		key := r.targetRef(p.ref.To).String()
		if first, ok := claimed[key]; ok {
			p.referrers[i] = first
			p.referrersAwaited = append(p.referrersAwaited, first)
			continue
		}
		claimed[key] = r
		r.done = make(chan struct{})
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

// putReferrers writes the referrers this image carries, one after another (on a registry without
// the Referrers API each write updates the subject's tag-schema index, read and rewritten whole,
// and two writes at once would lose one), then waits for those another image of the run writes.
func (c *copier) putReferrers(ctx context.Context, img *plannedImage) error {
	for _, r := range img.referrersToCopy {
		err := c.putReferrer(ctx, img, r)
		r.end(err)
		if err != nil {
			return err
		}
	}
	for _, r := range img.referrersAwaited {
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return fmt.Errorf("referrer %s of %s: %w", r.digest, r.subject, r.err)
		}
	}
	return nil
}

func (c *copier) putReferrer(ctx context.Context, img *plannedImage, r *referrer) error {
	for k, m := range r.manifests {
		ref := name.Reference(img.ref.To.Digest(m.Digest.String()))
		if k == len(r.manifests)-1 {
			ref = r.targetRef(img.ref.To)
		}
		if err := c.putManifest(ctx, ref, m); err != nil {
			return fmt.Errorf("referrer of %s: %w", r.subject, err)
		}
	}
	c.log.printf("referrer %s (%s) of %s in %s", r.digest, r.artifactType, r.subject, img.ref.To)
	return nil
}

// endReferrers marks the referrers img was to write and did not get to as failed with err, so
// that no other image waits for them.
func endReferrers(img *plannedImage, err error) {
	why := errors.New("not written")
	if err != nil {
		why = fmt.Errorf("not written: %w", err)
	}
	for _, r := range img.referrersToCopy {
		r.end(why)
	}
}

// referrerResults reports an image's referrers.
func referrerResults(img *plannedImage) []ReferrerResult {
	var out []ReferrerResult
	for _, r := range img.referrers {
		action := r.action
		if action == ActionWouldPush {
			switch {
			case r.written:
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
