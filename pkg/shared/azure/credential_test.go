package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const (
	testTenant = "00000000-0000-0000-0000-0000000000aa"
	testClient = "00000000-0000-0000-0000-0000000000bb"
	testSecret = "client-secret-value"
)

// entra emulates the parts of Microsoft Entra ID that azidentity's client-credentials flow uses:
// tenant discovery and the v2.0 token endpoint.
type entra struct {
	*httptest.Server
	mu       sync.Mutex
	issued   int
	requests []string // method + path of every request
	scopes   []string // scope of every token request
}

func newEntra(t *testing.T) *entra {
	t.Helper()
	e := &entra{}
	e.Server = httptest.NewTLSServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

func (e *entra) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.requests = append(e.requests, r.Method+" "+r.URL.Path)
	e.mu.Unlock()
	base := e.URL + "/" + testTenant
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/" + testTenant + "/v2.0/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]string{
			"issuer":                 base + "/v2.0",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"token_endpoint":         base + "/oauth2/v2.0/token",
		})
	case "/" + testTenant + "/oauth2/v2.0/token":
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("client_id") != testClient ||
			r.PostForm.Get("client_secret") != testSecret {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`)
			return
		}
		e.mu.Lock()
		e.issued++
		n := e.issued
		e.scopes = append(e.scopes, r.PostForm.Get("scope"))
		e.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{
			"token_type":     "Bearer",
			"expires_in":     3599,
			"ext_expires_in": 3599,
			"access_token":   fmt.Sprintf("eyJ-emulated-token-%d", n),
		})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (e *entra) snapshot() (requests, scopes []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.requests...), append([]string(nil), e.scopes...)
}

func setEnv(t *testing.T, authorityHost, secret string) {
	t.Helper()
	for _, k := range []string{"AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "AZURE_REGIONAL_AUTHORITY_NAME"} {
		t.Setenv(k, "") // restores the original value at cleanup
		os.Unsetenv(k)
	}
	t.Setenv("AZURE_TENANT_ID", testTenant)
	t.Setenv("AZURE_CLIENT_ID", testClient)
	t.Setenv("AZURE_CLIENT_SECRET", secret)
	t.Setenv("AZURE_AUTHORITY_HOST", authorityHost)
}

func TestNewCredentialAgainstEmulatedEntra(t *testing.T) {
	for _, kind := range []string{"environment", "", "default"} {
		t.Run("kind="+kind, func(t *testing.T) {
			e := newEntra(t)
			setEnv(t, e.URL, testSecret)
			cred, err := NewCredential(kind, WithTransport(e.Client()))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{ScopePrometheus}})
			if err != nil {
				t.Fatal(err)
			}
			if tok.Token != "eyJ-emulated-token-1" {
				t.Errorf("token = %q, want the emulator's", tok.Token)
			}
			requests, scopes := e.snapshot()
			// MSAL adds the OpenID scopes after the requested one.
			if len(scopes) != 1 || strings.Fields(scopes[0])[0] != ScopePrometheus {
				t.Errorf("token request scopes = %v, want [%s]", scopes, ScopePrometheus)
			}
			// Instance discovery is off for a non-public authority: the emulator saw only tenant
			// discovery and the token request (a discovery call would have gone to the public cloud
			// and failed through the emulator's client).
			wantDiscovery := "GET /" + testTenant + "/v2.0/.well-known/openid-configuration"
			if len(requests) == 0 || requests[0] != wantDiscovery {
				t.Errorf("requests = %v, want tenant discovery first (AZURE_AUTHORITY_HOST honoured)", requests)
			}
			for _, r := range requests {
				if strings.Contains(r, "discovery/instance") {
					t.Errorf("unexpected instance discovery request: %s", r)
				}
			}
		})
	}
}

func TestBearerTransportWithEmulatedEntra(t *testing.T) {
	e := newEntra(t)
	setEnv(t, e.URL+"/", testSecret)
	cred, err := NewCredential(KindEnvironment, WithTransport(e.Client()))
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	}))
	t.Cleanup(api.Close)
	c := &http.Client{Transport: NewBearerTransport(api.Client().Transport, cred, ScopePrometheus)}
	for range 3 {
		if got := get(t, c, api.URL); got != "Bearer eyJ-emulated-token-1" {
			t.Errorf("Authorization = %q", got)
		}
	}
	if _, scopes := e.snapshot(); len(scopes) != 1 {
		t.Errorf("token requests = %d, want 1 (cached)", len(scopes))
	}
}

func TestBearerTransportWrongSecret(t *testing.T) {
	e := newEntra(t)
	setEnv(t, e.URL, "wrong-secret")
	cred, err := NewCredential(KindEnvironment, WithTransport(e.Client()))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: NewBearerTransport(nil, cred, ScopeACR)}
	_, err = c.Get("https://127.0.0.1:1/v2/")
	if err == nil {
		t.Fatal("want an error")
	}
	var authErr *azidentity.AuthenticationFailedError
	if !errors.As(err, &authErr) {
		t.Errorf("error does not wrap AuthenticationFailedError: %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "getting azure token for scope "+ScopeACR) || !strings.Contains(msg, "AADSTS7000215") {
		t.Errorf("error = %q, want the scope and Entra's reason", msg)
	}
	if strings.Contains(msg, "wrong-secret") {
		t.Errorf("error leaks the client secret: %q", msg)
	}
}

func TestNewCredentialKinds(t *testing.T) {
	tests := []struct {
		name    string
		kind    string
		env     map[string]string
		wantErr string
	}{
		{name: "azure cli", kind: "azure-cli"},
		{name: "managed identity", kind: "managed-identity"},
		{name: "case and spaces", kind: " Environment "},
		{name: "workload identity", kind: "workload-identity", env: map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"}},
		{name: "workload identity without token file", kind: "workload-identity", wantErr: "creating workload-identity azure credential: "},
		{name: "unknown", kind: "browser", wantErr: `unknown azure credential kind "browser" (want one of: default, workload-identity, managed-identity, azure-cli, environment)`},
		{name: "http authority", kind: "environment", env: map[string]string{"AZURE_AUTHORITY_HOST": "http://login.example.com/"}, wantErr: `AZURE_AUTHORITY_HOST must be an https URL, got "http://login.example.com/"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, "", testSecret)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cred, err := NewCredential(tt.kind)
			if tt.wantErr == "" {
				if err != nil || cred == nil {
					t.Fatalf("NewCredential(%q) = %v, %v", tt.kind, cred, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestAuthority(t *testing.T) {
	tests := []struct {
		host            string
		wantAuthority   string
		wantNoDiscovery bool
	}{
		{host: "", wantAuthority: "https://login.microsoftonline.com/"},
		{host: "https://login.microsoftonline.com/", wantAuthority: "https://login.microsoftonline.com/"},
		{host: "https://LOGIN.microsoftonline.com", wantAuthority: "https://LOGIN.microsoftonline.com/"},
		{host: "https://login.microsoftonline.us/", wantAuthority: "https://login.microsoftonline.us/", wantNoDiscovery: true},
		{host: "https://127.0.0.1:8443", wantAuthority: "https://127.0.0.1:8443/", wantNoDiscovery: true},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cfg, noDiscovery, err := authority(tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ActiveDirectoryAuthorityHost != tt.wantAuthority || noDiscovery != tt.wantNoDiscovery {
				t.Errorf("authority(%q) = %q, %v; want %q, %v", tt.host, cfg.ActiveDirectoryAuthorityHost, noDiscovery, tt.wantAuthority, tt.wantNoDiscovery)
			}
		})
	}
}
