package azemu

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// The ACR front stands in for Azure's edge, whose CPU is not on the pushing machine. Left to
// net/http's defaults it read the client's TLS records ~30 KB per read(2) and wrote each 16 KB
// record's plaintext to the registry with its own write(2), waking the registry each time: on a
// two-core machine that overhead was taken from the client and the registry being measured.
// These wrappers move the same bytes in 256 KB reads and 1 MB writes; what reaches the registry, and
// when a request ends, do not change.

// ioBatch is the write batch towards the registry, held only while a body is copied.
const ioBatch = 1 << 20

// readBuffer is the read buffer of a client connection: 16 TLS records per read(2). A connection
// holds it from its first read until it closes (an idle keep-alive connection waits in a read),
// so it is kept well below ioBatch.
const readBuffer = 256 << 10

var (
	batchPool = sync.Pool{New: func() any { b := make([]byte, ioBatch); return &b }}
	readPool  = sync.Pool{New: func() any { b := make([]byte, readBuffer); return &b }}
)

// bufferedListener hands out connections whose reads go through a buffer, so that the TLS layer
// above gets many records per read(2). The buffer is made on the first read and returned to the
// pool when the connection closes.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c}, nil
}

type bufferedConn struct {
	net.Conn
	mu      sync.Mutex
	buf     *[]byte // nil until the first read and after release
	r, w    int     // unread bytes are buf[r:w]
	err     error   // the error of the read that filled buf, returned once buf is drained
	reading bool
	closed  bool
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.buf == nil {
		c.buf = readPool.Get().(*[]byte)
	}
	c.reading = true
	c.mu.Unlock()
	n, err := c.read(p)
	c.mu.Lock()
	c.reading = false
	if c.closed {
		c.release()
	}
	c.mu.Unlock()
	return n, err
}

// read serves p from the buffer, refilling it with one read of whatever the socket holds (up to
// readBuffer) when it is empty; reads as large as the buffer skip it.
func (c *bufferedConn) read(p []byte) (int, error) {
	b := *c.buf
	if c.r == c.w {
		if err := c.err; err != nil {
			c.err = nil
			return 0, err
		}
		if len(p) >= len(b) {
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(b)
		c.r, c.w, c.err = 0, n, err
		if n == 0 {
			c.err = nil
			return 0, err
		}
	}
	n := copy(p, b[c.r:c.w])
	c.r += n
	return n, nil
}

func (c *bufferedConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	c.closed = true
	if !c.reading {
		c.release()
	}
	c.mu.Unlock()
	return err
}

// release returns the buffer to the pool; c.mu is held and no read is running.
func (c *bufferedConn) release() {
	if c.buf != nil {
		readPool.Put(c.buf)
		c.buf = nil
		c.r, c.w = 0, 0
	}
}

// upstreamTransport is the proxy's transport to the registry: plain HTTP/1.1 on loopback, enough
// idle connections for a parallel push (net/http keeps 2 per host by default and redials the
// rest), and request bodies written in batches of up to 1 MB.
func upstreamTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &batchingConn{Conn: c}, nil
		},
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// batchingConn gathers what net/http copies into it (a request body) into writes of up to 1 MB.
// A body arrives ~16 KB at a time (one TLS record per read); without this each piece was a
// write(2) and a wake-up of the registry.
type batchingConn struct{ net.Conn }

// ReadFrom is what net/http's request writer ends in (bufio.Writer.ReadFrom ->
// persistConnWriter.ReadFrom -> io.Copy(conn, body)). It fills a batch before writing it; a body
// is written whole before the response is read, so waiting for a full batch never stalls it.
func (c *batchingConn) ReadFrom(r io.Reader) (int64, error) {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			w, werr := c.Conn.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return total, nil
		default:
			return total, rerr
		}
	}
}
