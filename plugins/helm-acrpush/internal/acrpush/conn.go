package acrpush

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// writeBatch is how many bytes of a request body are encrypted and handed to the kernel at once.
const writeBatch = 1 << 20

// NewTransport is the HTTP transport the command uses: HTTP/1.1 with one TCP connection per
// concurrent transfer (over HTTP/2 every blob of a run would share one connection and its
// flow-control window), and TLS connections that send a blob in large writes.
//
// crypto/tls writes each record of at most 16 KB with its own system call, and net/http feeds a
// request body to it 32 KB at a time; on a fast link that is tens of thousands of small writes,
// each waking the receiver, for a few hundred megabytes. The connections made here gather the
// records of up to writeBatch bytes of body and write them with one call.
//
// The dialer is used only for requests that go straight to the registry; requests through an
// HTTPS_PROXY take net/http's own path.
func NewTransport(insecureSkipVerify bool) *http.Transport {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	cfg := &tls.Config{InsecureSkipVerify: insecureSkipVerify, NextProtos: []string{"http/1.1"}} //nolint:gosec // only with --insecure-skip-tls-verify
	return &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: dialer.DialContext,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialBatchedTLS(ctx, dialer.DialContext, cfg, network, addr)
		},
		TLSClientConfig:       cfg,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func dialBatchedTLS(ctx context.Context, dial dialFunc, cfg *tls.Config, network, addr string) (net.Conn, error) {
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = host
	}
	bw := &batchWriter{Conn: raw}
	tc := tls.Client(bw, c)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return &batchedTLSConn{Conn: tc, under: bw}, nil
}

// batchWriter is the TCP connection under the TLS layer: writes gather in a buffer while flushing
// is held, and go straight through otherwise. The TLS layer may write from its reading side too
// (alerts, key updates), so the buffer has a lock of its own. The buffer is made on the first
// hold: connections that only carry small requests never need it.
type batchWriter struct {
	net.Conn
	mu   sync.Mutex
	w    *bufio.Writer
	hold bool
}

func (b *batchWriter) setHold() {
	b.mu.Lock()
	b.hold = true
	if b.w == nil {
		b.w = bufio.NewWriterSize(b.Conn, writeBatch+64<<10) // room for a batch's record headers and tags
	}
	b.mu.Unlock()
}

// release stops holding and sends what was gathered.
func (b *batchWriter) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = false
	return b.w.Flush()
}

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.hold {
		if b.w != nil && b.w.Buffered() > 0 {
			if err := b.w.Flush(); err != nil {
				return 0, err
			}
		}
		return b.Conn.Write(p)
	}
	return b.w.Write(p)
}

// batchedTLSConn is a TLS connection whose writes each end in one system call however many
// records they make.
type batchedTLSConn struct {
	*tls.Conn
	under *batchWriter
}

// Write encrypts p into records gathered below the TLS layer and sends them together.
func (c *batchedTLSConn) Write(p []byte) (int, error) {
	c.under.setHold()
	n, err := c.Conn.Write(p)
	if ferr := c.under.release(); err == nil {
		err = ferr
	}
	return n, err
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, writeBatch); return &b }}

// ReadFrom is what net/http's request-body copy ends in: it reads the body writeBatch bytes at a
// time (fewer, when the source is slower than the link) and writes each batch at once.
func (c *batchedTLSConn) ReadFrom(r io.Reader) (int64, error) {
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := readSome(r, buf)
		if n > 0 {
			w, werr := c.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			return total, rerr
		}
	}
}

// readSome fills buf from r until it is at least a quarter full, the reader ends or fails, so that
// a reader handing out a few kilobytes per call still makes large batches.
func readSome(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf)/4 {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// preconnect opens up to n connections to the registry in the background, while the run signs in
// and renders the chart: on a link to Azure each new connection costs two round trips (TCP's and
// TLS's handshakes) that would otherwise come after the sign-in, before the first check and each
// parallel upload. It asks for /v2/ (an unauthenticated ping; a 401 is expected) and leaves the
// connections idle in rt's pool; a failure costs nothing, the run dials as usual. The requests are
// not retried, logged or counted: they carry nothing.
func preconnect(ctx context.Context, rt http.RoundTripper, reg name.Registry, n int) {
	if rt == nil {
		return
	}
	for range min(n, 8) {
		go func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+reg.RegistryStr()+"/v2/", http.NoBody)
			if err != nil {
				return
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}()
	}
}
