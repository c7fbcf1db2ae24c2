package chart

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// helmBinary returns the platform's helm v3 binary: $HELM_BIN, else the one test/platform/tools.sh
// builds (it prints its bin directory, building the tools first if they are not cached yet).
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM_BIN"); h != "" {
		return h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "test", "platform", "tools.sh")).Output()
	if err != nil {
		t.Fatalf("test/platform/tools.sh (set HELM_BIN to use another helm): %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "helm")
}

// TestHelmLintStrict runs the real `helm lint --strict` (Helm 3, and Helm 4 next to it) with every
// ci/*-values.yaml.
func TestHelmLintStrict(t *testing.T) {
	helm3 := helmBinary(t)
	helm4 := os.Getenv("HELM4_BIN")
	if helm4 == "" {
		helm4 = filepath.Join(filepath.Dir(helm3), "helm4")
	}
	for name, helm := range map[string]string{"helm3": helm3, "helm4": helm4} {
		for _, f := range ciValueFiles(t) {
			t.Run(name+"/"+f, func(t *testing.T) {
				cmd := exec.Command(helm, "lint", "--strict", chartDir(t), "-f", filepath.Join(chartDir(t), "ci", f))
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s lint --strict -f ci/%s: %v\n%s", name, f, err, out)
				}
				if !strings.Contains(string(out), "1 chart(s) linted, 0 chart(s) failed") {
					t.Fatalf("unexpected %s lint output:\n%s", name, out)
				}
			})
		}
	}
}

// TestLintLibrary runs Helm's linter in-process (what helm lint runs) with the defaults and each ci file;
// any warning or error fails, like --strict.
func TestLintLibrary(t *testing.T) {
	kv := &chartutil.KubeVersion{Version: "v1.36.0", Major: "1", Minor: "36"}
	cases := map[string]map[string]any{"default": {}}
	for _, f := range ciValueFiles(t) {
		cases[f] = readValuesFile(t, filepath.Join(chartDir(t), "ci", f))
	}
	for name, vals := range cases {
		t.Run(name, func(t *testing.T) {
			l := lint.AllWithKubeVersion(chartDir(t), vals, releaseNamespace, kv)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("%s", m)
				} else {
					t.Logf("%s", m)
				}
			}
		})
	}
}
