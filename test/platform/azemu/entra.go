package azemu

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"
)

// Entra ID constants the emulator follows.
const (
	// entraTokenLifetime is the lifetime of the access tokens Entra ID issues for app-only flows.
	entraTokenLifetime = time.Hour
	// federatedAudience is the audience a workload identity federation assertion must carry.
	federatedAudience = "api://AzureADTokenExchange"
	// assertionType is the client_assertion_type of JWT client assertions.
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// entraResources maps the resources the emulated tenant knows to the audience of their tokens:
// the scope `<resource>/.default` yields a token whose aud is the resource's identifier URI.
var entraResources = map[string]string{
	"https://containerregistry.azure.net":  "https://containerregistry.azure.net",
	"https://management.azure.com":         "https://management.azure.com/",
	"https://management.core.windows.net":  "https://management.core.windows.net/",
	"https://prometheus.monitor.azure.com": "https://prometheus.monitor.azure.com",
	"https://api.loganalytics.io":          "https://api.loganalytics.io",
	"https://monitor.azure.com":            "https://monitor.azure.com",
	"https://vault.azure.net":              "https://vault.azure.net",
	"https://graph.microsoft.com":          "https://graph.microsoft.com",
}

// entra emulates the Entra ID endpoints a confidential client uses: OpenID discovery, the signing
// keys and the v2.0 token endpoint with the client credentials grant.
type entra struct {
	cfg  Config
	key  *rsa.PrivateKey
	kid  string
	now  func() time.Time
	base string // https://<EntraAddr>
}

func newEntra(cfg Config, key *rsa.PrivateKey, now func() time.Time) *entra {
	return &entra{cfg: cfg, key: key, kid: entraKeyID(&key.PublicKey), now: now, base: "https://" + cfg.EntraAddr}
}

// issuerV2 is the issuer in the v2.0 discovery document; MSAL requires its host to be the authority's.
func (e *entra) issuerV2() string { return e.base + "/" + e.cfg.TenantID + "/v2.0" }

// issuerV1 is the iss of the v1.0 access tokens Entra ID issues for Azure resources
// (https://sts.windows.net/<tenant>/ in the public cloud).
func (e *entra) issuerV1() string { return e.base + "/" + e.cfg.TenantID + "/" }

// servicePrincipalOID is the object id of the client's service principal, stable for a client id.
func servicePrincipalOID(clientID string) string {
	sum := sha256.Sum256([]byte("service-principal:" + clientID))
	return uuidFrom(sum[:16])
}

func (e *entra) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.discovery)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.keys)
	mux.HandleFunc("GET /{tenant}/discovery/keys", e.keys)
	mux.HandleFunc("GET /discovery/keys", e.keys)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.token)
	mux.HandleFunc("/{tenant}/oauth2/v2.0/authorize", e.authorize)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e.fail(w, http.StatusNotFound, "invalid_request", 900561, fmt.Sprintf("The endpoint %s %s does not exist in the emulated tenant.", r.Method, r.URL.Path))
	})
	return mux
}

// knownTenant reports whether a tenant path segment names the emulated tenant; the multi-tenant
// aliases are accepted where Entra accepts them (keys, discovery), never for app-only tokens.
func (e *entra) knownTenant(t string, aliases bool) bool {
	if strings.EqualFold(t, e.cfg.TenantID) {
		return true
	}
	return aliases && (t == "common" || t == "organizations")
}

func (e *entra) unknownTenant(w http.ResponseWriter, tenant string) {
	e.fail(w, http.StatusBadRequest, "invalid_request", 90002,
		fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
}

func (e *entra) discovery(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !e.knownTenant(tenant, false) {
		e.unknownTenant(w, tenant)
		return
	}
	t := e.base + "/" + e.cfg.TenantID
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        t + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              t + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                e.issuerV2(),
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     e.base + "/oidc/userinfo",
		"authorization_endpoint":                t + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         t + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  t + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid"},
		"kerberos_endpoint":                     t + "/kerberos",
		"tenant_region_scope":                   nil,
		"cloud_instance_name":                   "local",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	})
}

func (e *entra) keys(w http.ResponseWriter, r *http.Request) {
	if tenant := r.PathValue("tenant"); tenant != "" && !e.knownTenant(tenant, true) {
		e.unknownTenant(w, tenant)
		return
	}
	pub := e.key.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{
		"keys": []map[string]any{{
			"kty":    "RSA",
			"use":    "sig",
			"alg":    "RS256",
			"kid":    e.kid,
			"x5t":    e.kid,
			"n":      b64.EncodeToString(pub.N.Bytes()),
			"e":      b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
			"issuer": e.issuerV2(),
		}},
	})
}

func (e *entra) authorize(w http.ResponseWriter, r *http.Request) {
	e.fail(w, http.StatusBadRequest, "unsupported_response_type", 900144,
		"Interactive sign-in is not available in the emulated tenant; use the client credentials grant.")
}

