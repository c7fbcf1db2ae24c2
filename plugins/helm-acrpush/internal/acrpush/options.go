package acrpush

import (
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Option configures Push and Plan.
type Option func(*Options)

// Options holds everything Push needs besides the chart and the destination. Build it with Option
// values; the zero value of every field is a usable default.
type Options struct {
	// ValueFiles are values files merged in order (helm -f).
	ValueFiles []string
	// SetValues are helm --set expressions applied after the files.
	SetValues []string
	// Version overrides the chart's version before it is packaged (helm package --version).
	Version string
	// ExtraImages are pushed in addition to the ones found in the chart.
	ExtraImages []string
	// Exclude drops images whose source reference matches.
	Exclude *regexp.Regexp
	// Platforms narrows multi-platform indexes; empty keeps indexes whole.
	Platforms []v1.Platform
	// Jobs is the number of blobs transferred at once (default 4).
	Jobs int
	// DryRun resolves and checks everything and reports the plan without writing.
	DryRun bool
	// Force overwrites tags that point at a different digest.
	Force bool
	// ChartOnly skips the images; ImagesOnly skips the chart.
	ChartOnly, ImagesOnly bool
	// Referrers copies what refers to each image (signatures, SBOMs, attestations) with it.
	Referrers bool
	// Lock locks the tags of the run in Azure Container Registry once everything is there
	// (writeEnabled and deleteEnabled false, as `az acr repository update` sets them).
	Lock bool

	// Keychain resolves credentials for the source registries (default authn.DefaultKeychain).
	Keychain authn.Keychain
	// TargetAuth authenticates to the destination registry (default: from Keychain).
	TargetAuth authn.Authenticator
	// Transport is the base HTTP transport; retries and logging are layered on top.
	Transport http.RoundTripper
	// PlainHTTP talks to registries over http when https is not available.
	PlainHTTP bool
	// Retry tunes retries of 408/429/5xx and dropped connections.
	Retry RetryPolicy
	// UserAgent is sent with every request.
	UserAgent string

	// Log receives debug lines (nil: none). Secrets are never written to it.
	Log io.Writer
	// Progress receives a one-line progress bar, redrawn in place (nil: none).
	Progress io.Writer
	// Now is the clock (tests pin it).
	Now func() time.Time
}

// RetryPolicy says how often and how long to retry a request that failed with 408, 429 or a 5xx
// status, or whose connection dropped.
type RetryPolicy struct {
	// Attempts is the total number of tries of one request (default 6).
	Attempts int
	// Initial is the first wait; each further wait doubles (default 250ms).
	Initial time.Duration
	// Max caps one wait, including a server's Retry-After (default 30s).
	Max time.Duration
}

func (r RetryPolicy) withDefaults() RetryPolicy {
	if r.Attempts <= 0 {
		r.Attempts = 6
	}
	if r.Initial <= 0 {
		r.Initial = 250 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 30 * time.Second
	}
	return r
}

func makeOptions(opts ...Option) *Options {
	o := &Options{}
	for _, opt := range opts {
		opt(o)
	}
	if o.Jobs <= 0 {
		o.Jobs = 4
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	if o.UserAgent == "" {
		o.UserAgent = "helm-acrpush"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Retry = o.Retry.withDefaults()
	return o
}

// WithValueFiles adds values files, merged in order like helm -f.
func WithValueFiles(files ...string) Option {
	return func(o *Options) { o.ValueFiles = append(o.ValueFiles, files...) }
}

// WithSetValues adds helm --set expressions.
func WithSetValues(exprs ...string) Option {
	return func(o *Options) { o.SetValues = append(o.SetValues, exprs...) }
}

// WithVersion overrides the chart version.
func WithVersion(v string) Option { return func(o *Options) { o.Version = v } }

// WithImages adds images to push besides those the chart uses.
func WithImages(refs ...string) Option {
	return func(o *Options) { o.ExtraImages = append(o.ExtraImages, refs...) }
}

// WithExclude drops images whose source reference matches re.
func WithExclude(re *regexp.Regexp) Option { return func(o *Options) { o.Exclude = re } }

// WithPlatforms narrows multi-platform indexes to ps.
func WithPlatforms(ps ...v1.Platform) Option {
	return func(o *Options) { o.Platforms = append(o.Platforms, ps...) }
}

// WithJobs sets how many blobs are transferred at once.
func WithJobs(n int) Option { return func(o *Options) { o.Jobs = n } }

// DryRun makes Push report its plan without writing anything.
func DryRun(o *Options) { o.DryRun = true }

// Referrers makes Push copy each image's referrers (OCI subject: signatures, SBOMs,
// attestations), and theirs, by digest into the image's target repository.
func Referrers(o *Options) { o.Referrers = true }

// Lock makes Push lock the tags it pushed or found in place (images' and chart's) in Azure
// Container Registry after the chart is pushed, so that they can no longer be moved or deleted.
func Lock(o *Options) { o.Lock = true }

// Force lets Push move tags that point at another digest.
func Force(o *Options) { o.Force = true }

// ChartOnly pushes the chart and no image.
func ChartOnly(o *Options) { o.ChartOnly = true }

// ImagesOnly pushes the images and not the chart.
func ImagesOnly(o *Options) { o.ImagesOnly = true }

// PlainHTTP allows plain-http registries.
func PlainHTTP(o *Options) { o.PlainHTTP = true }

// WithKeychain sets the keychain used for source registries.
func WithKeychain(kc authn.Keychain) Option { return func(o *Options) { o.Keychain = kc } }

// WithTargetAuth sets the authenticator used for the destination registry.
func WithTargetAuth(a authn.Authenticator) Option { return func(o *Options) { o.TargetAuth = a } }

// WithTransport sets the base HTTP transport.
func WithTransport(t http.RoundTripper) Option { return func(o *Options) { o.Transport = t } }

// WithRetry sets the retry policy.
func WithRetry(r RetryPolicy) Option { return func(o *Options) { o.Retry = r } }

// WithUserAgent sets the User-Agent.
func WithUserAgent(ua string) Option { return func(o *Options) { o.UserAgent = ua } }

// WithLog sends debug lines to w.
func WithLog(w io.Writer) Option { return func(o *Options) { o.Log = w } }

// WithProgress draws a progress bar on w (callers pass a terminal only).
func WithProgress(w io.Writer) Option { return func(o *Options) { o.Progress = w } }

// WithClock pins the clock.
func WithClock(now func() time.Time) Option { return func(o *Options) { o.Now = now } }
