package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type stageDoc struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ResourceRef struct {
			Kind string `json:"kind"`
		} `json:"resourceRef"`
		Selector struct {
			MatchExpressions []struct {
				Key      string   `json:"key"`
				Operator string   `json:"operator"`
				Values   []string `json:"values"`
			} `json:"matchExpressions"`
		} `json:"selector"`
		Next struct {
			StatusTemplate string `json:"statusTemplate"`
			Delete         bool   `json:"delete"`
		} `json:"next"`
	} `json:"spec"`
}

func TestStagesCoverEveryBehaviourExactlyOnce(t *testing.T) {
	behaviours := []string{"crashloop", "imagepull", "notready", "oomkilled"}
	var behaviourKey string
	seen := map[string]bool{}
	selects := map[string]int{}
	for _, doc := range bytes.Split(stagesYAML, []byte("\n---\n")) {
		var s stageDoc
		if err := yaml.Unmarshal(doc, &s); err != nil {
			t.Fatalf("parse stage: %v\n%s", err, doc)
		}
		if s.Kind == "" {
			continue
		}
		if s.Kind != "Stage" || seen[s.Metadata.Name] {
			t.Fatalf("unexpected or duplicate document %q %q", s.Kind, s.Metadata.Name)
		}
		seen[s.Metadata.Name] = true
		if s.Spec.ResourceRef.Kind != "Pod" || s.Spec.Next.Delete {
			continue
		}
		found := false
		for _, e := range s.Spec.Selector.MatchExpressions {
			if !strings.Contains(e.Key, "platform.mlplugins.io/behaviour") {
				continue
			}
			if behaviourKey == "" {
				behaviourKey = e.Key
			} else if e.Key != behaviourKey {
				t.Errorf("stage %s: behaviour expression differs from the others", s.Metadata.Name)
			}
			found = true
			switch e.Operator {
			case "NotIn":
				if strings.Join(e.Values, ",") != strings.Join(behaviours, ",") {
					t.Errorf("stage %s excludes %v, want %v", s.Metadata.Name, e.Values, behaviours)
				}
			case "In":
				for _, v := range e.Values {
					selects[v]++
				}
			}
		}
		if !found {
			t.Errorf("pod stage %s does not look at the behaviour", s.Metadata.Name)
		}
	}
	for _, b := range behaviours {
		if selects[b] == 0 {
			t.Errorf("no stage selects behaviour %s", b)
		}
	}
	for _, name := range []string{"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"} {
		if !seen[name] {
			t.Errorf("stage %s missing", name)
		}
	}
}

func TestPromLabel(t *testing.T) {
	for in, want := range map[string]string{"app.kubernetes.io/name": "app_kubernetes_io_name", "track": "track"} {
		if got := promLabel(in); got != want {
			t.Errorf("promLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRouteValidate(t *testing.T) {
	ok := routeOptions{namespace: "ns", selector: "app=x", podPort: 8080, target: "127.0.0.1:9000"}
	if err := ok.validate(); err != nil || ok.targetHost != "127.0.0.1" || ok.targetPort != 9000 {
		t.Fatalf("valid options: %v %+v", err, ok)
	}
	for _, bad := range []routeOptions{
		{selector: "app=x", podPort: 8080, target: "127.0.0.1:9000"},
		{namespace: "ns", podPort: 8080, target: "127.0.0.1:9000"},
		{namespace: "ns", selector: "app=x", target: "127.0.0.1:9000"},
		{namespace: "ns", selector: "app=x", podPort: 8080, target: "127.0.0.1"},
		{namespace: "ns", selector: "app=x", podPort: 8080, target: "127.0.0.1:0"},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}

func TestShellQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"plain", "it's", "a b$c`d`\"e\"", ""} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shellQuote(%q) round trip gave %q (%v)", s, out, err)
		}
	}
}

func TestResolveDirFindsRepositoryRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+rootModule+"\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "test", "platform")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "go.mod"), []byte("module "+rootModule+"/test/platform\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	t.Setenv("PLATFORM_DIR", "")
	got, err := resolveDir("")
	if err != nil || got != filepath.Join(root, ".platform") {
		t.Fatalf("resolveDir = %q, %v; want %q", got, err, filepath.Join(root, ".platform"))
	}
	t.Setenv("PLATFORM_DIR", filepath.Join(root, "elsewhere"))
	if got, _ := resolveDir(""); got != filepath.Join(root, "elsewhere") {
		t.Fatalf("PLATFORM_DIR ignored: %q", got)
	}
}

// TestLauncherStaysLight keeps the launcher's imports to the standard library, sigs.k8s.io/yaml and
// azemu (with its JWT library), so that building it takes seconds and never compiles Kubernetes.
func TestLauncherStaysLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{rootModule + "/test/platform", "sigs.k8s.io/yaml", "go.yaml.in/yaml/", "github.com/golang-jwt/jwt/v5"}
	for _, dep := range strings.Fields(string(out)) {
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(dep, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("launcher depends on %s", dep)
		}
	}
}

func TestRegistryStorage(t *testing.T) {
	if _, err := prepareRegistryStorage(t.TempDir(), "ssd"); err == nil {
		t.Fatal("PLATFORM_REGISTRY_STORAGE=ssd accepted")
	}
	dir := t.TempDir()
	kind, err := prepareRegistryStorage(dir, storageDisk)
	if err != nil || kind != storageDisk {
		t.Fatalf("disk: %q, %v", kind, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "registry")); err != nil || !fi.IsDir() {
		t.Fatalf("disk storage is not a directory: %v", err)
	}

	dir = t.TempDir()
	if _, err := tmpfsRoom(shmDir); err != nil {
		// Without a tmpfs, the default falls back to disk and memory is refused.
		if kind, err := prepareRegistryStorage(dir, ""); err != nil || kind != storageDisk {
			t.Fatalf("default without tmpfs: %q, %v", kind, err)
		}
		if _, err := prepareRegistryStorage(t.TempDir(), storageMemory); err == nil {
			t.Fatal("memory storage accepted without a tmpfs")
		}
		return
	}
	kind, err = prepareRegistryStorage(dir, storageMemory)
	if err != nil || kind != storageMemory {
		t.Fatalf("memory: %q, %v", kind, err)
	}
	target, err := os.Readlink(filepath.Join(dir, "registry"))
	if err != nil || !strings.HasPrefix(target, shmDir+"/"+shmPrefix) {
		t.Fatalf("registry links to %q (%v)", target, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "registry", "blob"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := wipe(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("wipe left the tmpfs directory %s behind (%v)", target, err)
	}
}
