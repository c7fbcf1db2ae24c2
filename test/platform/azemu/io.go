package azemu

import (
	"bufio"
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

var batchPool = sync.Pool{New: func() any { b := make([]byte, ioBatch); return &b }}

// bufferedListener hands out connections whose reads go through a buffer, so that the TLS layer
// above gets many records per read(2).
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c}, nil
}

// bufferedConn reads through a buffer made on its first read (the TLS layer reads one connection
// from one goroutine at a time). bufio refills it with one read(2) of whatever the socket holds
// and reads straight into requests at least as large as the buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r == nil {
		c.r = bufio.NewReaderSize(c.Conn, readBuffer)
	}
	return c.r.Read(p)
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
