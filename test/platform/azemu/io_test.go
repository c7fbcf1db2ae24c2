package azemu

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
)

// countingConn is a net.Conn that counts reads and writes and serves reads from a pipe.
type countingConn struct {
	net.Conn
	mu            sync.Mutex
	reads, writes int
	wrote         bytes.Buffer
	src           io.Reader
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.src.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.wrote.Write(p)
}

func (c *countingConn) Close() error { return nil }

// trickle hands out at most n bytes per Read, like a TLS connection handing out one record.
type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

func TestBatchingConnWritesLargeBatches(t *testing.T) {
	body := make([]byte, 5<<20+123)
	_, _ = rand.Read(body)
	c := &countingConn{}
	n, err := (&batchingConn{Conn: c}).ReadFrom(&trickle{r: bytes.NewReader(body), n: 16 << 10})
	if err != nil || n != int64(len(body)) {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if !bytes.Equal(c.wrote.Bytes(), body) {
		t.Fatal("bytes written differ from the body")
	}
	// 16 KB pieces would be 321 writes; 1 MB batches are 6.
	if c.writes != 6 {
		t.Errorf("writes = %d, want 6", c.writes)
	}
}

func TestBufferedConnReadsLargeChunks(t *testing.T) {
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	c := &countingConn{src: bytes.NewReader(data)}
	bc := &bufferedConn{Conn: c}
	var got bytes.Buffer
	// The TLS layer reads about one record at a time.
	buf := make([]byte, 16<<10+5)
	for {
		n, err := bc.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("bytes read differ from the data")
	}
	// 3 MB in 256 KB refills (12) plus the read that sees EOF; unbuffered it would be ~190 reads.
	if c.reads > 13 {
		t.Errorf("reads of the connection = %d, want at most 13", c.reads)
	}
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Read(buf); err == nil {
		t.Error("read after close succeeded")
	}
}
