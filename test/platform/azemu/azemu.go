// Package azemu emulates, at the protocol level and on loopback, the Azure endpoints the plugins
// sign in with: Entra ID (OpenID discovery, signing keys, the v2.0 token endpoint with the client
// credentials grant) and an Azure Container Registry login server (the /oauth2/exchange and
// /oauth2/token token service of ACR, in front of a real distribution registry configured for
// token auth with RegistryTokenAuth).
//
// The wire protocol follows Azure/acr docs/AAD-OAuth.md: an Entra token whose audience is
// https://containerregistry.azure.net (or ARM's) is exchanged for an ACR refresh token, which is
// exchanged for a registry access token scoped to repositories; the user name
// 00000000-0000-0000-0000-000000000000 with a refresh token as password works for Basic sign-in.
//
// The login server also serves ACR's tag attributes API (GET and PATCH
// /acr/v1/{repository}/_tags/{tag}, scopes metadata_read and metadata_write), which
// `az acr repository update --write-enabled false --delete-enabled false` uses to lock a tag, and
// enforces the locks: a manifest PUT or DELETE they forbid is answered 405
// REGISTRY_DISALLOWED_OPERATION, as ACR does. The attributes are kept in Dir across restarts.
//
// Clients set AZURE_AUTHORITY_HOST to https://<EntraAddr>/ with the address spelled as configured
// (MSAL requires the discovery issuer's host to be the authority's) and disable instance discovery.
// Entra errors carry Entra's status, error and AADSTS code: a wrong secret is 401 invalid_client
// AADSTS7000215, an unknown client 400 unauthorized_client AADSTS700016, an unknown tenant 400
// AADSTS90002. ACR errors are OCI error bodies ({"errors":[{"code":"UNAUTHORIZED",...}]}, 401).
package azemu

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Config configures Serve.
type Config struct {
	Dir          string                           // where PrepareCerts wrote its files
	EntraAddr    string                           // 127.0.0.1:port, served over TLS
	ACRAddr      string                           // 127.0.0.1:port, the ACR login server, served over TLS
	RegistryURL  string                           // http://127.0.0.1:port of the real distribution registry configured with RegistryTokenAuth
	TenantID     string                           // the only tenant the emulated Entra ID knows
	ClientID     string                           // the only application (service principal) it knows
	ClientSecret string                           // that application's secret
	Logf         func(format string, args ...any) // optional; never given tokens or secrets
}

// Serve runs the Entra ID emulator on cfg.EntraAddr and the ACR login server (token service and
// reverse proxy to cfg.RegistryURL) on cfg.ACRAddr, both over TLS with the certificate PrepareCerts
// wrote, until ctx ends. It returns nil after a clean shutdown.
func Serve(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	entraH, acrH, tlsCfg, err := newHandlers(cfg, time.Now)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	entraLn, err := lc.Listen(ctx, "tcp", cfg.EntraAddr)
	if err != nil {
		return fmt.Errorf("listening for entra id: %w", err)
	}
	acrLn, err := lc.Listen(ctx, "tcp", cfg.ACRAddr)
	if err != nil {
		_ = entraLn.Close()
		return fmt.Errorf("listening for acr: %w", err)
	}
	servers := []*http.Server{
		{Handler: logRequests(cfg.Logf, "entra", entraH), TLSConfig: tlsCfg, ReadHeaderTimeout: 30 * time.Second},
		{Handler: logRequests(cfg.Logf, "acr", acrH), TLSConfig: tlsCfg.Clone(), ReadHeaderTimeout: 30 * time.Second},
	}
	listeners := []net.Listener{entraLn, bufferedListener{acrLn}}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.ServeTLS(listeners[i], "", "") }()
	}
	if cfg.Logf != nil {
		cfg.Logf("azemu: entra id on https://%s, acr on https://%s -> %s", cfg.EntraAddr, cfg.ACRAddr, cfg.RegistryURL)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", serveErr)
	}
	return nil
}

func (c Config) validate() error {
	var missing []string
	for name, v := range map[string]string{
		"Dir": c.Dir, "EntraAddr": c.EntraAddr, "ACRAddr": c.ACRAddr, "RegistryURL": c.RegistryURL,
		"TenantID": c.TenantID, "ClientID": c.ClientID, "ClientSecret": c.ClientSecret,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("azemu config: missing %s", strings.Join(missing, ", "))
	}
	for _, addr := range []string{c.EntraAddr, c.ACRAddr} {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			return fmt.Errorf("azemu config: address %q must be host:port with a fixed port", addr)
		}
	}
	return nil
}

// newHandlers loads the keys from cfg.Dir and builds both handlers and their TLS configuration.
func newHandlers(cfg Config, now func() time.Time) (entraH, acrH http.Handler, tlsCfg *tls.Config, err error) {
	p := func(name string) string { return filepath.Join(cfg.Dir, name) }
	cert, err := tls.LoadX509KeyPair(p(FileTLSCert), p(FileTLSKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading server certificate (run PrepareCerts first): %w", err)
	}
	entraKey, err := readRSAKey(p(FileEntraKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading entra signing key: %w", err)
	}
	// Directories prepared before the refresh key existed get one now.
	refreshKey, _, err := loadOrCreateRSAKey(p(FileACRRefreshTokenKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading acr refresh token key: %w", err)
	}
	tokenKey, err := readRSAKey(p(FileRegistryTokenKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading registry token key: %w", err)
	}
	tokenCert, err := readCert(p(FileRegistryTokenCert))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading registry token certificate: %w", err)
	}
	if !publicKeysEqual(tokenCert.PublicKey, tokenKey.Public()) {
		return nil, nil, nil, errors.New("registry token certificate does not match its key")
	}
	upstream, err := url.Parse(cfg.RegistryURL)
	if err != nil || upstream.Host == "" {
		return nil, nil, nil, fmt.Errorf("registry url %q is not a URL", cfg.RegistryURL)
	}
	e := newEntra(cfg, entraKey, now)
	a, err := newACRFront(cfg, e, refreshKey, tokenKey, tokenCert.Raw, upstream, now)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading acr tag attributes: %w", err)
	}
	tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return e.handler(), a.handler(), tlsCfg, nil
}

// CAPool returns a pool holding the CA PrepareCerts wrote into dir, for clients of the emulators.
func CAPool(dir string) (*x509.CertPool, error) {
	ca, err := readCert(filepath.Join(dir, FileCA))
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, nil
}

// statusRecorder remembers the status a handler wrote, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets the reverse proxy stream through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs method, path and status: never the query, headers or bodies, which carry tokens.
func logRequests(logf func(string, ...any), name string, h http.Handler) http.Handler {
	if logf == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		logf("%s: %s %s -> %d (%s)", name, r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Millisecond))
	})
}
