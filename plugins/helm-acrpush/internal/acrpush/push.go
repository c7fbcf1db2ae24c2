package acrpush

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Actions reported per artifact.
const (
	ActionPushed    = "pushed"
	ActionSkipped   = "skipped"
	ActionWouldPush = "would push"
	ActionFailed    = "failed"
	ActionNotPushed = "not pushed"
)

// Result is what Push did (or, for a dry run, would do). It is the view model of the table and
// of -o json.
type Result struct {
	// Registry is the destination, REGISTRY[/PREFIX].
	Registry string `json:"registry"`
	// DryRun is true when nothing was written.
	DryRun bool `json:"dryRun"`
	// Chart is the chart artifact (nil with images only).
	Chart *ChartResult `json:"chart,omitempty"`
	// Images are the images, sorted by source.
	Images []ImageResult `json:"images"`
	// Transfer sums up the traffic to the destination.
	Transfer Transfer `json:"transfer"`
	// Overlay is a values overlay pointing the chart's image fields at the pushed digests.
	Overlay map[string]any `json:"-"`
	// Unmapped lists images the overlay could not point at the destination.
	Unmapped []string `json:"-"`
	// Superseded lists artifacthub.io/images entries left out: the values gave their container
	// another image.
	Superseded []SupersededImage `json:"supersededAnnotationImages,omitempty"`
	// Warnings are things left behind that the user may not expect (referrers not copied).
	Warnings []string `json:"warnings,omitempty"`
}

// ChartResult describes the chart artifact.
type ChartResult struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Source    string `json:"source"`
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Action    string `json:"action"`
	Replaces  string `json:"replaces,omitempty"`
	Bytes     int64  `json:"bytes"`
	// Lock is the tag's lock state with --lock (locked, already locked, would lock, failed,
	// not locked).
	Lock string `json:"lock,omitempty"`
}

// ImageResult describes one image.
type ImageResult struct {
	Source    string   `json:"source"`
	Target    string   `json:"target"`
	Digest    string   `json:"digest"`
	MediaType string   `json:"mediaType"`
	Platforms []string `json:"platforms,omitempty"`
	Action    string   `json:"action"`
	Replaces  string   `json:"replaces,omitempty"`
	// Lock is the target tag's lock state with --lock ("" for an image pinned by digest only).
	Lock string `json:"lock,omitempty"`
	// Size is the total size of the image's manifests and blobs.
	Size int64 `json:"size"`
	// Bytes is what this run uploaded for it, its referrers included (0 when skipped or mounted
	// and no referrer travelled).
	Bytes int64    `json:"bytes"`
	Error string   `json:"error,omitempty"`
	Where []string `json:"usedBy,omitempty"`
	// Referrers are the image's signatures, SBOMs and attestations (with --referrers).
	Referrers []ReferrerResult `json:"referrers,omitempty"`
}

// Transfer counts requests to registries and blob traffic.
type Transfer struct {
	Requests    int64 `json:"requests"`
	BlobUploads int64 `json:"blobUploads"`
	BlobMounts  int64 `json:"blobMounts"`
	BytesPushed int64 `json:"bytesPushed"`
}

// CopyError is returned when images failed to arrive; the chart was not pushed. Result still
// lists what arrived.
type CopyError struct {
	Arrived, Failed []string
	Err             error
}

// Error lists the failed and the arrived images and the causes, on one line.
func (e *CopyError) Error() string {
	arrived := "none"
	if len(e.Arrived) > 0 {
		arrived = strings.Join(e.Arrived, ", ")
	}
	return fmt.Sprintf("copying images failed, chart not pushed (a rerun is safe): failed: %s; arrived: %s; %v",
		strings.Join(e.Failed, ", "), arrived, strings.ReplaceAll(fmt.Sprint(e.Err), "\n", "; "))
}

// Unwrap returns the joined causes.
func (e *CopyError) Unwrap() error { return e.Err }

