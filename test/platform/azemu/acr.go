package azemu

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// ACR constants the emulator follows.
const (
	// NullGUIDUser is the user name that tells ACR the password is an ACR refresh token.
	NullGUIDUser = "00000000-0000-0000-0000-000000000000"
	// acrRefreshLifetime is how long `az acr login` refresh tokens live.
	acrRefreshLifetime = 3 * time.Hour
	// acrAccessLifetime is the lifetime of the registry access tokens.
	acrAccessLifetime = time.Hour
	// acrAuthRequired is ACR's message when credentials are missing or refused.
	acrAuthRequired = "authentication required, visit https://aka.ms/acr/authorization for more information."
)

// acrAudiences are the Entra token audiences ACR accepts on /oauth2/exchange by default:
// its own and, while "authentication-as-arm" is enabled (the default), ARM's.
var acrAudiences = []string{
	"https://containerregistry.azure.net",
	"https://containerregistry.azure.net/",
	"https://management.azure.com/",
	"https://management.azure.com",
	"https://management.core.windows.net/",
	"https://management.core.windows.net",
}

// acrActions are the actions the service principal is granted (AcrPush and AcrDelete, catalog listing).
var acrActions = map[string]bool{"pull": true, "push": true, "delete": true, "metadata_read": true, "metadata_write": true, "*": true}

// acrFront is the ACR login server: the token service, the tag attributes API and a reverse proxy
// to the real registry.
type acrFront struct {
	cfg         Config
	loginServer string
	now         func() time.Time
	entra       *entra
	refreshKey  *rsa.PrivateKey
	refreshKid  string
	tokenKey    *rsa.PrivateKey
	tokenKid    string
	tokenX5C    []string
	upstream    *url.URL
	client      *http.Client // the front's own requests to the registry (tag lookups)
	tags        *tagStore
	proxy       *httputil.ReverseProxy
}

// entraClaims are the claims of an Entra access token that ACR looks at.
type entraClaims struct {
	Aud   audience `json:"aud"`
	Iss   string   `json:"iss"`
	Tid   string   `json:"tid"`
	Oid   string   `json:"oid"`
	Appid string   `json:"appid"`
	Exp   int64    `json:"exp"`
	Nbf   int64    `json:"nbf"`
}

// registryClaims are the claims ACR's refresh and access tokens share.
type registryClaims struct {
	Jti       string   `json:"jti"`
	Sub       string   `json:"sub"`
	Nbf       int64    `json:"nbf"`
	Exp       int64    `json:"exp"`
	Iat       int64    `json:"iat"`
	Iss       string   `json:"iss"`
	Aud       audience `json:"aud"`
	Version   string   `json:"version"`
	GrantType string   `json:"grant_type"`
	Tenant    string   `json:"tenant"`
}

// newRegistryClaims are the shared claims of a token this front issues now for sub, living ttl.
func (a *acrFront) newRegistryClaims(sub, tenant, version string, ttl time.Duration) registryClaims {
	now := a.now()
	return registryClaims{
		Jti: newUUID(), Sub: sub, Nbf: now.Unix(), Exp: now.Add(ttl).Unix(), Iat: now.Unix(), Iss: RegistryIssuer,
		Aud: audience{a.loginServer}, Version: version, GrantType: "refresh_token", Tenant: tenant,
	}
}

// refreshClaims are the claims of an ACR refresh token.
type refreshClaims struct {
	registryClaims
	Appid       string         `json:"appid,omitempty"`
	Permissions map[string]any `json:"permissions"`
}

// accessClaims are the claims of a registry access token.
type accessClaims struct {
	registryClaims
	Appid  string        `json:"appid"`
	Access []accessEntry `json:"access"`
	Roles  []string      `json:"roles"`
}

// allows reports whether the token grants action (or "*") on repository repo.
func (c *accessClaims) allows(repo, action string) bool {
	for _, e := range c.Access {
		if e.Type == "repository" && e.Name == repo && (containsString(e.Actions, action) || containsString(e.Actions, "*")) {
			return true
		}
	}
	return false
}

