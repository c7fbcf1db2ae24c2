package acrpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobDesc is one blob an image needs.
type blobDesc struct {
	Digest    v1.Hash
	Size      int64
	MediaType types.MediaType
}

// manifestNode is one manifest to write, children before parents.
type manifestNode struct {
	Digest    v1.Hash
	MediaType types.MediaType
	Raw       []byte
}

// plannedImage is an image after resolution: everything needed to copy it.
type plannedImage struct {
	ref        *imageRef
	where      []string
	digest     v1.Hash
	mediaType  types.MediaType
	manifests  []manifestNode // children first, the top-level manifest last
	blobs      []blobDesc     // distinct blobs of every manifest
	size       int64          // manifests + blobs
	platforms  []string
	existing   string // digest the target reference has now ("" for none)
	action     string
	uploaded   atomic.Int64
	present    map[v1.Hash]bool // blobs the target repository holds already
	err        error
	arrived    bool
	targetName name.Reference

	referrers        []*referrer // found at the source (with --referrers)
	referrersToCopy  []*referrer // those this image's copy writes, subjects before their referrers
	referrersAwaited []*referrer // those another image of the run writes, awaited before the tag
	imageThere       bool        // the target has the image: only referrers travel
	narrowedFrom     v1.Hash     // the source index --platform narrowed, if any
	warnings         []string

	lock string // with --lock: the target tag's lock state ("" when the image has no tag)
}

// resolveImage fetches the source manifests (and child manifests of an index) and narrows an
// index to the requested platforms.
func resolveImage(ctx context.Context, sess *sessions, r *imageRef, platforms []v1.Platform) (*plannedImage, error) {
	puller, err := sess.puller(ctx, r.From.Context().Registry)
	if err != nil {
		return nil, sourceError(r, err)
	}
	desc, err := puller.Get(ctx, r.From)
	if err != nil {
		return nil, sourceError(r, err)
	}
	if r.PinnedDigest != "" && desc.Digest.String() != r.PinnedDigest {
		return nil, fmt.Errorf("source image %s: registry returned digest %s", r.Source, desc.Digest)
	}
	p := &plannedImage{ref: r}
	raw, mt, digest := desc.Manifest, desc.MediaType, desc.Digest
	if mt.IsIndex() && len(platforms) > 0 {
		raw, mt, digest, err = narrowIndex(ctx, puller, r, raw, platforms, p)
		if err != nil {
			return nil, err
		}
		p.narrowedFrom = desc.Digest
	}
	p.digest, p.mediaType = digest, mt
	seen := map[v1.Hash]bool{}
	if err := p.walk(ctx, puller, r.From.Context(), manifestNode{Digest: digest, MediaType: mt, Raw: raw}, seen); err != nil {
		return nil, err
	}
	return p, nil
}

func sourceError(r *imageRef, err error) error {
	if notFound(err) {
		return fmt.Errorf("source image %s does not exist", r.Source)
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("source image %s: registry %s is unreachable: %v", r.Source, r.From.Context().RegistryStr(), nerr)
	}
	return fmt.Errorf("source image %s: %w", r.Source, err)
}

// notFound reports whether a registry answered that a manifest or repository does not exist.
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode))
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// narrowIndex keeps the children of an index that match platforms: one match becomes that image
// manifest, several become a new index holding only them.
func narrowIndex(ctx context.Context, puller *remote.Puller, r *imageRef, raw []byte, platforms []v1.Platform, p *plannedImage) ([]byte, types.MediaType, v1.Hash, error) {
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, "", v1.Hash{}, fmt.Errorf("source image %s: parsing index: %w", r.Source, err)
	}
	var keep []v1.Descriptor
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		for _, want := range platforms {
			if d.Platform.Satisfies(want) {
				keep = append(keep, d)
				p.platforms = append(p.platforms, d.Platform.String())
				break
			}
		}
	}
	if len(keep) == 0 {
		return nil, "", v1.Hash{}, fmt.Errorf("source image %s has no manifest for platform %s", r.Source, platformList(platforms))
	}
	if len(keep) == 1 {
		d, err := puller.Get(ctx, r.From.Context().Digest(keep[0].Digest.String()))
		if err != nil {
			return nil, "", v1.Hash{}, sourceError(r, err)
		}
		return d.Manifest, d.MediaType, d.Digest, nil
	}
	im.Manifests = keep
	out, err := json.Marshal(im)
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(out))
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	mt := im.MediaType
	if mt == "" {
		mt = types.OCIImageIndex
	}
	return out, mt, h, nil
}

