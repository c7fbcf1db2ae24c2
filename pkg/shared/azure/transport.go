package azure

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// refreshBefore is how long before expiry a cached token is replaced.
const refreshBefore = 5 * time.Minute

// bearerTransport adds "Authorization: Bearer <token>" to each request, caching the token.
type bearerTransport struct {
	base   http.RoundTripper
	cred   azcore.TokenCredential
	scopes []string
	now    func() time.Time

	mu    sync.Mutex
	token azcore.AccessToken
}

// NewBearerTransport returns a round tripper that sends each request through base (nil means
// http.DefaultTransport) with an Entra bearer token for scopes. The token is cached until five
// minutes before it expires and refreshed under a lock, so concurrent requests share one refresh.
// Requests are cloned, never modified. Plain-http requests to other machines are refused, so a
// token never travels unencrypted; loopback addresses are allowed for local testing.
func NewBearerTransport(base http.RoundTripper, cred azcore.TokenCredential, scopes ...string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &bearerTransport{base: base, cred: cred, scopes: append([]string(nil), scopes...), now: time.Now}
}

// RoundTrip implements http.RoundTripper.
func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	token, err := t.get(req)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // the RoundTripper contract: close the body even on error
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return t.base.RoundTrip(r)
}

// get returns a valid token, asking the credential only when the cached one is (nearly) expired.
func (t *bearerTransport) get(req *http.Request) (string, error) {
	if err := checkScheme(req); err != nil {
		return "", err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token.Token != "" && t.now().Before(t.refreshAt()) {
		return t.token.Token, nil
	}
	tok, err := t.cred.GetToken(req.Context(), policy.TokenRequestOptions{Scopes: t.scopes})
	if err != nil {
		return "", &TokenError{Scope: strings.Join(t.scopes, " "), Err: err}
	}
	t.token = tok
	return tok.Token, nil
}

// refreshAt is when the cached token should be replaced: five minutes before expiry, or earlier
// when the identity service suggested a refresh time.
func (t *bearerTransport) refreshAt() time.Time {
	at := t.token.ExpiresOn.Add(-refreshBefore)
	if !t.token.RefreshOn.IsZero() && t.token.RefreshOn.Before(at) {
		at = t.token.RefreshOn
	}
	return at
}