// accessEntry is one element of the access claim the distribution registry checks.
type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// newACRFront builds the login server in front of upstream, with the tag attributes kept in
// cfg.Dir (FileACRTagAttributes) when it is set.
func newACRFront(cfg Config, e *entra, refreshKey, tokenKey *rsa.PrivateKey, tokenCertDER []byte, upstream *url.URL, now func() time.Time) (*acrFront, error) {
	var tagFile string
	if cfg.Dir != "" {
		tagFile = filepath.Join(cfg.Dir, FileACRTagAttributes)
	}
	tags, err := newTagStore(tagFile, now)
	if err != nil {
		return nil, err
	}
	transport := upstreamTransport()
	a := &acrFront{
		cfg:         cfg,
		loginServer: cfg.ACRAddr,
		now:         now,
		entra:       e,
		refreshKey:  refreshKey,
		refreshKid:  jwkThumbprint(&refreshKey.PublicKey),
		tokenKey:    tokenKey,
		tokenKid:    jwkThumbprint(&tokenKey.PublicKey),
		tokenX5C:    []string{base64.StdEncoding.EncodeToString(tokenCertDER)},
		upstream:    upstream,
		client:      &http.Client{Transport: transport, Timeout: 30 * time.Second},
		tags:        tags,
	}
	a.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			// The registry builds upload Locations from Host and X-Forwarded-*: keep the login server.
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", rewriteLocation(loc, upstream, a.loginServer))
			}
			if err := a.tags.observe(resp); err != nil {
				a.logf("acr: %v", err)
			}
			return nil
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      log.New(logfWriter(cfg.Logf), "acr proxy: ", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			a.logf("acr: proxying %s %s: %v", r.Method, r.URL.Path, err)
			writeACRError(w, http.StatusBadGateway, "UNAVAILABLE", "the registry backend is unavailable")
		},
	}
	return a, nil
}

func (a *acrFront) logf(format string, args ...any) {
	if a.cfg.Logf != nil {
		a.cfg.Logf(format, args...)
	}
}

func (a *acrFront) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/exchange", a.exchange)
	mux.HandleFunc("GET /oauth2/token", a.token)
	mux.HandleFunc("POST /oauth2/token", a.token)
	mux.HandleFunc("/oauth2/", func(w http.ResponseWriter, r *http.Request) {
		writeACRError(w, http.StatusNotFound, "NOT_FOUND", "the requested resource was not found")
	})
	mux.HandleFunc("/acr/v1/", a.meta)
	mux.HandleFunc("/", a.registry)
	return mux
}

// challenge is the WWW-Authenticate value ACR answers unauthenticated registry requests with.
func (a *acrFront) challenge() string {
	return fmt.Sprintf("Bearer realm=%q,service=%q", "https://"+a.loginServer+"/oauth2/token", a.loginServer)
}

// registry answers the unauthenticated ping itself, the way ACR does, refuses manifest writes and
// deletes that a tag lock forbids, and proxies the rest: the registry behind it verifies the bearer
// tokens this front issued and challenges with the same realm.
func (a *acrFront) registry(w http.ResponseWriter, r *http.Request) {
	if (r.URL.Path == "/v2/" || r.URL.Path == "/v2") && r.Header.Get("Authorization") == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("WWW-Authenticate", a.challenge())
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
		return
	}
	if a.tags.refuses(r) && a.mayWrite(r) {
		writeDisallowed(w)
		return
	}
	a.proxy.ServeHTTP(w, r)
}

// mayWrite reports whether r's bearer token is valid and grants the write it asks for (push for a
// PUT, delete for a DELETE): ACR checks credentials before a lock, so a request that fails them
// goes on to the registry and its 401.
func (a *acrFront) mayWrite(r *http.Request) bool {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	c, err := a.verifyAccessToken(raw)
	if err != nil {
		return false
	}
	repo, _, _ := manifestPath(r.URL.Path)
	action := "push"
	if r.Method == http.MethodDelete {
		action = "delete"
	}
	return c.allows(repo, action)
}

