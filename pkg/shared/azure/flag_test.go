package azure

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestCredentialFlag(t *testing.T) {
	var kind string
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddCredentialFlag(fs, &kind)
	if err := fs.Parse([]string{"--azure-credential", KindWorkloadIdentity}); err != nil {
		t.Fatal(err)
	}
	if kind != KindWorkloadIdentity {
		t.Fatalf("kind = %q", kind)
	}
	for _, tc := range []struct {
		kind, err string
	}{
		{"", ""},
		{KindAzureCLI, ""},
		{"cli", `invalid --azure-credential "cli" (want one of: default, workload-identity, managed-identity, azure-cli, environment)`},
	} {
		err := ValidateCredentialKind(tc.kind)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err {
			t.Errorf("ValidateCredentialKind(%q) = %q, want %q", tc.kind, got, tc.err)
		}
	}
}
