package acrpush

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Destination is where Push writes: a registry login server and an optional repository prefix.
type Destination struct {
	// Registry is the login server, for example myacr.azurecr.io or 127.0.0.1:5000.
	Registry string
	// Prefix is prepended to every repository path ("" for none), without slashes at either end.
	Prefix string
}

var (
	repoPathRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	acrNameRE  = regexp.MustCompile(`^[a-zA-Z0-9]{5,50}$`)
	bareNameRE = regexp.MustCompile(`^[a-zA-Z0-9-]+$`)
)

// ParseDestination parses REGISTRY[/PREFIX]. REGISTRY is a login server (myacr.azurecr.io,
// 127.0.0.1:5000) or a bare ACR name (myacr, which means myacr.azurecr.io). An oci:// scheme is
// accepted and ignored.
func ParseDestination(s string) (Destination, error) {
	raw := s
	s = strings.TrimPrefix(strings.TrimSpace(s), "oci://")
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return Destination{}, errors.New("registry is empty (want a login server such as myacr.azurecr.io, or an ACR name)")
	}
	if strings.Contains(s, "://") {
		shown := raw
		if u, err := url.Parse(strings.TrimSpace(raw)); err == nil {
			shown = u.Redacted() // never echo a password given in the URL
		}
		return Destination{}, fmt.Errorf("registry %q: only a host name is expected, without a scheme", shown)
	}
	host, prefix, _ := strings.Cut(s, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		if !acrNameRE.MatchString(host) {
			if bareNameRE.MatchString(host) {
				return Destination{}, fmt.Errorf("registry %q: an ACR name has 5 to 50 letters and digits; give a full login server for other registries", raw)
			}
			return Destination{}, fmt.Errorf("registry %q is not a valid host name", raw)
		}
		host = strings.ToLower(host) + ".azurecr.io"
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return Destination{}, fmt.Errorf("registry %q is not a valid host name: %w", raw, err)
	}
	if prefix != "" && !repoPathRE.MatchString(prefix) {
		return Destination{}, fmt.Errorf("repository prefix %q is invalid (lower-case letters, digits and . _ - separated by /)", prefix)
	}
	return Destination{Registry: host, Prefix: prefix}, nil
}

// String returns REGISTRY[/PREFIX].
func (d Destination) String() string { return d.join("") }

// Repository returns REGISTRY/PREFIX/path.
func (d Destination) join(path string) string {
	parts := []string{d.Registry}
	if d.Prefix != "" {
		parts = append(parts, d.Prefix)
	}
	if path != "" {
		parts = append(parts, path)
	}
	return strings.Join(parts, "/")
}

// IsACR reports whether host is an Azure Container Registry login server.
func IsACR(host string) bool {
	host = strings.ToLower(host)
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	for _, suffix := range []string{".azurecr.io", ".azurecr.cn", ".azurecr.us", ".azurecr.de"} {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// imageRef is one image to copy: where it comes from and where it goes.
type imageRef struct {
	// Source is the reference as written (normalised by name.ParseReference for display).
	Source string
	// From is the source reference fetched (a digest when the source pinned one).
	From name.Reference
	// Tag is the tag to give the copy ("" when the source was pinned by digest only).
	Tag string
	// PinnedDigest is the digest written in the source reference, if any.
	PinnedDigest string
	// To is the target repository.
	To name.Repository
}

// newImageRef parses src and maps it to dst: REGISTRY/PREFIX/<source repository path>.
func newImageRef(src string, dst Destination, nameOpts ...name.Option) (*imageRef, error) {
	src = strings.TrimSpace(src)
	if src == "" {
		return nil, errors.New("empty image reference")
	}
	base, pinned, hasDigest := strings.Cut(src, "@")
	r := &imageRef{}
	if hasDigest {
		d, err := name.NewDigest(src, nameOpts...)
		if err != nil {
			return nil, fmt.Errorf("parsing image reference %q: %w", src, err)
		}
		r.From = d
		r.PinnedDigest = pinned
		if last := base[strings.LastIndex(base, "/")+1:]; strings.Contains(last, ":") {
			t, err := name.NewTag(base, nameOpts...)
			if err != nil {
				return nil, fmt.Errorf("parsing image reference %q: %w", src, err)
			}
			r.Tag = t.TagStr()
		}
	} else {
		t, err := name.NewTag(src, nameOpts...)
		if err != nil {
			return nil, fmt.Errorf("parsing image reference %q: %w", src, err)
		}
		r.From = t
		r.Tag = t.TagStr()
	}
	r.Source = r.From.Context().Name()
	if r.Tag != "" {
		r.Source += ":" + r.Tag
	}
	if r.PinnedDigest != "" {
		r.Source += "@" + r.PinnedDigest
	}
	to, err := name.NewRepository(dst.join(r.From.Context().RepositoryStr()), append([]name.Option{name.StrictValidation}, nameOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("mapping %q to %s: %w", src, dst, err)
	}
	r.To = to
	return r, nil
}

// Target returns the target reference as shown to users: repo:tag, or repo@digest without a tag.
func (r *imageRef) Target() string {
	if r.Tag != "" {
		return r.To.Name() + ":" + r.Tag
	}
	return r.To.Name() + "@" + r.PinnedDigest
}

// targetRef returns the reference the top-level manifest is written to.
func (r *imageRef) targetRef(digest string) name.Reference {
	if r.Tag != "" {
		return r.To.Tag(r.Tag)
	}
	return r.To.Digest(digest)
}