// exchange implements POST /oauth2/exchange: an Entra access token for an ACR refresh token.
func (a *acrFront) exchange(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "the request body could not be parsed")
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "access_token":
	case "":
		writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "grant_type is required")
		return
	case "access_token_refresh_token", "refresh_token":
		writeACRError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("grant_type %q (an Entra ID refresh token) is not supported: use grant_type=access_token", grant))
		return
	default:
		writeACRError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("grant_type %q is not supported", grant))
		return
	}
	service, raw := r.PostForm.Get("service"), r.PostForm.Get("access_token")
	if service == "" || raw == "" {
		writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "service and access_token are required")
		return
	}
	if !strings.EqualFold(service, a.loginServer) {
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", fmt.Sprintf("service %q is not this registry (%s)", service, a.loginServer))
		return
	}
	claims, err := a.verifyEntraToken(raw, r.PostForm.Get("tenant"))
	if err != nil {
		a.logf("acr: exchange refused: %v", err)
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", "the access token is not valid: "+err.Error())
		return
	}
	rt := refreshClaims{
		registryClaims: a.newRegistryClaims(claims.Oid, claims.Tid, "1.0", acrRefreshLifetime),
		Appid:          claims.Appid,
		Permissions:    map[string]any{"actions": []string{"read", "write", "delete"}, "notActions": []string{}},
	}
	tok, err := signJWT(a.refreshKey, jwtHeader{Kid: a.refreshKid}, rt)
	if err != nil {
		writeACRError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "could not issue a refresh token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"refresh_token": tok})
}

// verifyEntraToken checks an Entra access token as ACR does: signature with the tenant's key,
// lifetime, issuer, tenant and an audience ACR accepts.
func (a *acrFront) verifyEntraToken(raw, tenant string) (*entraClaims, error) {
	var c entraClaims
	if err := verifyJWT(raw, &a.entra.key.PublicKey, &c); err != nil {
		return nil, err
	}
	if err := checkTimes(a.now(), c.Exp, c.Nbf); err != nil {
		return nil, err
	}
	if c.Iss != a.entra.issuerV1() && c.Iss != a.entra.issuerV2() {
		return nil, fmt.Errorf("issuer %q is not trusted", c.Iss)
	}
	if !strings.EqualFold(c.Tid, a.cfg.TenantID) {
		return nil, fmt.Errorf("tenant %q is not the registry's tenant", c.Tid)
	}
	if tenant != "" && !strings.EqualFold(tenant, c.Tid) {
		return nil, fmt.Errorf("token tenant does not match tenant %q", tenant)
	}
	ok := false
	for _, aud := range c.Aud {
		ok = ok || containsString(acrAudiences, aud)
	}
	if !ok {
		return nil, fmt.Errorf("audience %q is not accepted: request a token for https://containerregistry.azure.net/.default", strings.Join(c.Aud, ","))
	}
	return &c, nil
}

// token implements /oauth2/token: an ACR refresh token (form grant refresh_token, form grant
// password, or Basic auth with the null GUID user) for a registry access token with the scopes asked.
func (a *acrFront) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "the request body could not be parsed")
		return
	}
	var refresh string
	if user, pass, ok := r.BasicAuth(); ok {
		if user != NullGUIDUser {
			writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
			return
		}
		refresh = pass
	} else if r.Method == http.MethodPost {
		switch grant := r.PostForm.Get("grant_type"); grant {
		case "refresh_token":
			refresh = r.PostForm.Get("refresh_token")
		case "password":
			if r.PostForm.Get("username") != NullGUIDUser {
				writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
				return
			}
			refresh = r.PostForm.Get("password")
		case "":
			writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "grant_type is required")
			return
		default:
			writeACRError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("grant_type %q is not supported", grant))
			return
		}
	}
	if refresh == "" {
		// Anonymous pull is disabled, as on a new registry.
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", acrAuthRequired)
		return
	}
	service := r.Form.Get("service")
	if service == "" {
		writeACRError(w, http.StatusBadRequest, "BAD_REQUEST", "service is required")
		return
	}
	if !strings.EqualFold(service, a.loginServer) {
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", fmt.Sprintf("service %q is not this registry (%s)", service, a.loginServer))
		return
	}
	rc, err := a.verifyRefreshToken(refresh)
	if err != nil {
		a.logf("acr: token refused: %v", err)
		writeACRError(w, http.StatusUnauthorized, "UNAUTHORIZED", "the refresh token is not valid: "+err.Error())
		return
	}
	tok, err := a.issueAccessToken(rc.Sub, rc.Tenant, rc.Appid, parseScopes(r.Form["scope"]))
	if err != nil {
		writeACRError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "could not issue an access token")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"access_token": tok, "token": tok})
}

