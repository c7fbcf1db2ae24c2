package framework

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// ACRRelay starts a TLS relay to ACR_LOGIN_SERVER on a free loopback port, with the emulator's
// certificate, and returns its host:port; it is stopped at cleanup. It presents the registry as a
// gateway in front of it would: the token exchange names the emulator as its service, and
// absolute upload Locations and the token realm point back at the relay. wrap, when not nil, sees
// every request first (to inject faults or delay) and hands it to the relay when it wants to.
func (e *Env) ACRRelay(t testing.TB, rt http.RoundTripper, wrap func(relay http.Handler) http.Handler) string {
	t.Helper()
	dir := filepath.Join(e.Vars["PLATFORM_DIR"], "azure")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem"))
	if err != nil {
		t.Fatalf("emulator certificate: %v", err)
	}
	acr := e.ACRLoginServer
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
	var self string
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: acr})
			pr.Out.Host = acr
		},
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", strings.Replace(loc, "https://"+acr, "https://"+self, 1))
			}
			// Token requests go through the relay too (clients refuse a realm on another private host).
			if ch := resp.Header.Get("Www-Authenticate"); ch != "" {
				resp.Header.Set("Www-Authenticate", strings.Replace(ch, "realm=\"https://"+acr, "realm=\"https://"+self, 1))
			}
			return nil
		},
		Transport: rt,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/exchange" {
			_ = r.ParseForm()
			r.PostForm.Set("service", acr)
			body := r.PostForm.Encode()
			r.Body = io.NopCloser(strings.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		rp.ServeHTTP(w, r)
	})
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	self = strings.TrimPrefix(srv.URL, "https://")
	return self
}
