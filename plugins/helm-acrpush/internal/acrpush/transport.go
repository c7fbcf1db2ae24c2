package acrpush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// retryTransport retries a request that got 408, 429 or a 5xx, or whose connection failed, with
// exponential backoff and jitter, waiting at least as long as the server's Retry-After. Requests
// that append to a blob upload (PATCH) are not retried here, since a half-written chunk may already
// be in the upload: the response is returned after the Retry-After wait and go-containerregistry
// restarts the whole blob upload in a new session.
type retryTransport struct {
	inner  http.RoundTripper
	policy RetryPolicy
	log    *logger
}

func isRetryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// isRetryError reports whether a transport error is worth retrying: a dropped or timed-out
// connection. A refused connection is not: the registry is not there, and the user should hear
// so at once.
func isRetryError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var nerr net.Error
	return errors.Is(err, errSentOnce) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &nerr) && nerr.Timeout())
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return t.Sub(now)
	}
	return 0
}

// errSentOnce is what a second send of a blob's streamed body gets: the upload starts over.
var errSentOnce = errors.New("the request was sent again after its body was streamed (a new token was needed)")

// sendOnce is a request body that can be sent once: a blob streamed from its source. A transport
// above the retrying one that sends the request again (go-containerregistry's bearer transport,
// after a 401 when the access token expired during the push) gets errSentOnce, which restarts
// the upload with a fresh source and the new token, instead of sending an empty body.
type sendOnce struct {
	io.Reader
	sent atomic.Bool
}

// Close does nothing: the upload closes its source itself.
func (b *sendOnce) Close() error { return nil }

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if b, ok := req.Body.(*sendOnce); ok && b.sent.Swap(true) {
		return nil, errSentOnce
	}
	// A PATCH appends to a blob upload and is not sent twice; ACR's tag attributes PATCH
	// (/acr/v1/...) sets values and is.
	appends := req.Method == http.MethodPatch && !strings.HasPrefix(req.URL.Path, "/acr/")
	replayable := !appends && (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		// go-containerregistry's bearer transport sends a request again, body already read, when
		// a 401 asked for a new token (an access token that expired during a long push, a scope
		// the first token lacked): every send starts from a fresh copy of the body.
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req = req.Clone(req.Context())
		req.Body = body
	}
	wait := t.policy.Initial
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
		resp, err := t.inner.RoundTrip(req)
		retry := false
		var delay time.Duration
		switch {
		case err != nil:
			retry = isRetryError(err)
		case isRetryStatus(resp.StatusCode):
			retry = true
			delay = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		if !retry || attempt >= t.policy.Attempts {
			return resp, err
		}
		if delay < wait {
			delay = wait + time.Duration(rand.Int64N(int64(wait)/4+1))
		}
		delay = min(delay, t.policy.Max)
		what := ""
		if err != nil {
			what = err.Error()
		} else {
			what = resp.Status
		}
		if !replayable {
			// The caller restarts the upload; honour the server's pause before handing back.
			if resp != nil && resp.Header.Get("Retry-After") != "" {
				t.log.printf("%s %s: %s, waiting %s before the upload is restarted", req.Method, redactURL(req), what, delay)
				if err := sleep(req.Context(), delay); err != nil {
					return resp, nil
				}
			}
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		t.log.printf("%s %s: %s, retry %d/%d in %s", req.Method, redactURL(req), what, attempt, t.policy.Attempts-1, delay.Round(time.Millisecond))
		if err := sleep(req.Context(), delay); err != nil {
			return nil, err
		}
		wait *= 2
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// redactURL is the request URL without its query: upload locations and token requests may carry
// state in the query, and nothing secret belongs in a log.
func redactURL(req *http.Request) string {
	u := *req.URL
	u.RawQuery = ""
	u.User = nil
	return u.String()
}

// urlQuery matches the query of a URL inside a message (an error of net/http or
// go-containerregistry quotes the request's URL whole).
var urlQuery = regexp.MustCompile(`(https?://[^\s"'?]+)\?[^\s"']*?(:?)([\s"']|$)`)

// RedactQueries drops the queries of the URLs in s: upload locations carry the registry's
// session state, token requests their parameters, and neither belongs in a log or an error.
func RedactQueries(s string) string {
	if !strings.Contains(s, "?") {
		return s
	}
	return urlQuery.ReplaceAllString(s, "$1$2$3")
}

// logger writes debug lines when enabled, each with the time since the push began. It never
// receives headers or bodies.
type logger struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (l *logger) printf(format string, args ...any) {
	if l == nil || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, RedactQueries(fmt.Sprintf("[%7.3fs] "+format+"\n", append([]any{time.Since(l.start).Seconds()}, args...)...)))
}

// stats counts requests by kind, for the report and the tests.
type stats struct {
	requests    atomic.Int64
	blobUploads atomic.Int64 // upload sessions started (POST /blobs/uploads/ without a successful mount)
	mounts      atomic.Int64
}

// countingTransport logs each request line and counts uploads.
type countingTransport struct {
	inner http.RoundTripper
	log   *logger
	stats *stats
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	t.stats.requests.Add(1)
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		t.log.printf("%s %s: %v", req.Method, redactURL(req), err)
		return resp, err
	}
	if req.Method == http.MethodPost && isUploadPath(req.URL.Path) {
		if resp.StatusCode == http.StatusCreated && req.URL.Query().Get("mount") != "" {
			t.stats.mounts.Add(1)
		} else if resp.StatusCode == http.StatusAccepted {
			t.stats.blobUploads.Add(1)
		}
	}
	t.log.printf("%s %s -> %d (%s)", req.Method, redactURL(req), resp.StatusCode, time.Since(start).Round(time.Millisecond))
	return resp, nil
}

func isUploadPath(p string) bool {
	const suffix = "/blobs/uploads/"
	return len(p) >= len(suffix) && p[len(p)-len(suffix):] == suffix
}