// issueAccessToken signs a registry access token for the principal (sub, tenant, appid) granting
// access: what token answers, and what the front itself uses to look tags up in the registry.
func (a *acrFront) issueAccessToken(sub, tenant, appid string, access []accessEntry) (string, error) {
	return signJWT(a.tokenKey, jwtHeader{Kid: a.tokenKid, X5c: a.tokenX5C}, accessClaims{
		registryClaims: a.newRegistryClaims(sub, tenant, "3.0", acrAccessLifetime),
		Appid:          appid,
		Access:         access,
		Roles:          []string{},
	})
}

// verifyAccessToken checks a registry access token the way the registry does: signature with the
// token key, issuer, audience and lifetime.
func (a *acrFront) verifyAccessToken(raw string) (*accessClaims, error) {
	var c accessClaims
	if err := verifyJWT(raw, &a.tokenKey.PublicKey, &c); err != nil {
		return nil, err
	}
	if err := checkTimes(a.now(), c.Exp, c.Nbf); err != nil {
		return nil, err
	}
	if c.Iss != RegistryIssuer {
		return nil, errors.New("not an ACR access token")
	}
	if !containsString(c.Aud, a.loginServer) {
		return nil, fmt.Errorf("audience %q is not this registry", strings.Join(c.Aud, ","))
	}
	return &c, nil
}

// verifyRefreshToken checks an ACR refresh token issued by exchange.
func (a *acrFront) verifyRefreshToken(raw string) (*refreshClaims, error) {
	var c refreshClaims
	if err := verifyJWT(raw, &a.refreshKey.PublicKey, &c); err != nil {
		return nil, err
	}
	if err := checkTimes(a.now(), c.Exp, c.Nbf); err != nil {
		return nil, err
	}
	if c.Iss != RegistryIssuer || c.GrantType != "refresh_token" {
		return nil, errors.New("not an ACR refresh token")
	}
	if !containsString(c.Aud, a.loginServer) {
		return nil, fmt.Errorf("audience %q is not this registry", strings.Join(c.Aud, ","))
	}
	return &c, nil
}

// parseScopes turns Docker token scopes ("repository:team/app:pull,push", space-separated or
// repeated) into the access claim, keeping the actions the principal holds.
func parseScopes(scopes []string) []accessEntry {
	access := []accessEntry{}
	index := map[string]int{}
	for _, field := range scopes {
		for _, s := range strings.Fields(field) {
			typ, rest, ok := strings.Cut(s, ":")
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, ":")
			if i <= 0 {
				continue
			}
			name, actions := rest[:i], rest[i+1:]
			if typ == "artifact-repository" {
				typ = "repository"
			}
			if typ != "repository" && typ != "registry" {
				continue
			}
			key := typ + ":" + name
			j, seen := index[key]
			if !seen {
				j = len(access)
				index[key] = j
				access = append(access, accessEntry{Type: typ, Name: name, Actions: []string{}})
			}
			for _, act := range strings.Split(actions, ",") {
				if acrActions[act] && !containsString(access[j].Actions, act) {
					access[j].Actions = append(access[j].Actions, act)
				}
			}
		}
	}
	return access
}

// rewriteLocation points a Location the registry wrote for its own address at the login server.
func rewriteLocation(loc string, upstream *url.URL, loginServer string) string {
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() {
		return loc
	}
	if strings.EqualFold(u.Host, upstream.Host) || strings.EqualFold(u.Host, loginServer) {
		u.Scheme, u.Host = "https", loginServer
	}
	return u.String()
}

// writeACRError writes the OCI distribution error body ACR answers with.
func writeACRError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Ms-Correlation-Request-Id", newUUID())
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "message": msg}}})
}

// logfWriter adapts Config.Logf to an io.Writer for the standard logger.
type logfWriter func(format string, args ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	if f != nil {
		f("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
