// Package plugins holds the dependency test of the three binaries (like crane's depcheck): each links only
// what it needs, so a convenience import cannot quietly drag Helm or a registry client into a kubectl plugin.
package plugins

import (
	"os/exec"
	"strings"
	"testing"
)

func TestBinaryDependencies(t *testing.T) {
	for _, tc := range []struct {
		binary    string
		forbidden []string
	}{
		{"kubectl-mlrollout", []string{"helm.sh/helm", "github.com/google/go-containerregistry", "k8s.io/kubectl", "oras.land", "github.com/pkg/errors"}},
		{"kubectl-mlhealth", []string{"helm.sh/helm", "github.com/google/go-containerregistry", "k8s.io/kubectl", "oras.land", "github.com/pkg/errors"}},
		// github.com/pkg/errors reaches helm-acrpush through Helm's chart packages; our code does not import it.
		{"helm-acrpush", []string{"k8s.io/kubectl", "k8s.io/client-go/kubernetes/typed", "helm.sh/helm/v3/pkg/action", "oras.land"}},
	} {
		t.Run(tc.binary, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "./"+tc.binary).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps: %v\n%s", err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("go list -deps listed only %d packages: %s", len(deps), out)
			}
			for _, dep := range deps {
				for _, f := range tc.forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("%s links %s", tc.binary, dep)
					}
				}
			}
		})
	}
}
