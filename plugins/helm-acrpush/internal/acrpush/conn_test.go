package acrpush

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// writeCounter counts the writes made on a connection: system calls, for a TCP connection.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestBatchedTLSTransport(t *testing.T) {
	body := make([]byte, 24<<20+12345)
	src := rand.NewChaCha8([32]byte{1})
	_, _ = src.Read(body)
	want := sha256.Sum256(body)

	var got [32]byte
	var n int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ = io.Copy(h, r.Body)
		copy(got[:], h.Sum(nil))
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.StartTLS()
	defer srv.Close()

	writes := &atomic.Int64{}
	tr := NewTransport(true)
	defer tr.CloseIdleConnections()
	var d net.Dialer
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialBatchedTLS(ctx, func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			return writeCounter{Conn: c, writes: writes}, err
		}, tr.TLSClientConfig, network, addr)
	}
	for _, chunked := range []bool{false, true} {
		writes.Store(0)
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPatch, srv.URL+"/v2/r/blobs/uploads/x", io.NopCloser(bytes.NewReader(body)))
		if chunked {
			req.ContentLength = -1
		} else {
			req.ContentLength = int64(len(body))
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || n != int64(len(body)) || got != want {
			t.Fatalf("chunked=%v: status %d, server got %d of %d bytes, digest equal %v", chunked, resp.StatusCode, n, len(body), got == want)
		}
		// 24 MB is about 1,500 TLS records, each its own write in crypto/tls; gathered, they
		// leave in batches of a megabyte (plus the handshake and the request head).
		if w := writes.Load(); w > 40 {
			t.Errorf("chunked=%v: %d writes for %d bytes: the records are not batched", chunked, w, len(body))
		}
	}
}

func TestBatchedTLSVerifiesCertificates(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	tr := NewTransport(false)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
	// With the server's CA trusted, the same request succeeds and speaks HTTP/1.1.
	tr.TLSClientConfig.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("protocol %s, want HTTP/1.1", resp.Proto)
	}
}
