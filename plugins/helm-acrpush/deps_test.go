package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the binary off Helm's action and registry client (and with them the
// Kubernetes typed clients, storage drivers and oras): charts are rendered with chartutil and
// engine, and pushed with go-containerregistry.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	if strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", " k8s.io/client-go/kubernetes ") {
		t.Error("helm-acrpush depends on the Kubernetes typed clientset")
	}
	forbidden := []string{
		"helm.sh/helm/v3/pkg/action", "helm.sh/helm/v3/pkg/registry", "helm.sh/helm/v3/pkg/getter",
		"helm.sh/helm/v3/pkg/kube", "helm.sh/helm/v3/pkg/storage", "oras.land/", "k8s.io/kubectl",
		"k8s.io/client-go/kubernetes/typed/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == strings.TrimSuffix(f, "/") || strings.HasPrefix(dep, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("helm-acrpush depends on %s", dep)
			}
		}
	}
}
