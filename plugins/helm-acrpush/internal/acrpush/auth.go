package acrpush

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
)

// NullGUID is the user name that tells ACR the password is an ACR refresh token.
const NullGUID = "00000000-0000-0000-0000-000000000000"

// Sign-in steps named in SignInError.
const (
	StepEntraToken = "Entra ID token"
	StepExchange   = "ACR token exchange"
	StepRegistry   = "registry"
)

// SignInError says which step of signing in to a registry failed and what to check.
type SignInError struct {
	Registry string
	Step     string
	Err      error
	Hint     string
}

// Error says the registry, the step, the cause and what to check, on one line.
func (e *SignInError) Error() string {
	msg := fmt.Sprintf("signing in to %s failed at the %s step: %v", e.Registry, e.Step, e.Err)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap returns the cause.
func (e *SignInError) Unwrap() error { return e.Err }

// EntraAuth signs in to an Azure Container Registry with Entra ID: it gets an Entra access token
// from Credential, exchanges it at https://<registry>/oauth2/exchange for an ACR refresh token, and
// hands go-containerregistry that refresh token (user NullGUID) so that it fetches repository-scoped
// access tokens from /oauth2/token itself. Tokens live in memory only and are never logged.
type EntraAuth struct {
	// Registry is the login server.
	Registry string
	// Credential issues Entra ID tokens.
	Credential azcore.TokenCredential
	// Scopes are tried in order until the registry accepts a token: the ACR audience
	// (https://containerregistry.azure.net/.default) first, the ARM audience as the fallback for
	// registries and clouds that only accept it.
	Scopes []string
	// Tenant is sent with the exchange; empty means the tid claim of the Entra token.
	Tenant string
	// Client sends the exchange request (Push fills in its retrying, logging client when nil).
	Client *http.Client
	// PlainHTTP exchanges over http (local test registries only).
	PlainHTTP bool
	// Log receives one line per step (never a token).
	Log io.Writer

	mu      sync.Mutex
	refresh string
	expires time.Time
}

// Authorization implements authn.Authenticator.
func (a *EntraAuth) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

// AuthorizationContext implements authn.ContextAuthenticator.
func (a *EntraAuth) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	tok, err := a.RefreshToken(ctx)
	if err != nil {
		return nil, err
	}
	return &authn.AuthConfig{Username: NullGUID, Password: tok, IdentityToken: tok}, nil
}