// token implements the client credentials grant of POST /{tenant}/oauth2/v2.0/token, checking
// the request in the order Entra ID does and answering its errors (status, error, AADSTS code).
func (e *entra) token(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !e.knownTenant(tenant, false) {
		e.unknownTenant(w, tenant)
		return
	}
	if err := r.ParseForm(); err != nil {
		e.fail(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	clientID, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	grant := r.PostForm.Get("grant_type")
	switch {
	case grant == "":
		e.fail(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	case grant != "client_credentials":
		e.fail(w, http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", grant))
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		e.fail(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
		return
	}
	if clientID == "" {
		e.fail(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	if !strings.EqualFold(clientID, e.cfg.ClientID) {
		e.fail(w, http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, e.cfg.TenantID))
		return
	}
	acr := "1" // client authenticated with a secret
	assertion, aType := r.PostForm.Get("client_assertion"), r.PostForm.Get("client_assertion_type")
	switch {
	case secret != "":
		if subtle.ConstantTimeCompare([]byte(secret), []byte(e.cfg.ClientSecret)) != 1 {
			e.fail(w, http.StatusUnauthorized, "invalid_client", 7000215,
				fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", e.cfg.ClientID))
			return
		}
	case assertion != "":
		if aType != assertionType {
			e.fail(w, http.StatusBadRequest, "invalid_request", 90048, "The client_assertion_type is not supported.")
			return
		}
		if msg := e.checkFederatedAssertion(assertion); msg != "" {
			e.fail(w, http.StatusUnauthorized, "invalid_client", 700211, msg)
			return
		}
		acr = "2"
	default:
		e.fail(w, http.StatusUnauthorized, "invalid_client", 7000216,
			"'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.")
		return
	}
	aud, status, code, errNum, msg := resourceAudience(scope, e.cfg.TenantID)
	if status != 0 {
		e.fail(w, status, code, errNum, msg)
		return
	}
	now := e.now()
	oid := servicePrincipalOID(e.cfg.ClientID)
	claims := map[string]any{
		"aud":      aud,
		"iss":      e.issuerV1(),
		"iat":      now.Unix(),
		"nbf":      now.Unix(),
		"exp":      now.Add(entraTokenLifetime).Unix(),
		"aio":      randomID(),
		"appid":    e.cfg.ClientID,
		"appidacr": acr,
		"idp":      e.issuerV1(),
		"idtyp":    "app",
		"oid":      oid,
		"rh":       randomID(),
		"sub":      oid,
		"tid":      e.cfg.TenantID,
		"uti":      randomID(),
		"ver":      "1.0",
	}
	tok, err := signJWT(e.key, jwtHeader{Kid: e.kid, X5t: e.kid}, claims)
	if err != nil {
		e.fail(w, http.StatusInternalServerError, "server_error", 50000, "There was an error issuing a token.")
		return
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     int(entraTokenLifetime.Seconds()),
		"ext_expires_in": int(entraTokenLifetime.Seconds()),
		"access_token":   tok,
	})
}

// checkFederatedAssertion checks the claims of a workload identity federation assertion (a service
// account token projected for api://AzureADTokenExchange). The emulated tenant has no federated
// credential whose issuer keys it could fetch, so the signature is not checked; audience, expiry,
// issuer and subject are. It returns the refusal message, or "" when the assertion is accepted.
func (e *entra) checkFederatedAssertion(assertion string) string {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "Client assertion is not within its valid time range or is malformed."
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return "Client assertion is malformed."
	}
	var c struct {
		Aud audience `json:"aud"`
		Iss string   `json:"iss"`
		Sub string   `json:"sub"`
		Exp int64    `json:"exp"`
		Nbf int64    `json:"nbf"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "Client assertion is malformed."
	}
	if err := checkTimes(e.now(), c.Exp, c.Nbf); err != nil {
		return "Client assertion is not within its valid time range."
	}
	if c.Iss == "" || c.Sub == "" || !containsString(c.Aud, federatedAudience) {
		return "No matching federated identity record found for presented assertion. Assertion audience must be '" + federatedAudience + "'."
	}
	return ""
}

// resourceAudience maps the scope of a client credentials request (`<resource>/.default`, next to
// OpenID scopes that are ignored) to the token audience, or returns Entra's error for it.
func resourceAudience(scope, tenant string) (aud string, status int, code string, errNum int, msg string) {
	var resource string
	for _, s := range strings.Fields(scope) {
		switch s {
		case "openid", "offline_access", "profile", "email":
			continue
		}
		if resource != "" {
			return "", http.StatusBadRequest, "invalid_scope", 70011, fmt.Sprintf("The provided request must include a single resource; got '%s'.", scope)
		}
		r, ok := strings.CutSuffix(s, "/.default")
		if !ok {
			return "", http.StatusBadRequest, "invalid_scope", 1002012,
				fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", s)
		}
		resource = strings.TrimSuffix(r, "/")
	}
	if resource == "" {
		return "", http.StatusBadRequest, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid."
	}
	aud, ok := entraResources[strings.ToLower(resource)]
	if !ok {
		return "", http.StatusBadRequest, "invalid_resource", 500011,
			fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", resource, tenant)
	}
	return aud, 0, "", 0, ""
}

// fail writes an Entra ID (AADSTS) error response.
func (e *entra) fail(w http.ResponseWriter, status int, code string, aadsts int, msg string) {
	trace, corr := newUUID(), newUUID()
	ts := e.now().UTC().Format("2006-01-02 15:04:05Z")
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", aadsts, msg, trace, corr, ts),
		"error_codes":       []int{aadsts},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         fmt.Sprintf("%s/error?code=%d", e.base, aadsts),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return uuidFrom(b)
}

func uuidFrom(b []byte) string {
	u := make([]byte, 16)
	copy(u, b)
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	h := hex.EncodeToString(u)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
