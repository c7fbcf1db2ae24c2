package acrpush

import (
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type faultConfig struct {
	// errorRate is the share of requests answered 500, 502, 503 or 429 without reaching the registry.
	errorRate float64
	// resetRate is the share of blob uploads (PATCH, or PUT with a body) and blob downloads whose connection is reset
	// half-way through the blob.
	resetRate float64
	// refuse answers matching requests 400.
	refuse func(method, path string) bool
	seed   uint64
}

type faultProxy struct {
	*httptest.Server
	Host             string
	errors, resets   atomic.Int64
	mu               sync.Mutex
	rnd              *rand.Rand
	cfg              faultConfig
	target           *url.URL
	proxy            *httputil.ReverseProxy
	retryAfterServed atomic.Int64
	// The first request (after the ping) and the first blob transfer always fail, so a run with few
	// requests still meets at least one fault of each kind, whatever order the goroutines run in.
	erredOnce, resetOnce atomic.Bool
}

func newFaultProxy(t *testing.T, target string, cfg faultConfig) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{cfg: cfg, target: u, rnd: rand.New(rand.NewPCG(cfg.seed, 7))}
	p.proxy = httputil.NewSingleHostReverseProxy(u)
	p.proxy.ErrorLog = log.New(io.Discard, "", 0)
	p.proxy.ModifyResponse = func(resp *http.Response) error {
		// Registries answer with absolute Locations on their own host: keep the client on the proxy.
		if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, target) {
			resp.Header.Set("Location", strings.TrimPrefix(loc, target))
		}
		return nil
	}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	p.Host = strings.TrimPrefix(p.URL, "http://")
	return p
}

func (p *faultProxy) roll() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rnd.Float64()
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	if p.cfg.refuse != nil && p.cfg.refuse(r.Method, r.URL.Path) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"refused by the test proxy"}]}`)
		return
	}
	if r.URL.Path != "/v2/" && p.cfg.errorRate > 0 && (p.erredOnce.CompareAndSwap(false, true) || p.roll() < p.cfg.errorRate) {
		p.errors.Add(1)
		codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusTooManyRequests}
		code := codes[int(p.roll()*float64(len(codes)))]
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
			p.retryAfterServed.Add(1)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`)
		return
	}
	isUpload := r.Method == http.MethodPatch || (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 0)
	isBlob := isUpload || (r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:"))
	if isBlob && p.cfg.resetRate > 0 && (p.resetOnce.CompareAndSwap(false, true) || p.roll() < p.cfg.resetRate) {
		p.resets.Add(1)
		if isUpload {
			// Read part of the blob, then drop the connection.
			_, _ = io.CopyN(io.Discard, r.Body, max(r.ContentLength/2, 1))
			reset(w)
			return
		}
		// Send half the blob, then drop the connection.
		rec := httptest.NewRecorder()
		p.proxy.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body[:len(body)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		reset(w)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

func TestPushThroughFaults(t *testing.T) {
	f := newFixture(t, 64<<10)
	dst := newTestRegistry(t)
	srcProxy := newFaultProxy(t, f.src.URL, faultConfig{errorRate: 0.2, resetRate: 0.2, seed: 1})
	dstProxy := newFaultProxy(t, dst.URL, faultConfig{errorRate: 0.2, resetRate: 0.2, seed: 2})
	chartDir := f.writeChart(t)
	// Point the chart at the source through its proxy.
	vals := strings.NewReplacer(f.src.Host, srcProxy.Host)
	start := time.Now()
	res, err := Push(ctxT(t), chartDir, Destination{Registry: dstProxy.Host, Prefix: "x"}, anonymous(), fastRetry(), WithJobs(3),
		WithSetValues("web.image.registry="+srcProxy.Host, "api.image="+vals.Replace(f.apiRef)),
		WithImages(vals.Replace(f.workerRef)), WithExclude(regexp.MustCompile(regexp.QuoteMeta(f.src.Host+"/"))))
	if err != nil {
		t.Fatalf("push through faults: %v (errors injected %d+%d, resets %d+%d)", err, srcProxy.errors.Load(), dstProxy.errors.Load(), srcProxy.resets.Load(), dstProxy.resets.Load())
	}
	t.Logf("injected errors %d/%d, resets %d/%d, in %s", srcProxy.errors.Load(), dstProxy.errors.Load(), srcProxy.resets.Load(), dstProxy.resets.Load(), time.Since(start))
	if dstProxy.errors.Load() == 0 || dstProxy.resets.Load() == 0 || srcProxy.resets.Load() == 0 {
		t.Error("the proxies injected no faults; the test proves nothing")
	}
	want := map[string]string{"web:1.0": f.indexDigest.String(), "api:2.1": f.apiDigest.String(), "worker:2.1": f.workerDigest.String()}
	for suffix, dg := range want {
		if got := digestAt(t, dst.Host+"/x/team/"+suffix); got != dg {
			t.Errorf("%s: digest %q, want %s", suffix, got, dg)
		}
	}
	if got := digestAt(t, dst.Host+"/x/shop:0.3.0"); got != res.Chart.Digest || got == "" {
		t.Errorf("chart digest %q, want %s", got, res.Chart.Digest)
	}
}
