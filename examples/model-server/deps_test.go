package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestServerUsesOnlyTheStandardLibrary keeps the server small and its image free of third-party code:
// every package it links is from the standard library or this example.
func TestServerUsesOnlyTheStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, "github.com/aks-mlops/mlplugins/examples/model-server") {
			t.Errorf("the server links %s", p)
		}
	}
}
