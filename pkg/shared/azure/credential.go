// Package azure builds Microsoft Entra credentials with azidentity and an HTTP round tripper that
// adds a cached bearer token to outgoing requests.
//
// Tokens never appear in errors or log lines produced by this package.
package azure

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Token scopes of the Azure services the plugins call.
const (
	ScopeACR          = "https://containerregistry.azure.net/.default"
	ScopeARM          = "https://management.azure.com/.default"
	ScopePrometheus   = "https://prometheus.monitor.azure.com/.default"
	ScopeLogAnalytics = "https://api.loganalytics.io/.default"
)

// Credential kinds accepted by NewCredential ("" means KindDefault).
const (
	KindDefault          = "default"
	KindWorkloadIdentity = "workload-identity"
	KindManagedIdentity  = "managed-identity"
	KindAzureCLI         = "azure-cli"
	KindEnvironment      = "environment"
)

// CredentialKinds lists the kinds NewCredential accepts, for flag help and validation.
var CredentialKinds = []string{KindDefault, KindWorkloadIdentity, KindManagedIdentity, KindAzureCLI, KindEnvironment}

const (
	envAuthorityHost = "AZURE_AUTHORITY_HOST"
	envClientID      = "AZURE_CLIENT_ID"
)

// Option adjusts how NewCredential builds a credential.
type Option func(*credOptions)

type credOptions struct {
	transport policy.Transporter
}

// WithTransport sends the credential's requests to Entra through t, for example an *http.Client
// that trusts a private authority's CA. By default azcore's shared transport is used.
func WithTransport(t policy.Transporter) Option {
	return func(o *credOptions) { o.transport = t }
}

// NewCredential returns the credential of the given kind: "" or "default" (DefaultAzureCredential:
// environment, workload identity, managed identity, Azure CLI, ...), "workload-identity",
// "managed-identity", "azure-cli" or "environment".
//
// AZURE_AUTHORITY_HOST selects the Entra authority; for any authority other than the public cloud's,
// instance discovery is disabled so that no request goes to login.microsoftonline.com.
// A user-assigned managed identity is selected with AZURE_CLIENT_ID, as DefaultAzureCredential does.
func NewCredential(kind string, opts ...Option) (azcore.TokenCredential, error) {
	var o credOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg, disableDiscovery, err := authority(os.Getenv(envAuthorityHost))
	if err != nil {
		return nil, err
	}
	co := azcore.ClientOptions{Cloud: cfg, Transport: o.transport}

	kind = strings.ToLower(strings.TrimSpace(kind))
	var cred azcore.TokenCredential
	switch kind {
	case "", KindDefault:
		kind = KindDefault
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: co, DisableInstanceDiscovery: disableDiscovery,
		})
	case KindWorkloadIdentity:
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: co, DisableInstanceDiscovery: disableDiscovery,
		})
	case KindManagedIdentity:
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		if id := os.Getenv(envClientID); id != "" {
			mo.ID = azidentity.ClientID(id)
		}
		cred, err = azidentity.NewManagedIdentityCredential(mo)
	case KindAzureCLI:
		cred, err = azidentity.NewAzureCLICredential(nil)
	case KindEnvironment:
		cred, err = azidentity.NewEnvironmentCredential(&azidentity.EnvironmentCredentialOptions{
			ClientOptions: co, DisableInstanceDiscovery: disableDiscovery,
		})
	default:
		return nil, fmt.Errorf("unknown azure credential kind %q (want one of: %s)", kind, strings.Join(CredentialKinds, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s azure credential: %w", kind, err)
	}
	return cred, nil
}

// authority returns the cloud configuration for an AZURE_AUTHORITY_HOST value and whether instance
// discovery must be disabled (any authority but the public cloud's).
func authority(host string) (cloud.Configuration, bool, error) {
	cfg := cloud.AzurePublic
	if host == "" {
		return cfg, false, nil
	}
	u, err := url.Parse(host)
	if err != nil {
		return cloud.Configuration{}, false, fmt.Errorf("parsing %s: %w", envAuthorityHost, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return cloud.Configuration{}, false, fmt.Errorf("%s must be an https URL, got %q", envAuthorityHost, host)
	}
	if !strings.HasSuffix(host, "/") {
		host += "/"
	}
	public, _ := url.Parse(cloud.AzurePublic.ActiveDirectoryAuthorityHost)
	cfg.ActiveDirectoryAuthorityHost = host
	return cfg, !strings.EqualFold(u.Host, public.Host), nil
}

// errPlainHTTP is returned instead of sending a token over an unencrypted connection.
var errPlainHTTP = errors.New("refusing to send an azure bearer token over plain http")

// isLoopback reports whether a request to u stays on this machine.
func isLoopback(u *url.URL) bool {
	switch h := u.Hostname(); h {
	case "localhost", "127.0.0.1", "::1":
		return true
	default:
		return strings.HasPrefix(h, "127.")
	}
}

// checkScheme refuses to put a token on a plain-http request that leaves the machine.
func checkScheme(req *http.Request) error {
	if req.URL.Scheme == "https" || isLoopback(req.URL) {
		return nil
	}
	return fmt.Errorf("%w to %q", errPlainHTTP, req.URL.Host)
}