func platformList(ps []v1.Platform) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// walk records node, its children (for an index) and its blobs (for an image), children first.
func (p *plannedImage) walk(ctx context.Context, puller *remote.Puller, repo name.Repository, node manifestNode, seen map[v1.Hash]bool) error {
	if seen[node.Digest] {
		return nil
	}
	seen[node.Digest] = true
	switch {
	case node.MediaType.IsIndex():
		im, err := v1.ParseIndexManifest(bytes.NewReader(node.Raw))
		if err != nil {
			return fmt.Errorf("source image %s: parsing index %s: %w", p.ref.Source, node.Digest, err)
		}
		for _, d := range im.Manifests {
			if seen[d.Digest] {
				continue
			}
			if !d.MediaType.IsIndex() && !d.MediaType.IsImage() && !isManifestType(d.MediaType) {
				continue
			}
			child, err := puller.Get(ctx, repo.Digest(d.Digest.String()))
			if err != nil {
				return fmt.Errorf("source image %s: child manifest %s: %w", p.ref.Source, d.Digest, err)
			}
			if err := p.walk(ctx, puller, repo, manifestNode{Digest: child.Digest, MediaType: child.MediaType, Raw: child.Manifest}, seen); err != nil {
				return err
			}
			if d.Platform != nil && len(p.platforms) == 0 && node.Digest == p.digest {
				p.platformsFromIndex(im)
			}
		}
	case node.MediaType.IsSchema1():
		return fmt.Errorf("source image %s uses the Docker schema 1 manifest format, which is not supported", p.ref.Source)
	default:
		m, err := v1.ParseManifest(bytes.NewReader(node.Raw))
		if err != nil {
			return fmt.Errorf("source image %s: parsing manifest %s: %w", p.ref.Source, node.Digest, err)
		}
		p.addBlob(m.Config)
		for _, l := range m.Layers {
			p.addBlob(l)
		}
	}
	p.manifests = append(p.manifests, node)
	p.size += int64(len(node.Raw))
	return nil
}

func isManifestType(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

func (p *plannedImage) platformsFromIndex(im *v1.IndexManifest) {
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" {
			p.platforms = append(p.platforms, d.Platform.String())
		}
	}
}

func (p *plannedImage) addBlob(d v1.Descriptor) {
	if d.Digest.Hex == "" || !d.MediaType.IsDistributable() {
		return
	}
	for _, b := range p.blobs {
		if b.Digest == d.Digest {
			return
		}
	}
	p.blobs = append(p.blobs, blobDesc{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType})
	p.size += d.Size
}

// checkBlobs asks the target repository which of the image's blobs it holds already, a few at
// a time, so that uploads need not ask one by one.
func checkBlobs(ctx context.Context, sess *sessions, img *plannedImage, jobs int) error {
	present := make([]bool, len(img.blobs))
	if err := forEach(len(img.blobs), jobs, func(i int) error {
		var err error
		present[i], err = blobExists(ctx, sess, img.ref.To, img.blobs[i].Digest)
		return err
	}); err != nil {
		return registryError(img.ref.To.RegistryStr(), err)
	}
	img.present = map[v1.Hash]bool{}
	for i, b := range img.blobs {
		if present[i] {
			img.present[b.Digest] = true
		}
	}
	return nil
}

// checkTarget reads what the target reference holds now.
func checkTarget(ctx context.Context, sess *sessions, ref name.Reference) (string, error) {
	puller, err := sess.puller(ctx, ref.Context().Registry)
	if err != nil {
		return "", registryError(ref.Context().RegistryStr(), err)
	}
	d, err := puller.Head(ctx, ref)
	if err != nil {
		if notFound(err) {
			return "", nil
		}
		return "", registryError(ref.Context().RegistryStr(), err)
	}
	return d.Digest.String(), nil
}

// registryError turns a failed registry call into a SignInError when the registry refused the
// credentials, or says the registry is unreachable.
func registryError(registry string, err error) error {
	var se *SignInError
	if errors.As(err, &se) {
		return se
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return &SignInError{Registry: registry, Step: StepRegistry, Err: errors.New(oneLine(te.Error())), Hint: "the registry refused the credentials: check the role assignment (AcrPush, or Container Registry Repository Writer on ABAC-enabled registries) or the docker/helm registry login"}
		case http.StatusForbidden:
			return &SignInError{Registry: registry, Step: StepRegistry, Err: errors.New(oneLine(te.Error())), Hint: "access denied: check the role assignment and the registry firewall / network rules"}
		}
		if strings.Contains(te.Error(), "HTTP request to an HTTPS server") {
			// ggcr falls back to http for local hosts when https fails, hiding the TLS error.
			return fmt.Errorf("registry %s speaks https but the connection failed (is its certificate trusted? set SSL_CERT_FILE to its CA, or use --insecure-skip-tls-verify)", registry)
		}
		return fmt.Errorf("registry %s: %s", registry, oneLine(te.Error()))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("registry %s: %w", registry, err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("registry %s is unreachable: %s (check the login server name, DNS, proxy and firewall)", registry, oneLine(unwrapURLError(err).Error()))
	}
	return fmt.Errorf("registry %s: %s", registry, oneLine(unwrapURLError(err).Error()))
}

