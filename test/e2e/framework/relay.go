package framework

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RelayOptions shape the link a relay puts between a client and an emulator.
type RelayOptions struct {
	// Wrap, when not nil, sees every request first (to inject faults) and hands it to the relay
	// when it wants to.
	Wrap func(relay http.Handler) http.Handler
	// RTT, when not zero, is the round trip of a link to Azure: every request waits one before it
	// is relayed, and every new connection waits two before its TLS handshake is answered (TCP's
	// handshake and TLS 1.3's).
	RTT time.Duration
}

// ACRRelay starts a TLS relay to ACR_LOGIN_SERVER on a free loopback port, with the emulator's
// certificate, and returns its host:port; it is stopped at cleanup. It presents the registry as a
// gateway in front of it would: the token exchange names the emulator as its service, and
// absolute upload Locations and the token realm point back at the relay.
func (e *Env) ACRRelay(t testing.TB, rt http.RoundTripper, opts RelayOptions) string {
	t.Helper()
	acr := e.ACRLoginServer
	fix := func(r *http.Request, _ string) {
		if r.URL.Path == "/oauth2/exchange" {
			_ = r.ParseForm()
			r.PostForm.Set("service", acr)
			body := r.PostForm.Encode()
			r.Body = io.NopCloser(strings.NewReader(body))
			r.ContentLength = int64(len(body))
		}
	}
	modify := func(resp *http.Response, self string) error {
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Header.Set("Location", strings.Replace(loc, "https://"+acr, "https://"+self, 1))
		}
		// Token requests go through the relay too (clients refuse a realm on another private host).
		if ch := resp.Header.Get("Www-Authenticate"); ch != "" {
			resp.Header.Set("Www-Authenticate", strings.Replace(ch, "realm=\"https://"+acr, "realm=\"https://"+self, 1))
		}
		return nil
	}
	return e.relay(t, rt, acr, fix, modify, opts)
}

// EntraRelay starts a TLS relay to the Entra ID emulator (AZURE_AUTHORITY_HOST) and returns the
// authority host to use instead, ending in "/". The emulator's discovery documents name their
// endpoints by its own address; the relay names itself there, as MSAL requires of an authority.
func (e *Env) EntraRelay(t testing.TB, rt http.RoundTripper, opts RelayOptions) string {
	t.Helper()
	u, err := url.Parse(e.Vars["AZURE_AUTHORITY_HOST"])
	if err != nil || u.Host == "" {
		t.Fatalf("AZURE_AUTHORITY_HOST %q: %v", e.Vars["AZURE_AUTHORITY_HOST"], err)
	}
	target := u.Host
	modify := func(resp *http.Response, self string) error {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		body = bytes.ReplaceAll(body, []byte("https://"+target), []byte("https://"+self))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	return "https://" + e.relay(t, rt, target, nil, modify, opts) + "/"
}

// relay starts a TLS reverse proxy to target (an emulator serving with the platform's emulator
// certificate) on a free loopback port and returns its host:port; it is stopped at cleanup. fix
// and modify, when not nil, see each request and response with the relay's own host:port.
func (e *Env) relay(t testing.TB, rt http.RoundTripper, target string, fix func(r *http.Request, self string), modify func(resp *http.Response, self string) error, opts RelayOptions) string {
	t.Helper()
	dir := filepath.Join(e.Vars["PLATFORM_DIR"], "azure")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem"))
	if err != nil {
		t.Fatalf("emulator certificate: %v", err)
	}
	if tr, ok := rt.(*http.Transport); ok {
		// One HTTP/1.1 connection per request in flight, as the clients have: over HTTP/2 every
		// request relayed at once would share one connection and its flow-control window.
		tr = tr.Clone()
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		if tr.TLSClientConfig != nil {
			tr.TLSClientConfig = tr.TLSClientConfig.Clone()
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		tr.MaxIdleConnsPerHost = 64
		rt = tr
	}
	var self string // the listener's address, known before the first request
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: target})
			pr.Out.Host = target
		},
		Transport: rt,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fix != nil {
			fix(r, self)
		}
		rp.ServeHTTP(w, r)
	})
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	if rtt := opts.RTT; rtt > 0 {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(rtt)
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewUnstartedServer(h)
	self = srv.Listener.Addr().String()
	if modify != nil {
		rp.ModifyResponse = func(resp *http.Response) error { return modify(resp, self) }
	}
	if opts.RTT > 0 {
		srv.Listener = slowStartListener{Listener: srv.Listener, delay: 2 * opts.RTT}
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return self
}

// slowStartListener hands out connections whose first read waits delay: the client's TLS hello
// is answered as late as it would be after that many milliseconds of handshakes on a real link.
type slowStartListener struct {
	net.Listener
	delay time.Duration
}

func (l slowStartListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowStartConn{Conn: c, delay: l.delay}, nil
}

type slowStartConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowStartConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Read(p)
}
