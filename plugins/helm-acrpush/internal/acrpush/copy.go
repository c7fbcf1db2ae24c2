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
	err        error
	arrived    bool
	targetName name.Reference
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
	}
	p.digest, p.mediaType = digest, mt
	seen := map[v1.Hash]bool{}
	if err := p.walk(ctx, puller, r.From.Context(), manifestNode{Digest: digest, MediaType: mt, Raw: raw}, seen); err != nil {
		return nil, err
	}
	return p, nil
}

func sourceError(r *imageRef, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)) {
		return fmt.Errorf("source image %s does not exist", r.Source)
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("source image %s: registry %s is unreachable: %v", r.Source, r.From.Context().RegistryStr(), nerr)
	}
	return fmt.Errorf("source image %s: %w", r.Source, err)
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

// checkTarget reads what the target reference holds now.
func checkTarget(ctx context.Context, sess *sessions, ref name.Reference) (string, error) {
	puller, err := sess.puller(ctx, ref.Context().Registry)
	if err != nil {
		return "", registryError(ref.Context().RegistryStr(), err)
	}
	d, err := puller.Head(ctx, ref)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)) {
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

// sourceBlob is a blob read from the source registry as it is written, so that memory does not
// grow with its size; bytes read are counted for the progress bar and the report. The bytes are
// not hashed on the way: the destination registry checks the digest when the upload is committed
// (a mismatch fails the upload), which spares hashing every byte twice.
type sourceBlob struct {
	ctx   context.Context
	sess  *sessions
	repo  name.Repository
	desc  blobDesc
	count func(int64)
}

func (b *sourceBlob) Digest() (v1.Hash, error) { return b.desc.Digest, nil }
func (b *sourceBlob) DiffID() (v1.Hash, error) {
	return v1.Hash{}, errors.New("diff id is not needed to copy a blob")
}
func (b *sourceBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *sourceBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *sourceBlob) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("uncompressed contents are not needed to copy a blob")
}

func (b *sourceBlob) Compressed() (io.ReadCloser, error) {
	rc, err := openBlob(b.ctx, b.sess, b.repo, b.desc)
	if err != nil {
		return nil, err
	}
	return &countingReader{rc: rc, count: b.count}, nil
}

// openBlob streams a blob: GET /v2/<repo>/blobs/<digest>, following redirects to blob storage.
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

// copier moves the planned images: every distinct blob is uploaded once, to the first target
// repository that needs it, then mounted into the other repositories; manifests follow, children
// before parents, the tag last.
type copier struct {
	sess     *sessions
	pusher   *remote.Pusher
	jobs     int
	progress *progressBar
	log      *logger
}

type blobHome struct {
	desc    blobDesc
	src     name.Repository
	home    name.Repository
	owner   *plannedImage
	err     error
	done    bool
	sameReg bool
}

func (c *copier) copy(ctx context.Context, images []*plannedImage) {
	homes := map[v1.Hash]*blobHome{}
	var order []*blobHome
	for _, img := range images {
		for _, b := range img.blobs {
			if _, ok := homes[b.Digest]; ok {
				continue
			}
			h := &blobHome{desc: b, src: img.ref.From.Context(), home: img.ref.To, owner: img,
				sameReg: img.ref.From.Context().RegistryStr() == img.ref.To.RegistryStr()}
			homes[b.Digest] = h
			order = append(order, h)
			c.progress.addTotal(b.Size)
		}
	}
	// Largest first keeps the pipes full at the end.
	sort.SliceStable(order, func(i, j int) bool { return order[i].desc.Size > order[j].desc.Size })

	run := func(n int, f func(i int)) {
		sem := make(chan struct{}, c.jobs)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				f(i)
			}()
		}
		wg.Wait()
	}

	// Phase 1: each distinct blob to its home repository.
	run(len(order), func(i int) {
		h := order[i]
		if ctx.Err() != nil {
			h.err = ctx.Err()
			return
		}
		var l v1.Layer = c.blob(ctx, h.src, h.desc, h.owner)
		if h.sameReg && h.src.Name() != h.home.Name() {
			l = &remote.MountableLayer{Layer: l, Reference: h.src.Digest(h.desc.Digest.String())}
		}
		h.err = c.pusher.Upload(ctx, h.home, l)
		if h.err == nil {
			h.done = true
			c.log.printf("blob %s (%d bytes) in %s", h.desc.Digest, h.desc.Size, h.home)
		}
	})

	// Phase 2: mount shared blobs into the other repositories that need them.
	type mount struct {
		img *plannedImage
		h   *blobHome
	}
	var mounts []mount
	for _, img := range images {
		for _, b := range img.blobs {
			h := homes[b.Digest]
			switch {
			case h.err != nil && h.owner == img:
				if img.err == nil {
					img.err = fmt.Errorf("blob %s: %w", b.Digest, h.err)
				}
			case h.home.Name() != img.ref.To.Name():
				// Mount from the home repository, or upload here if the home upload failed.
				mounts = append(mounts, mount{img, h})
			}
		}
	}
	var mu sync.Mutex
	run(len(mounts), func(i int) {
		m := mounts[i]
		if m.img.err != nil || ctx.Err() != nil {
			return
		}
		var l v1.Layer = c.blob(ctx, m.h.src, m.h.desc, m.img)
		if m.h.done {
			l = &remote.MountableLayer{Layer: l, Reference: m.h.home.Digest(m.h.desc.Digest.String())}
		}
		if err := c.pusher.Upload(ctx, m.img.ref.To, l); err != nil {
			mu.Lock()
			if m.img.err == nil {
				m.img.err = fmt.Errorf("blob %s: %w", m.h.desc.Digest, err)
			}
			mu.Unlock()
		}
	})

	// Phase 3: manifests, children first, then the tag.
	run(len(images), func(i int) {
		img := images[i]
		if img.err != nil {
			return
		}
		if ctx.Err() != nil {
			img.err = ctx.Err()
			return
		}
		for j, m := range img.manifests {
			ref := name.Reference(img.ref.To.Digest(m.Digest.String()))
			if j == len(img.manifests)-1 {
				ref = img.ref.targetRef(m.Digest.String())
			}
			if err := c.pusher.Put(ctx, ref, rawManifest{raw: m.Raw, mt: m.MediaType}); err != nil {
				img.err = fmt.Errorf("writing manifest %s: %w", m.Digest, err)
				return
			}
		}
		img.arrived = true
	})
}

func (c *copier) blob(ctx context.Context, src name.Repository, d blobDesc, owner *plannedImage) *sourceBlob {
	return &sourceBlob{ctx: ctx, sess: c.sess, repo: src, desc: d, count: func(n int64) {
		owner.uploaded.Add(n)
		c.progress.add(n)
	}}
}