// Push pushes the chart at chartPath (a directory or .tgz) and every image it uses to dst. It
// resolves and checks everything before writing anything, copies the images, and pushes the
// chart last, only when every image arrived. With DryRun it stops after the checks.
func Push(ctx context.Context, chartPath string, dst Destination, opts ...Option) (*Result, error) {
	o := makeOptions(opts...)
	if o.ChartOnly && o.ImagesOnly {
		return nil, errors.New("--chart-only and --images-only cannot be used together")
	}
	log := &logger{w: o.Log, start: time.Now()}
	res := &Result{Registry: dst.String(), DryRun: o.DryRun}

	st := &stats{}
	var rt = &retryTransport{inner: &countingTransport{inner: o.Transport, log: log, stats: st}, policy: o.Retry, log: log}
	kc := &targetKeychain{registry: dst.Registry, auth: o.TargetAuth, next: o.Keychain}
	dstRegistry, err := name.NewRegistry(dst.Registry, nameOpts(o)...)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", dst.Registry, err)
	}
	if ea, ok := o.TargetAuth.(*EntraAuth); ok && ea.Client == nil {
		// The exchange goes through the same retries and request log as everything else.
		ea.Client = &http.Client{Transport: rt}
	}
	preCtx, stopPreconnect := context.WithCancel(ctx) // none outlives the run
	defer stopPreconnect()
	preconnect(preCtx, o.Transport, dstRegistry, o.Jobs+2)
	// Sign in while the chart renders and the source images are resolved (the Entra token and the
	// exchange are the longest chain before the first byte moves); target checks wait for it. A
	// chart that does not load or render is still reported first.
	signCtx, cancelSignIn := context.WithCancel(ctx)
	defer cancelSignIn()
	signedIn := make(chan struct{})
	var signInErr error
	go func() {
		defer close(signedIn)
		if o.TargetAuth != nil {
			_, signInErr = authn.Authorization(signCtx, o.TargetAuth)
		}
	}()
	waitSignIn := func() error {
		<-signedIn
		return signInErr
	}

	// 1. The chart loads and renders; its images are found.
	c, err := LoadChart(chartPath, o.Version)
	if err != nil {
		return nil, err
	}
	vals, err := ReadValues(o.ValueFiles, o.SetValues)
	if err != nil {
		return nil, err
	}
	rendered, merged, err := c.Render(vals)
	if err != nil {
		return nil, err
	}
	var refs []*imageRef
	where := map[string][]string{}
	if !o.ChartOnly {
		found, superseded, err := FindImages(rendered, c.Chart)
		if err != nil {
			return nil, err
		}
		res.Superseded = superseded
		for _, s := range superseded {
			log.printf("annotation image %s left out: container %s runs %s", s.Image, s.Container, strings.Join(s.Rendered, ", "))
		}
		for _, ref := range o.ExtraImages {
			found = append(found, FoundImage{Ref: ref, Where: []string{"--image"}})
		}
		if refs, err = mapImages(found, dst, o, where); err != nil {
			return nil, err
		}
		log.printf("chart %s %s uses %d images", c.Chart.Name(), c.Chart.Metadata.Version, len(refs))
	}

	// 2. Resolve every source image and check every target (after signing in).
	sess := newSessions(transport.NewUserAgent(rt, o.UserAgent), kc,
		remote.WithJobs(o.Jobs),
		// Manifest writes go again on the schedule blob uploads restart on (blobUploader), after
		// the retrying transport has tried each request.
		remote.WithRetryBackoff(remote.Backoff{Duration: o.Retry.Initial, Factor: 1.3, Jitter: 0.2, Steps: max(2*o.Retry.Attempts, 15)}),
	)
	for _, r := range refs {
		sess.need(r.From.Context(), transport.PullScope)
		sess.need(r.To, transport.PushScope)
		if o.Lock {
			sess.need(r.To, lockAPIScope)
		}
	}

	var chartArt *chartArtifact
	var chartRef name.Reference
	if !o.ImagesOnly {
		if chartArt, err = newChartArtifact(c); err != nil {
			return nil, fmt.Errorf("building the chart artifact: %w", err)
		}
		if chartRef, err = name.ParseReference(c.Ref(dst), nameOpts(o)...); err != nil {
			return nil, fmt.Errorf("chart reference %q: %w", c.Ref(dst), err)
		}
		sess.need(chartRef.Context(), transport.PushScope)
		if o.Lock {
			sess.need(chartRef.Context(), lockAPIScope)
		}
	}
	// The chart's target is checked alongside the images'.
	type targetCheck struct {
		existing string
		err      error
	}
	chartChecked := make(chan targetCheck, 1)
	if chartArt != nil {
		go func() {
			if err := waitSignIn(); err != nil {
				chartChecked <- targetCheck{err: err}
				return
			}
			existing, err := checkTarget(ctx, sess, chartRef)
			chartChecked <- targetCheck{existing, err}
		}()
	}
	images, err := plan(ctx, sess, refs, o, log, waitSignIn, where)
	if err != nil {
		return nil, err
	}
	if err := waitSignIn(); err != nil {
		return nil, err
	}
	if chartArt != nil {
		res.Chart = &ChartResult{Name: c.Chart.Name(), Version: c.Chart.Metadata.Version, Source: chartPath, Reference: chartRef.String(), Digest: chartArt.digest.String()}
		check := <-chartChecked
		existing, err := check.existing, check.err
		if err != nil {
			return nil, err
		}
		switch {
		case existing == chartArt.digest.String():
			res.Chart.Action = ActionSkipped
		case existing != "" && !o.Force:
			return nil, fmt.Errorf("chart %s already exists with digest %s, not %s (use --force to replace it)", chartRef, existing, chartArt.digest)
		default:
			res.Chart.Replaces = existing
			res.Chart.Action = ActionWouldPush
		}
		if o.Lock {
			if res.Chart.Lock, err = planLock(ctx, tagAPI{sess}, chartRef, existing, chartArt.digest.String()); err != nil {
				return nil, err
			}
		}
	}

	for _, img := range images {
		img.where = where[img.ref.Source]
		res.Warnings = append(res.Warnings, img.warnings...)
	}
	if o.DryRun {
		res.Images = imageResults(images)
		finish(res, st)
		return res, nil
	}

	// 3. Copy the images that are not there yet.
	var todo []*plannedImage
	for _, img := range images {
		if img.action == ActionWouldPush || len(img.referrersToCopy) > 0 {
			todo = append(todo, img)
		}
	}
	// The chart's blobs travel with the images (a blob without its manifest is no chart); its
	// manifest, which makes it a chart, is written last.
	var chartBytes atomic.Int64
	chartBlobs := make(chan error, 1)
	pusher, err := sess.pusher(ctx, dstRegistry)
	if err != nil {
		return nil, registryError(dst.Registry, err)
	}
	bar := newProgressBar(o.Progress)
	up := &blobUploader{sess: sess, retry: o.Retry, log: log, progress: bar}
	if res.Chart != nil && res.Chart.Action == ActionWouldPush {
		go func() {
			chartBlobs <- chartArt.uploadBlobs(ctx, up, sess, chartRef, func(k int64) { chartBytes.Add(k) })
		}()
	} else {
		chartBlobs <- nil
	}
	if len(todo) > 0 {
		bar.start()
		cp := &copier{sess: sess, up: up, pusher: pusher, jobs: o.Jobs, progress: bar, log: log}
		cp.copy(ctx, todo)
		bar.finish()
	}
	var failed, arrived []string
	var errs []error
	for _, img := range images {
		switch {
		case img.action == ActionSkipped && img.err == nil:
			arrived = append(arrived, img.ref.Target())
		case img.arrived:
			img.action = ActionPushed
			arrived = append(arrived, img.ref.Target())
		default:
			img.action = ActionFailed
			failed = append(failed, img.ref.Source)
			if img.err == nil {
				img.err = errors.New("not copied")
			}
			errs = append(errs, fmt.Errorf("%s: %w", img.ref.Source, img.err))
		}
	}
	res.Images = imageResults(images)
	chartBlobErr := <-chartBlobs
	if len(failed) > 0 {
		if res.Chart != nil {
			res.Chart.Action = ActionNotPushed
		}
		notLocked(res)
		finish(res, st)
		return res, &CopyError{Arrived: arrived, Failed: failed, Err: errors.Join(errs...)}
	}

	// 4. The chart, last.
	if res.Chart != nil {
		if res.Chart.Action == ActionWouldPush {
			err := chartBlobErr
			if err == nil {
				err = lockedWrite(chartRef, chartArt.putManifest(ctx, pusher, chartRef))
			}
			res.Chart.Bytes = chartBytes.Load()
			if err != nil {
				res.Chart.Action = ActionFailed
				notLocked(res)
				finish(res, st)
				return res, fmt.Errorf("pushing chart %s (every image arrived): %w", chartRef, registryError(dst.Registry, err))
			}
			res.Chart.Action = ActionPushed
		}
	}
	res.Overlay, res.Unmapped = buildOverlay(c, merged, res.Images)

	// 5. With --lock, the tags are locked once everything is there.
	var lockErr error
	if o.Lock {
		var targets []lockTarget
		for _, img := range images {
			if tag, ok := img.targetName.(name.Tag); ok && img.lock != "" {
				targets = append(targets, lockTarget{tag, &img.lock})
			}
		}
		if tag, ok := chartRef.(name.Tag); ok && res.Chart != nil && res.Chart.Lock != "" {
			targets = append(targets, lockTarget{tag, &res.Chart.Lock})
		}
		if err := lockTargets(ctx, tagAPI{sess}, targets, o.Jobs); err != nil {
			lockErr = &LockError{Err: err}
		}
		res.Images = imageResults(images)
	}
	finish(res, st)
	return res, lockErr
}

