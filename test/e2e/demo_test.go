package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// TestDemo runs `make demo`'s script, the whole release story, against the test platform: it must exit 0,
// which it does only when every step behaved as described (v2 promoted, v3 rolled back with exit 2, ...).
func TestDemo(t *testing.T) {
	env := framework.Setup(t)
	launcher := filepath.Join(env.Root, "bin", "platform")
	if out, err := exec.Command("go", "-C", filepath.Join(env.Root, "test", "platform"), "build", "-o", launcher, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the launcher: %v\n%s", err, out)
	}
	ns := "demo-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "-" + time.Now().Format("150405")
	t.Cleanup(func() { env.Kubectl(t, "delete", "namespace", ns, "--ignore-not-found", "--wait=false") })
	cmd := env.Command("bash", filepath.Join(env.Root, "hack", "demo", "demo.sh"))
	cmd.Dir = env.Root
	cmd.Env = append(cmd.Env, "DEMO_NAMESPACE="+ns, "NO_COLOR=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("demo took %s", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"a second push skips every artifact",
		"promoted: the stable Deployment runs",
		"exit 2 is the expected outcome",
		"release gate passed",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(string(out), env.Vars["AZURE_CLIENT_SECRET"]) {
		t.Error("the demo printed the client secret")
	}
}