// openBlob streams a blob: GET /v2/<repo>/blobs/<digest>, following redirects to blob storage.
// Memory does not grow with the blob's size. The bytes are not hashed on the way: the destination
// registry checks the digest when the upload is committed (a mismatch fails the upload), which
// spares hashing every byte twice.
func openBlob(ctx context.Context, sess *sessions, repo name.Repository, d blobDesc) (io.ReadCloser, error) {
	rt, err := sess.transport(ctx, repo.Registry)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Transport: rt}
	u := url.URL{Scheme: repo.Registry.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), d.Digest)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	if resp.ContentLength >= 0 && resp.ContentLength != d.Size {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("blob %s: source sent %d bytes, the manifest says %d", d.Digest, resp.ContentLength, d.Size)
	}
	return &sizedBody{rc: resp.Body, left: d.Size, digest: d.Digest}, nil
}

// sizedBody fails a body that ends before its size, so a dropped download is an error (and a
// retry), never a short blob.
type sizedBody struct {
	rc     io.ReadCloser
	left   int64
	digest v1.Hash
}

func (b *sizedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		return n, fmt.Errorf("blob %s: %w", b.digest, io.ErrUnexpectedEOF)
	}
	if b.left < 0 {
		return n, fmt.Errorf("blob %s: source sent more bytes than the manifest says", b.digest)
	}
	return n, err
}

func (b *sizedBody) Close() error { return b.rc.Close() }

type countingReader struct {
	rc    io.ReadCloser
	count func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 && c.count != nil {
		c.count(int64(n))
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

// rawManifest is a manifest written as is, so that its digest stays the source's.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// smallBlob is the size under which a blob (a config, a small layer) does not wait for one of the
// --jobs transfer slots: it takes two short requests, and its image's manifest cannot be written
// before it is there.
const smallBlob = 1 << 20

// copier moves the planned images. Every distinct blob the registry lacks is uploaded once, to the
// first target repository that needs it, largest first on --jobs slots; the other repositories
// mount it as soon as it is there; an image's manifests are written as soon as all its blobs are
// in its repository (image manifests together, then indexes, children before parents, the tag
// last). No step waits for unrelated images: the run ends a manifest or two after its last blob.
type copier struct {
	sess     *sessions
	up       *blobUploader
	pusher   *remote.Pusher
	jobs     int
	progress *progressBar
	log      *logger
}

// blobJob is one distinct blob: where it goes first and when it is there.
type blobJob struct {
	desc  blobDesc
	src   name.Repository
	home  *plannedImage // the image whose repository gets it first
	there bool          // the home repository holds it already
	done  chan struct{} // closed when the home has it, or failed to get it
	err   error
}

func (c *copier) copy(ctx context.Context, images []*plannedImage) {
	byDigest := map[v1.Hash]*blobJob{}
	var all []*blobJob
	for _, img := range images {
		for _, b := range img.blobs {
			j, ok := byDigest[b.Digest]
			if !ok {
				j = &blobJob{desc: b, src: img.ref.From.Context(), home: img, done: make(chan struct{})}
				byDigest[b.Digest] = j
				all = append(all, j)
			}
			if img.present[b.Digest] && !j.there {
				j.home, j.there = img, true
			}
		}
	}
	var big, small []*blobJob
	for _, j := range all {
		switch {
		case j.there:
			close(j.done)
		case j.desc.Size < smallBlob:
			small = append(small, j)
		default:
			big = append(big, j)
		}
		if !j.there && mountSource(j.src, j.home.ref.To) == nil {
			c.progress.addTotal(j.desc.Size)
		}
	}
	// Largest first keeps the pipes full at the end.
	sort.SliceStable(big, func(i, k int) bool { return big[i].desc.Size > big[k].desc.Size })

	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < min(c.jobs, len(big)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(big); i = int(next.Add(1) - 1) {
				c.toHome(ctx, big[i])
			}
		}()
	}
	smallSlots := make(chan struct{}, c.jobs)
	for _, j := range small {
		wg.Add(1)
		go func() {
			defer wg.Done()
			smallSlots <- struct{}{}
			defer func() { <-smallSlots }()
			c.toHome(ctx, j)
		}()
	}
	for _, img := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.finish(ctx, img, byDigest)
		}()
	}
	wg.Wait()
}