// LockError is returned when everything was pushed but some tags could not be locked; Result
// says which.
type LockError struct{ Err error }

func (e *LockError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *LockError) Unwrap() error { return e.Err }

// notLocked marks the locks a failed run did not get to.
func notLocked(res *Result) {
	for i := range res.Images {
		if res.Images[i].Lock == LockWould {
			res.Images[i].Lock = LockNotDone
		}
	}
	if res.Chart != nil && res.Chart.Lock == LockWould {
		res.Chart.Lock = LockNotDone
	}
}

func nameOpts(o *Options) []name.Option {
	if o.PlainHTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

func mapImages(found []FoundImage, dst Destination, o *Options, where map[string][]string) ([]*imageRef, error) {
	var refs []*imageRef
	seen := map[string]*imageRef{}
	targets := map[string]string{}
	var errs []error
	for _, f := range found {
		r, err := newImageRef(f.Ref, dst, nameOpts(o)...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (used by %s)", err, strings.Join(f.Where, "; ")))
			continue
		}
		if o.Exclude != nil && (o.Exclude.MatchString(f.Ref) || o.Exclude.MatchString(r.Source)) {
			continue
		}
		where[r.Source] = append(where[r.Source], f.Where...)
		if _, ok := seen[r.Source]; ok {
			continue
		}
		if prev, ok := targets[r.Target()]; ok {
			errs = append(errs, fmt.Errorf("images %s and %s would both be copied to %s", prev, r.Source, r.Target()))
			continue
		}
		targets[r.Target()] = r.Source
		seen[r.Source] = r
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Source < refs[j].Source })
	return refs, errors.Join(errs...)
}

