package azure

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// CredentialFlag is the flag every plugin offers to pick one Entra ID credential instead of the default chain.
const CredentialFlag = "azure-credential"

// AddCredentialFlag binds --azure-credential to kind.
func AddCredentialFlag(fs *pflag.FlagSet, kind *string) {
	fs.StringVar(kind, CredentialFlag, *kind, "Entra ID credential: "+strings.Join(CredentialKinds, ", ")+
		" (default: the DefaultAzureCredential chain: environment, workload identity, managed identity, Azure CLI)")
}

// ValidateCredentialKind checks a --azure-credential value without building the credential.
func ValidateCredentialKind(kind string) error {
	if kind == "" || slices.Contains(CredentialKinds, kind) {
		return nil
	}
	return fmt.Errorf("invalid --%s %q (want one of: %s)", CredentialFlag, kind, strings.Join(CredentialKinds, ", "))
}
