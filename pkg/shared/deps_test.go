// Package shared_test keeps each pkg/shared leaf within its dependency weight.
package shared_test

import (
	"os/exec"
	"strings"
	"testing"
)

func TestLeafDependencies(t *testing.T) {
	heavy := []string{"k8s.io/client-go", "k8s.io/apimachinery", "k8s.io/kubectl", "helm.sh/helm", "github.com/google/go-containerregistry", "github.com/Azure/"}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{pkg: "./cliutil", forbidden: heavy},
		{pkg: "./version", forbidden: heavy},
		{pkg: "./printers", forbidden: append([]string{"github.com/spf13/cobra"}, heavy...)},
		{pkg: "./azure", forbidden: []string{"k8s.io/", "helm.sh/helm", "github.com/spf13/cobra"}},
		{pkg: "./prom", forbidden: []string{"k8s.io/", "helm.sh/helm", "github.com/spf13/cobra"}},
		{pkg: "./kube", forbidden: []string{"k8s.io/kubectl", "helm.sh/helm", "github.com/Azure/", "github.com/pkg/errors"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", tt.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range tt.forbidden {
					if strings.HasPrefix(dep, f) {
						t.Errorf("%s depends on %s", tt.pkg, dep)
					}
				}
			}
		})
	}
}
