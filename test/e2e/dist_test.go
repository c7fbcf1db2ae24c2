package e2e

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

const distVersion = "v0.9.1-e2e"

// buildDist runs `go run ./hack/dist` for the host platform into dir and returns the archive names by plugin.
func buildDist(t *testing.T, env *framework.Env, dir string) map[string]string {
	t.Helper()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	cmd := exec.Command("go", "run", "./hack/dist", "-version", distVersion, "-out", dir, "-platforms", platform, "-manifests", filepath.Join(dir, "krew"))
	cmd.Dir = env.Root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/dist: %v\n%s", err, out)
	}
	names := map[string]string{}
	for _, p := range []string{"kubectl-mlrollout", "kubectl-mlhealth", "helm-acrpush"} {
		names[p] = p + "_" + distVersion + "_" + runtime.GOOS + "_" + runtime.GOARCH + ".tar.gz"
		if _, err := os.Stat(filepath.Join(dir, names[p])); err != nil {
			t.Fatalf("archive of %s missing: %v", p, err)
		}
	}
	return names
}

func TestDistReproducibleAndInstallable(t *testing.T) {
	env := framework.Setup(t)
	a, b := t.TempDir(), t.TempDir()
	names := buildDist(t, env, a)
	buildDist(t, env, b)

	t.Run("reproducible", func(t *testing.T) {
		for _, f := range append(mapValues(names), "SHA256SUMS", "krew/mlrollout.yaml", "krew/mlhealth.yaml") {
			x, _ := os.ReadFile(filepath.Join(a, f))
			y, _ := os.ReadFile(filepath.Join(b, f))
			if len(x) == 0 || !bytes.Equal(x, y) {
				t.Errorf("%s differs between two runs (or is empty)", f)
			}
		}
		sums, _ := os.ReadFile(filepath.Join(a, "SHA256SUMS"))
		c := exec.Command("sha256sum", "--check", "--strict", "-")
		c.Dir, c.Stdin = a, bytes.NewReader(sums)
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("sha256sum --check: %v\n%s", err, out)
		}
	})

	t.Run("committed manifests", func(t *testing.T) {
		for _, plugin := range []string{"mlrollout", "mlhealth"} {
			manifest := filepath.Join(env.Root, "krew-manifests", plugin+".yaml")
			r := env.Run(t, filepath.Join(env.PlatformBin, "validate-krew-manifest"), "-manifest", manifest, "-skip-install")
			if r.Code != 0 {
				t.Errorf("validate-krew-manifest refused %s: %s%s", manifest, r.Stdout, r.Stderr)
			}
		}
	})

	for _, plugin := range []string{"mlrollout", "mlhealth"} {
		t.Run("krew "+plugin, func(t *testing.T) {
			manifest := filepath.Join(a, "krew", plugin+".yaml")
			r := env.Run(t, filepath.Join(env.PlatformBin, "validate-krew-manifest"), "-manifest", manifest, "-skip-install")
			if r.Code != 0 {
				t.Fatalf("validate-krew-manifest refused %s: %s%s", manifest, r.Stdout, r.Stderr)
			}
			root := t.TempDir()
			cmd := env.Command(filepath.Join(env.PlatformBin, "krew"), "install", "--manifest="+manifest, "--archive="+filepath.Join(a, names["kubectl-"+plugin]))
			cmd.Env = append(cmd.Env, "KREW_ROOT="+root, "PATH="+env.PlatformBin+":/usr/bin:/bin")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("krew install: %v\n%s", err, out)
			}
			// Only krew's bin directory (not bin/) provides the plugin now.
			cmd = exec.Command("kubectl", plugin, "version")
			cmd.Env = []string{"PATH=" + filepath.Join(root, "bin") + ":/usr/bin:/bin", "HOME=" + root}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), distVersion) {
				t.Fatalf("kubectl %s version through krew: %v\n%s", plugin, err, out)
			}
			if _, err := os.Stat(filepath.Join(root, "store", plugin, distVersion, "LICENSE")); err != nil {
				t.Errorf("LICENSE not installed by krew: %v", err)
			}
		})
	}

	// The Helm plugin, from the archive served on loopback and from its unpacked directory, with Helm 3 and Helm 4.
	srv := httptest.NewServer(http.FileServer(http.Dir(a)))
	t.Cleanup(srv.Close)
	unpacked := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", filepath.Join(a, names["helm-acrpush"]), "-C", unpacked).CombinedOutput(); err != nil {
		t.Fatalf("unpacking: %v\n%s", err, out)
	}
	for _, helm := range []string{"helm", "helm4"} {
		for _, source := range []string{srv.URL + "/" + names["helm-acrpush"], unpacked} {
			t.Run(helm+" plugin install "+filepath.Base(source), func(t *testing.T) {
				// Helm's HTTP installer (and Helm 4's local one) install into $HELM_DATA_HOME/plugins whatever
				// HELM_PLUGINS says, so HELM_PLUGINS keeps its default there, in isolated Helm homes.
				config, cache, data := t.TempDir(), t.TempDir(), t.TempDir()
				plugins := filepath.Join(data, "plugins")
				run := func(args ...string) framework.Result {
					cmd := env.Command(filepath.Join(env.PlatformBin, helm), args...)
					cmd.Env = append(cmd.Env, "HELM_PLUGINS="+plugins, "HELM_CONFIG_HOME="+config, "HELM_CACHE_HOME="+cache, "HELM_DATA_HOME="+data)
					var o, e bytes.Buffer
					cmd.Stdout, cmd.Stderr = &o, &e
					code := 0
					if err := cmd.Run(); err != nil {
						code = 1
						if ee, ok := err.(*exec.ExitError); ok {
							code = ee.ExitCode()
						}
					}
					return framework.Result{Stdout: o.String(), Stderr: e.String(), Code: code}
				}
				args := []string{"plugin", "install", source}
				if helm == "helm4" {
					args = append(args, "--verify=false") // Helm 4 verifies provenance by default; releases ship SHA256SUMS instead
				}
				if r := run(args...); r.Code != 0 {
					t.Fatalf("%s plugin install: %s%s", helm, r.Stdout, r.Stderr)
				}
				if r := run("acrpush", "version"); r.Code != 0 || !strings.Contains(r.Stdout, distVersion) {
					t.Fatalf("%s acrpush version: code %d\n%s%s", helm, r.Code, r.Stdout, r.Stderr)
				}
				if r := run("acrpush", "--help"); r.Code != 0 || !strings.Contains(r.Stdout, "helm acrpush") {
					t.Fatalf("%s acrpush --help: code %d\n%s%s", helm, r.Code, r.Stdout, r.Stderr)
				}
			})
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
