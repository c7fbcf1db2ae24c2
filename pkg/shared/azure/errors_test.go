package azure

import (
	"errors"
	"testing"
)

func TestCondense(t *testing.T) {
	// azidentity's text, as DefaultAzureCredential reports it.
	chain := "DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n" +
		"\tEnvironmentCredential: missing environment variable AZURE_TENANT_ID\n" +
		"\tWorkloadIdentityCredential: no client ID specified. Check pod configuration or set ClientID in the options\n" +
		"\tManagedIdentityCredential authentication failed. \n" +
		"\t\tGET http://169.254.169.254/metadata/identity/oauth2/token\n" +
		"\t\t--------------------------------------------------------------------------------\n" +
		"\t\tRESPONSE 403: 403 Forbidden\n" +
		"\t\t--------------------------------------------------------------------------------\n" +
		"\t\tresolve_deny: denied destination\n" +
		"\t\t--------------------------------------------------------------------------------\n" +
		"\t\tTo troubleshoot, visit https://aka.ms/azsdk/go/identity/troubleshoot#managed-id\n" +
		"\tAzureCLICredential: Azure CLI not found on path\n"
	want := "DefaultAzureCredential: failed to acquire a token. Attempted credentials: " +
		"EnvironmentCredential: missing environment variable AZURE_TENANT_ID; " +
		"WorkloadIdentityCredential: no client ID specified. Check pod configuration or set ClientID in the options; " +
		"ManagedIdentityCredential authentication failed. GET http://169.254.169.254/metadata/identity/oauth2/token (HTTP 403): resolve_deny: denied destination; " +
		"AzureCLICredential: Azure CLI not found on path"
	if got := Condense(chain); got != want {
		t.Errorf("Condense:\n got %s\nwant %s", got, want)
	}
	if got := Condense("plain error"); got != "plain error" {
		t.Errorf("Condense(plain) = %q", got)
	}
	inner := errors.New(chain)
	err := error(&TokenError{Scope: ScopePrometheus, Err: inner})
	if !errors.Is(err, inner) {
		t.Error("TokenError does not unwrap")
	}
	if got := err.Error(); got != "getting azure token for scope "+ScopePrometheus+": "+want {
		t.Errorf("TokenError = %q", got)
	}
}
