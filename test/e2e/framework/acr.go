package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Transport returns an HTTP transport that trusts the platform's CA (SSL_CERT_FILE); its idle connections
// are closed at cleanup.
func (e *Env) Transport(t testing.TB) *http.Transport {
	t.Helper()
	pem, err := os.ReadFile(e.Vars["SSL_CERT_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// ACRRefreshToken signs in to ACR_LOGIN_SERVER the documented way, as `az acr login --expose-token` does: an
// Entra token from the real azidentity client-secret credential, exchanged at /oauth2/exchange.
func (e *Env) ACRRefreshToken(t testing.TB, rt http.RoundTripper) string {
	t.Helper()
	v := e.Vars
	cred, err := azidentity.NewClientSecretCredential(v["AZURE_TENANT_ID"], v["AZURE_CLIENT_ID"], v["AZURE_CLIENT_SECRET"], &azidentity.ClientSecretCredentialOptions{
		ClientOptions:            azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: v["AZURE_AUTHORITY_HOST"]}, Transport: &http.Client{Transport: rt}},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://containerregistry.azure.net/.default"}})
	if err != nil {
		t.Fatalf("entra token: %v", err)
	}
	acr := e.ACRLoginServer
	resp, err := (&http.Client{Transport: rt}).PostForm("https://"+acr+"/oauth2/exchange", url.Values{
		"grant_type": {"access_token"}, "service": {acr}, "access_token": {tok.Token},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.RefreshToken == "" {
		t.Fatalf("exchange: %s %v", resp.Status, err)
	}
	return out.RefreshToken
}