// RefreshToken returns a cached ACR refresh token, signing in when there is none or it expires
// within five minutes.
func (a *EntraAuth) RefreshToken(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refresh != "" && time.Until(a.expires) > 5*time.Minute {
		return a.refresh, nil
	}
	if a.Credential == nil {
		return "", &SignInError{Registry: a.Registry, Step: StepEntraToken, Err: errors.New("no Azure credential"), Hint: "set AZURE_CLIENT_ID/AZURE_TENANT_ID with a secret or federated token, use a managed identity, or run 'az login'"}
	}
	var firstErr error
	for i, scope := range a.Scopes {
		tok, err := a.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		a.logf("Entra ID token for %s: %s", scope, errText(err, "ok"))
		if err != nil {
			if firstErr == nil {
				firstErr = &SignInError{Registry: a.Registry, Step: StepEntraToken, Err: fmt.Errorf("requesting a token for %s: %s", scope, entraMessage(err)),
					Hint: "check AZURE_TENANT_ID, AZURE_CLIENT_ID and the client secret or federated token (or the managed identity / 'az login'), and AZURE_AUTHORITY_HOST"}
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		refresh, err := a.exchange(ctx, tok.Token)
		a.logf("POST /oauth2/exchange at %s with the %s token: %s", a.Registry, scope, errText(err, "refresh token received"))
		if err == nil {
			a.refresh = refresh
			a.expires = jwtExpiry(refresh, time.Now().Add(time.Hour))
			return refresh, nil
		}
		if firstErr == nil {
			firstErr = err
		} else if i > 0 && refused(err) {
			var se *SignInError
			if errors.As(firstErr, &se) && se.Step == StepExchange {
				se.Hint += "; the fallback ARM-audience token was refused too (check the registry's authentication-as-arm setting)"
			}
		}
		if !refused(err) {
			break
		}
	}
	return "", firstErr
}

func (a *EntraAuth) logf(format string, args ...any) {
	if a.Log != nil {
		fmt.Fprintf(a.Log, format+"\n", args...)
	}
}

func errText(err error, ok string) string {
	if err != nil {
		return oneLine(err.Error())
	}
	return ok
}

// refused reports whether the registry answered the exchange with 401/403, the case where the
// ARM-audience fallback may help.
func refused(err error) bool {
	var he *httpStatusError
	return errors.As(err, &he) && (he.code == http.StatusUnauthorized || he.code == http.StatusForbidden)
}

type httpStatusError struct {
	code int
	msg  string
}

func (e *httpStatusError) Error() string { return e.msg }

func (a *EntraAuth) exchange(ctx context.Context, accessToken string) (string, error) {
	scheme := "https"
	if a.PlainHTTP {
		scheme = "http"
	}
	endpoint := scheme + "://" + a.Registry + "/oauth2/exchange"
	form := url.Values{
		"grant_type":   {"access_token"},
		"service":      {a.Registry},
		"access_token": {accessToken},
	}
	tenant := a.Tenant
	if tenant == "" {
		tenant = jwtClaim(accessToken, "tid")
	}
	if tenant != "" {
		form.Set("tenant", tenant)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", &SignInError{Registry: a.Registry, Step: StepExchange, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", &SignInError{Registry: a.Registry, Step: StepExchange, Err: fmt.Errorf("POST %s: %w", endpoint, unwrapURLError(err)),
			Hint: "the registry is unreachable: check the login server name, DNS, proxy settings and the registry firewall / private endpoint"}
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("POST %s: %s%s", endpoint, resp.Status, registryMessage(body))
		hint := "check that the identity has the AcrPush role on the registry (Container Registry Repository Writer on ABAC-enabled registries)"
		switch resp.StatusCode {
		case http.StatusForbidden:
			hint = "check the identity's role assignment and the registry's network rules (firewall, public access, private endpoint)"
		case http.StatusNotFound:
			hint = "the registry does not offer the Entra ID token exchange; use --auth docker or --auth anonymous for registries that are not ACR"
		}
		return "", &SignInError{Registry: a.Registry, Step: StepExchange, Err: &httpStatusError{code: resp.StatusCode, msg: msg}, Hint: hint}
	}
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.RefreshToken == "" {
		return "", &SignInError{Registry: a.Registry, Step: StepExchange, Err: fmt.Errorf("POST %s: response has no refresh_token", endpoint)}
	}
	return out.RefreshToken, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// registryMessage extracts the first error message of an OCI/ACR error body, never the body itself.
func registryMessage(body []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	switch {
	case len(e.Errors) > 0:
		return ": " + strings.TrimSpace(e.Errors[0].Code+" "+e.Errors[0].Message)
	case e.Error != "":
		return ": " + oneLine(strings.TrimSpace(e.Error+" "+e.ErrorDescription))
	}
	return ""
}

// entraMessage shortens an azidentity error (several lines, with the raw response) to one line:
// the first line plus Entra's error code and description when Entra answered with one, else
// every line condensed (a credential chain names each credential it tried and why it failed).
func entraMessage(err error) string {
	msg := err.Error()
	i := strings.Index(msg, `"error_description"`)
	j := strings.LastIndex(msg[:max(i, 0)], "{")
	k := strings.Index(msg[max(i, 0):], "}")
	var d struct {
		E string `json:"error"`
		D string `json:"error_description"`
	}
	if i < 0 || j < 0 || k < 0 || json.Unmarshal([]byte(msg[j:i+k+1]), &d) != nil {
		return azure.Condense(msg)
	}
	first, _, _ := strings.Cut(msg, "\n")
	first = strings.TrimSuffix(strings.TrimSpace(first), ".")
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.RawResponse != nil {
		first = fmt.Sprintf("%s (HTTP %d)", first, re.StatusCode)
	}
	desc, _, _ := strings.Cut(d.D, "\n")
	desc, _, _ = strings.Cut(desc, "Trace ID:")
	return oneLine(first + ": " + strings.TrimSpace(d.E+" "+strings.TrimSpace(desc)))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func jwtClaims(tok string) map[string]any {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func jwtClaim(tok, claim string) string {
	s, _ := jwtClaims(tok)[claim].(string)
	return s
}

func jwtExpiry(tok string, def time.Time) time.Time {
	if exp, ok := jwtClaims(tok)["exp"].(float64); ok {
		return time.Unix(int64(exp), 0)
	}
	return def
}

// targetKeychain resolves the target registry to its authenticator and everything else through
// the source keychain.
type targetKeychain struct {
	registry string
	auth     authn.Authenticator
	next     authn.Keychain
}

func (k *targetKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k *targetKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	if k.auth != nil && r.RegistryStr() == k.registry {
		return k.auth, nil
	}
	return authn.Resolve(ctx, k.next, r)
}

// ConfigKeychain reads Docker-style credentials (auths.<host>.auth, username/password,
// identitytoken) from a registry config file such as Helm's HELM_REGISTRY_CONFIG. A missing file
// resolves everything anonymously.
type ConfigKeychain struct {
	// Path is the config.json to read.
	Path string
}

// Resolve implements authn.Keychain.
func (k ConfigKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	data, err := os.ReadFile(k.Path)
	if errors.Is(err, os.ErrNotExist) || k.Path == "" {
		return authn.Anonymous, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading registry config %q: %w", k.Path, err)
	}
	var cfg struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("parsing registry config %q: %w", k.Path, err)
	}
	host := r.RegistryStr()
	for key, ac := range cfg.Auths {
		k := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://"), "/v1/")
		k = strings.TrimSuffix(k, "/")
		if k == host || (host == name.DefaultRegistry && (k == "docker.io" || k == "index.docker.io")) {
			if ac == (authn.AuthConfig{}) {
				return authn.Anonymous, nil
			}
			return authn.FromConfig(ac), nil
		}
	}
	return authn.Anonymous, nil
}

// DefaultHelmRegistryConfig returns Helm's default registry config path
// ($XDG_CONFIG_HOME/helm/registry/config.json, or the macOS / Windows equivalent).
func DefaultHelmRegistryConfig() string {
	if d := os.Getenv("HELM_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "registry", "config.json")
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "helm", "registry", "config.json")
}