// toHome uploads a blob to its home repository (or mounts it there from its source repository,
// when that is in the same registry).
func (c *copier) toHome(ctx context.Context, j *blobJob) {
	defer close(j.done)
	if j.err = ctx.Err(); j.err != nil {
		return
	}
	to := j.home.ref.To
	_, j.err = c.up.upload(ctx, to, j.desc, mountSource(j.src, to), c.opener(j.src, j.desc), c.counter(j.home))
	if j.err == nil {
		c.log.printf("blob %s (%d bytes) in %s", j.desc.Digest, j.desc.Size, to)
	}
}

// mountSource is from when a blob can be mounted into to from it: another repository of the same
// registry.
func mountSource(from, to name.Repository) *name.Repository {
	if from.RegistryStr() != to.RegistryStr() || from.Name() == to.Name() {
		return nil
	}
	return &from
}

// finish waits for the image's blobs, mounts those whose home is another repository (uploading
// them here when that upload failed), then writes the image's manifests.
func (c *copier) finish(ctx context.Context, img *plannedImage, byDigest map[v1.Hash]*blobJob) {
	// No image of the run waits forever for a referrer this one did not get to write.
	defer func() { endReferrers(img, img.err) }()
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if img.err == nil {
			img.err = err
		}
	}
	var wg sync.WaitGroup
	for _, b := range img.blobs {
		j := byDigest[b.Digest]
		if img.present[b.Digest] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-j.done
			// Another image bound for the same repository (a second tag) needs nothing more
			// once the blob is there.
			sameRepo := j.home.ref.To.Name() == img.ref.To.Name()
			if j.home == img || (sameRepo && j.err == nil) {
				if j.err != nil {
					fail(fmt.Errorf("blob %s: %w", b.Digest, j.err))
				}
				return
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			to := img.ref.To
			from := mountSource(j.home.ref.To, to)
			if j.err != nil {
				// The upload to the home repository failed: try here, from the source.
				if from = mountSource(j.src, to); from == nil {
					c.progress.addTotal(b.Size)
				}
			}
			if _, err := c.up.upload(ctx, to, b, from, c.opener(j.src, b), c.counter(img)); err != nil {
				fail(fmt.Errorf("blob %s: %w", b.Digest, err))
			}
		}()
	}
	wg.Wait()
	if img.err != nil {
		return
	}
	if err := ctx.Err(); err != nil {
		img.err = err
		return
	}
	if img.imageThere {
		img.err = c.putReferrers(ctx, img)
	} else {
		img.err = c.putManifests(ctx, img)
	}
	img.arrived = img.err == nil
}

// putManifests writes the image manifests of img at once (they need only blobs), then its
// indexes in order (children before parents), the top-level one under the target tag.
func (c *copier) putManifests(ctx context.Context, img *plannedImage) error {
	last := len(img.manifests) - 1
	put := func(j int) error {
		m := img.manifests[j]
		if j == last {
			return c.putManifest(ctx, img.ref.targetRef(m.Digest.String()), m)
		}
		return c.putManifest(ctx, img.ref.To.Digest(m.Digest.String()), m)
	}
	errs := make([]error, last)
	var wg sync.WaitGroup
	for j := range last {
		if !img.manifests[j].MediaType.IsIndex() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = put(j)
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for j := range last {
		if img.manifests[j].MediaType.IsIndex() {
			if err := put(j); err != nil {
				return err
			}
		}
	}
	if len(img.referrersToCopy) > 0 || len(img.referrersAwaited) > 0 {
		// Signatures and SBOMs are there before the tag is: the top-level manifest is written by
		// digest first, then what refers to it, then the tag.
		m := img.manifests[last]
		if err := c.putManifest(ctx, img.ref.To.Digest(m.Digest.String()), m); err != nil {
			return err
		}
		if err := c.putReferrers(ctx, img); err != nil {
			return err
		}
		if img.ref.Tag == "" {
			return nil
		}
	}
	return put(last)
}

// putManifest writes m under ref.
func (c *copier) putManifest(ctx context.Context, ref name.Reference, m manifestNode) error {
	if err := c.pusher.Put(ctx, ref, rawManifest{raw: m.Raw, mt: m.MediaType}); err != nil {
		return fmt.Errorf("writing manifest %s: %w", m.Digest, lockedWrite(ref, err))
	}
	return nil
}

func (c *copier) opener(src name.Repository, d blobDesc) blobOpener {
	return func(ctx context.Context) (io.ReadCloser, error) { return openBlob(ctx, c.sess, src, d) }
}

func (c *copier) counter(img *plannedImage) func(int64) {
	return func(n int64) {
		img.uploaded.Add(n)
		c.progress.add(n)
	}
}