// plan resolves every source and checks every target in parallel; any missing source or
// conflicting tag fails the whole run before anything is written.
func plan(ctx context.Context, sess *sessions, refs []*imageRef, o *Options, log *logger, waitSignIn func() error, where map[string][]string) ([]*plannedImage, error) {
	images := make([]*plannedImage, len(refs))
	errs := make([]error, len(refs))
	sem := make(chan struct{}, o.Jobs)
	lookups := make(chan struct{}, 2*o.Jobs) // referrer lookups, across images
	var wg sync.WaitGroup
	for i, r := range refs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			img, err := resolveImage(ctx, sess, r, o.Platforms)
			if err != nil {
				if w := where[r.Source]; len(w) > 0 {
					err = fmt.Errorf("%w (used by %s)", err, strings.Join(w, "; "))
				}
				errs[i] = err
				return
			}
			img.targetName = r.targetRef(img.digest.String())
			if err := waitSignIn(); err != nil {
				errs[i] = err
				return
			}
			existing, err := checkTarget(ctx, sess, img.targetName)
			if err != nil {
				errs[i] = err
				return
			}
			img.existing = existing
			switch {
			case existing == img.digest.String():
				img.action = ActionSkipped
			case existing != "" && !o.Force:
				errs[i] = fmt.Errorf("%s already exists with digest %s, not %s as in %s (use --force to replace it)", r.Target(), existing, img.digest, r.Source)
				return
			default:
				img.action = ActionWouldPush
			}
			if o.Lock {
				if img.lock, err = planLock(ctx, tagAPI{sess}, img.targetName, existing, img.digest.String()); err != nil {
					errs[i] = err
					return
				}
			}
			switch {
			case o.Referrers:
				// Its blobs are checked once every image's referrers are known (below).
				errs[i] = findReferrers(ctx, sess, img, lookups, o.Force, log)
			case img.action == ActionWouldPush && !o.DryRun:
				errs[i] = checkBlobs(ctx, sess, img, o.Jobs)
			}
			images[i] = img
		}()
	}
	wg.Wait()
	if o.Referrers && errors.Join(errs...) == nil {
		// Settled in order: two images bound for one repository may share referrers.
		claimed := map[string]*referrer{}
		for _, img := range images {
			img.planReferrerCopy(claimed)
		}
		_ = forEach(len(images), o.Jobs, func(i int) error {
			if !o.DryRun && len(images[i].blobs) > 0 {
				errs[i] = checkBlobs(ctx, sess, images[i], o.Jobs)
			}
			return nil // kept in errs: a sign-in failure is told apart below
		})
	}
	// A sign-in failure is the same for every image: report it once.
	for _, err := range errs {
		var se *SignInError
		if errors.As(err, &se) {
			return nil, se
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return images, nil
}

func imageResults(images []*plannedImage) []ImageResult {
	out := make([]ImageResult, 0, len(images))
	for _, img := range images {
		r := ImageResult{
			Source: img.ref.Source, Target: img.ref.Target(), Digest: img.digest.String(), MediaType: string(img.mediaType),
			Platforms: img.platforms, Action: img.action, Lock: img.lock, Size: img.size, Bytes: img.uploaded.Load(), Where: img.where,
			Referrers: referrerResults(img),
		}
		if img.existing != "" && img.existing != r.Digest {
			r.Replaces = img.existing
		}
		if img.err != nil && img.action == ActionFailed {
			r.Error = oneLine(img.err.Error())
		}
		out = append(out, r)
	}
	return out
}

func finish(res *Result, st *stats) {
	res.Transfer = Transfer{Requests: st.requests.Load(), BlobUploads: st.blobUploads.Load(), BlobMounts: st.mounts.Load()}
	for _, i := range res.Images {
		res.Transfer.BytesPushed += i.Bytes
	}
	if res.Chart != nil {
		res.Transfer.BytesPushed += res.Chart.Bytes
	}
}
