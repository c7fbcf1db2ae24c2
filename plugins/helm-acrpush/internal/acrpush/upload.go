package acrpush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// blobUploader writes blobs with the fewest round trips the distribution protocol allows. Whether
// a blob is there already is asked while planning, many blobs at once; an upload is then one POST
// opening the session (a cross-repository mount when another repository of the registry holds
// the blob) and one PUT carrying the whole blob, which also commits it, while the source is
// opened during the POST. go-containerregistry's Upload makes four requests one after another
// (HEAD, POST, PATCH, PUT) and opens the source only after the first two: on a link to Azure
// with tens of milliseconds per round trip, that is most of the time a small blob takes.
//
// A PUT with a body is the monolithic upload of the OCI distribution spec, which every registry
// must accept (ORAS uploads every blob this way). A blob upload that fails with 408, 429, a 5xx
// or a dropped connection is restarted in a new session with backoff, as go-containerregistry
// does: a half-sent body cannot be resumed.
type blobUploader struct {
	sess     *sessions
	retry    RetryPolicy
	log      *logger
	progress *progressBar // its total grows when a registry declines a mount
}

// blobOpener opens a blob's bytes; each call starts from the beginning.
type blobOpener func(ctx context.Context) (io.ReadCloser, error)

// upload writes d into repo. With from (another repository of repo's registry that holds the
// blob) it asks for a mount, and uploads from open when the registry declines. count receives the
// bytes sent (negative when a failed attempt's bytes are taken back). It reports whether the blob
// was mounted.
func (u *blobUploader) upload(ctx context.Context, repo name.Repository, d blobDesc, from *name.Repository, open blobOpener, count func(int64)) (bool, error) {
	rt, err := u.sess.transport(ctx, repo.Registry)
	if err != nil {
		return false, err
	}
	client := &http.Client{Transport: rt}
	// The same schedule go-containerregistry used for whole-upload restarts.
	steps := max(2*u.retry.Attempts, 15)
	wait := u.retry.Initial
	for attempt := 1; ; attempt++ {
		mounted, declined, err := u.try(ctx, client, repo, d, from, open, count)
		if declined {
			from = nil // a restart uploads straight away
		}
		if err == nil || attempt >= steps || !retryableUpload(err) || ctx.Err() != nil {
			return mounted, err
		}
		delay := min(wait+time.Duration(rand.Int64N(int64(wait)/5+1)), u.retry.Max)
		u.log.printf("blob %s into %s: %v; restarting the upload in %s", d.Digest, repo, oneLine(err.Error()), delay.Round(time.Millisecond))
		if err := sleep(ctx, delay); err != nil {
			return false, err
		}
		wait = time.Duration(float64(wait) * 1.3)
	}
}

// retryableUpload reports whether a failed upload is worth restarting.
func retryableUpload(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return isRetryStatus(te.StatusCode)
	}
	return isRetryError(err)
}

type openedBlob struct {
	rc  io.ReadCloser
	err error
}

// try makes one attempt: it reports whether the blob was mounted, or whether a mount was asked
// for and declined.
func (u *blobUploader) try(ctx context.Context, client *http.Client, repo name.Repository, d blobDesc, from *name.Repository, open blobOpener, count func(int64)) (mounted, declined bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Open the source while the session is being opened, unless a mount is expected.
	var src chan openedBlob
	if from == nil {
		src = make(chan openedBlob, 1)
		go func() {
			rc, err := open(ctx)
			src <- openedBlob{rc, err}
		}()
		defer func() {
			// Close a source the upload did not get to read.
			cancel()
			if o := <-src; o.rc != nil {
				_ = o.rc.Close()
			}
		}()
	}

	base := url.URL{Scheme: repo.Registry.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/uploads/", repo.RepositoryStr())}
	if from != nil {
		base.RawQuery = url.Values{"mount": {d.Digest.String()}, "from": {from.RepositoryStr()}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.String(), http.NoBody)
	if err != nil {
		return false, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, false, err
	}
	loc, err := uploadLocation(resp, &base, from != nil)
	if err != nil || loc == nil {
		return err == nil, false, err // a nil location without error: mounted
	}
	if from != nil {
		// The registry declined the mount (the blob is not in from after all, or this identity
		// may not read it): the bytes go up instead.
		u.log.printf("blob %s: mount from %s declined, uploading it", d.Digest, from)
		u.progress.addTotal(d.Size)
		declined = true
	}

	var body io.ReadCloser
	if src != nil {
		o := <-src
		src <- openedBlob{} // nothing left for the deferred close
		if o.err != nil {
			return false, declined, o.err
		}
		body = o.rc
	} else if body, err = open(ctx); err != nil {
		return false, declined, err
	}
	defer func() { _ = body.Close() }()
	// Bytes read for a failed attempt are taken back; reads the transport makes after giving up
	// on the request are not counted.
	var mu sync.Mutex
	var sent int64
	stopped := false
	counted := &countingReader{rc: body, count: func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			sent += n
			count(n)
		}
	}}

	q := loc.Query()
	q.Set("digest", d.Digest.String())
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), &sendOnce{Reader: counted})
	if err != nil {
		return false, declined, err
	}
	req.ContentLength = d.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err == nil {
		defer func() { _ = resp.Body.Close() }()
		err = transport.CheckError(resp, http.StatusCreated)
	}
	if err != nil {
		mu.Lock()
		stopped = true
		count(-sent)
		mu.Unlock()
		return false, declined, err
	}
	return false, declined, nil
}

// uploadLocation reads the answer to the POST that opens an upload: the location to PUT the
// blob to, or nil when the blob was mounted.
func uploadLocation(resp *http.Response, base *url.URL, mounting bool) (*url.URL, error) {
	defer func() { _ = resp.Body.Close() }()
	if mounting && resp.StatusCode == http.StatusCreated {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, nil
	}
	if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return nil, fmt.Errorf("registry %s opened an upload without a usable Location header", base.Host)
	}
	return loc, nil
}

// blobExists asks whether repo holds the blob.
func blobExists(ctx context.Context, sess *sessions, repo name.Repository, dg v1.Hash) (bool, error) {
	rt, err := sess.transport(ctx, repo.Registry)
	if err != nil {
		return false, err
	}
	u := url.URL{Scheme: repo.Registry.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), dg)}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return false, err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return false, err
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, transport.CheckError(resp, http.StatusOK, http.StatusNotFound)
}
