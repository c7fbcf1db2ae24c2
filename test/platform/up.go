package main

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aks-mlops/mlplugins/test/platform/azemu"
	"sigs.k8s.io/yaml"
)

//go:embed assets/stages.yaml
var stagesYAML []byte

// Fixed identities of the emulated Azure tenant; the client secret is random per platform.
const (
	tenantID = "72f988bf-0000-4000-8000-00000000a1b2"
	clientID = "5b1d4c2e-0000-4000-8000-00000000c3d4"
)

// systemCABundles are the usual locations of the system trust store.
var systemCABundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", stderr)
	dirFlag := fs.String("dir", "", "state directory (default $PLATFORM_DIR or <repo>/.platform)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	started := time.Now()
	dir, err := resolveDir(*dirFlag)
	if err != nil {
		return err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()

	nodes, err := wantedNodes()
	if err != nil {
		return err
	}
	old := pidFileComponents(dir) // also covers an up that was killed before it wrote state.json
	if st, err := loadState(dir); err == nil {
		problems := checkHealth(ctx, dir, st)
		if len(problems) == 0 {
			if nodes > st.Nodes {
				if err := growNodes(ctx, dir, st, nodes); err != nil {
					return err
				}
			}
			fmt.Fprintf(stderr, "platform already up (%d components healthy, %d nodes); env: %s\n", len(st.Components), st.Nodes, filepath.Join(dir, "env"))
			fmt.Fprintln(stdout, filepath.Join(dir, "env"))
			return nil
		}
		fmt.Fprintf(stderr, "platform state found but unhealthy (%s); restarting it\n", strings.Join(problems, "; "))
		old = append(st.Components, old...)
	}
	if left := stopAll(old, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("could not stop old components: %s", strings.Join(left, ", "))
	}
	if err := wipe(dir); err != nil {
		return err
	}
	st, err := bringUp(ctx, dir, nodes, stderr)
	if err != nil {
		if st != nil {
			stopAll(st.Components, 5*time.Second)
		}
		return fmt.Errorf("%w (logs in %s)", err, filepath.Join(dir, "logs"))
	}
	st.ReadySeconds = time.Since(started).Seconds()
	if err := saveState(dir, st); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "platform ready in %.1fs: %d nodes, apiserver %s, source registry %s, ACR %s, Prometheus %s\n",
		st.ReadySeconds, st.Nodes, st.APIServer, st.Source, st.ACR, st.Prometheus)
	fmt.Fprintf(stderr, "use it with: . %s\n", filepath.Join(dir, "env"))
	fmt.Fprintln(stdout, filepath.Join(dir, "env"))
	return nil
}

// wipe removes everything in dir except the lock file.
func wipe(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == ".lock" {
			continue
		}
		if err := removeLinkedStorage(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// bringUp starts every component. On error the returned state lists what was started, for cleanup.
func bringUp(ctx context.Context, dir string, nodes int, stderr io.Writer) (*State, error) {
	// The repository (for tools.sh): above the state directory, else above the working directory.
	root, err := findRoot(filepath.Dir(dir))
	if err != nil {
		wd, _ := os.Getwd()
		if root, err = findRoot(wd); err != nil {
			return nil, err
		}
	}
	toolsDir, err := buildTools(ctx, root, stderr)
	if err != nil {
		return nil, err
	}
	promBin, err := ensurePrometheus(ctx, stderr)
	if err != nil {
		return nil, err
	}
	storage, err := prepareRegistryStorage(dir, os.Getenv("PLATFORM_REGISTRY_STORAGE"))
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "run", "pki", "azure", "bin", "etcd", "registry/source", "registry/acr",
		"prometheus/targets", "prometheus/rules", "prometheus/data", "kwok", "helm/config", "helm/cache", "helm/data", "docker"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// Every binary tools.sh built (its TOOLS list is the one list of them) is linked into .platform/bin.
	binDir := filepath.Join(dir, "bin")
	tools, err := os.ReadDir(toolsDir)
	if err != nil {
		return nil, err
	}
	for _, t := range tools {
		if t.IsDir() || strings.HasPrefix(t.Name(), ".") {
			continue
		}
		if err := os.Symlink(filepath.Join(toolsDir, t.Name()), filepath.Join(binDir, t.Name())); err != nil {
			return nil, err
		}
	}
	launcher := filepath.Join(dir, "platform")
	if err := installSelf(launcher); err != nil {
		return nil, err
	}

	ports, err := freePorts(10)
	if err != nil {
		return nil, err
	}
	pEtcd, pPeer, pAPI, pKwok, pSource, pACRBackend, pACR, pEntra, pProm := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7], ports[8]
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }

	pki := filepath.Join(dir, "pki")
	token, err := clusterPKI(pki)
	if err != nil {
		return nil, fmt.Errorf("generate cluster pki: %w", err)
	}
	azDir := filepath.Join(dir, "azure")
	if err := azemu.PrepareCerts(azDir); err != nil {
		return nil, fmt.Errorf("prepare azure emulator certificates: %w", err)
	}
	bundle := filepath.Join(pki, "ca-bundle.crt")
	if err := writeBundle(bundle, filepath.Join(azDir, azemu.FileCA), filepath.Join(pki, "ca.crt")); err != nil {
		return nil, err
	}
	secret := randomHex(24)

	st := &State{RegistryStorage: storage,
		Root: root, BinDir: binDir, Token: token, CAFile: filepath.Join(pki, "ca.crt"), Nodes: nodes,
		APIServer:  "https://" + addr(pAPI),
		Prometheus: "http://" + addr(pProm),
		Source:     addr(pSource),
		ACR:        addr(pACR),
		ACRBackend: addr(pACRBackend),
		Entra:      addr(pEntra),
		KwokServer: addr(pKwok),
		Etcd:       "http://" + addr(pEtcd),
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, st.APIServer, st.CAFile, token); err != nil {
		return st, err
	}
	baseEnv := append(os.Environ(), "OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none", "KUBECONFIG="+kubeconfig)
	var mu sync.Mutex
	start := func(name, a, bin string, args ...string) error {
		c, err := spawn(dir, name, baseEnv, bin, args...)
		mu.Lock()
		defer mu.Unlock()
		if c.PID != 0 {
			c.Addr = a
			st.Components = append(st.Components, c)
		}
		return err
	}
	tool := func(n string) string { return filepath.Join(binDir, n) }

	// Processes that do not depend on the apiserver start first, in parallel with it.
	if err := start("etcd", st.Etcd, tool("etcd"),
		"--name=platform", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+st.Etcd, "--advertise-client-urls="+st.Etcd,
		"--listen-peer-urls=http://"+addr(pPeer), "--initial-advertise-peer-urls=http://"+addr(pPeer),
		"--initial-cluster=platform=http://"+addr(pPeer), "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return st, err
	}
	srcCfg, err := registryConfig(filepath.Join(dir, "registry/source"), addr(pSource), nil)
	if err != nil {
		return st, err
	}
	realm, service, issuer, rootBundle := azemu.RegistryTokenAuth(azDir, st.ACR)
	acrCfg, err := registryConfig(filepath.Join(dir, "registry/acr"), addr(pACRBackend), map[string]any{
		"token": map[string]any{"realm": realm, "service": service, "issuer": issuer, "rootcertbundle": rootBundle},
	})
	if err != nil {
		return st, err
	}
	if err := start("registry-source", "http://"+st.Source, tool("registry"), "serve", srcCfg); err != nil {
		return st, err
	}
	if err := start("registry-acr", "http://"+st.ACRBackend, tool("registry"), "serve", acrCfg); err != nil {
		return st, err
	}
	promCfg, err := prometheusConfig(dir, addr(pProm))
	if err != nil {
		return st, err
	}
	if err := start("prometheus", st.Prometheus, promBin, "--config.file="+promCfg,
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus/data"), "--web.listen-address="+addr(pProm),
		"--web.enable-lifecycle", "--web.enable-admin-api", "--storage.tsdb.retention.time=1d", "--log.level=warn"); err != nil {
		return st, err
	}
	azEnv := slices.Concat(baseEnv, []string{"AZURE_CLIENT_SECRET=" + secret})
	c, err := spawn(dir, "azure", azEnv, launcher, "serve-azure", "--dir", azDir, "--entra-addr", st.Entra,
		"--acr-addr", st.ACR, "--registry-url", "http://"+st.ACRBackend, "--tenant", tenantID, "--client-id", clientID)
	if c.PID != 0 {
		c.Addr = "https://" + st.ACR + " https://" + st.Entra
		st.Components = append(st.Components, c)
	}
	if err != nil {
		return st, err
	}

	if err := waitFor(ctx, 30*time.Second, "etcd", func() error { return httpOK(ctx, nil, st.Etcd+"/health", nil) }); err != nil {
		return st, err
	}
	if err := start("kube-apiserver", st.APIServer, tool("kube-apiserver"),
		"--etcd-servers="+st.Etcd,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(pAPI),
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"), "--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--cert-dir="+pki,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--token-auth-file="+filepath.Join(pki, "tokens.csv"),
		"--allow-privileged=true", "--endpoint-reconciler-type=none", "--profiling=false",
		"--kubelet-preferred-address-types=InternalIP"); err != nil {
		return st, err
	}
	kc, err := newKubeClient(st.APIServer, token, st.CAFile)
	if err != nil {
		return st, err
	}
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver", func() error { return kc.do(ctx, "GET", "/readyz", "", nil, nil) }); err != nil {
		return st, err
	}
	if err := installCRDs(ctx, kc, toolsDir); err != nil {
		return st, err
	}
	stagesPath, err := kwokConfig(filepath.Join(dir, "kwok"))
	if err != nil {
		return st, err
	}
	if err := start("kube-controller-manager", "", tool("kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
		"--root-ca-file="+st.CAFile, "--leader-elect=false", "--secure-port=0",
		"--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
		"--kube-api-qps=200", "--kube-api-burst=400"); err != nil {
		return st, err
	}
	if err := start("kube-scheduler", "", tool("kube-scheduler"), "--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--kube-api-qps=200", "--kube-api-burst=400"); err != nil {
		return st, err
	}
	if err := start("kwok", "http://"+st.KwokServer, tool("kwok"), "--kubeconfig="+kubeconfig, "--config="+stagesPath,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.1/16", "--node-ip=127.0.0.1", "--node-port="+strconv.Itoa(pKwok),
		"--server-address="+st.KwokServer, "--enable-crds=PortForward", "--node-lease-duration-seconds=40"); err != nil {
		return st, err
	}
	if err := createNodes(ctx, kc, nodes); err != nil {
		return st, err
	}
	if err := writeEnv(dir, st, bundle, secret); err != nil {
		return st, err
	}

	// Wait for everything to answer.
	bundleClient, err := tlsClient(bundle)
	if err != nil {
		return st, err
	}
	waits := []struct {
		name string
		fn   func() error
	}{
		{"nodes Ready", func() error { return nodesReady(ctx, kc, nodes) }},
		{"default service account", func() error {
			return kc.do(ctx, "GET", "/api/v1/namespaces/default/serviceaccounts/default", "", nil, nil)
		}},
		{"kwok server", func() error { return httpOK(ctx, nil, "http://"+st.KwokServer+"/healthz", nil) }},
		{"source registry", func() error { return httpOK(ctx, nil, "http://"+st.Source+"/v2/", nil) }},
		{"ACR backend registry", func() error {
			return httpOK(ctx, nil, "http://"+st.ACRBackend+"/v2/", []int{http.StatusUnauthorized})
		}},
		{"ACR front", func() error {
			return httpOK(ctx, bundleClient, "https://"+st.ACR+"/v2/", []int{http.StatusUnauthorized})
		}},
		{"Entra ID", func() error {
			return httpOK(ctx, bundleClient, "https://"+st.Entra+"/"+tenantID+"/v2.0/.well-known/openid-configuration", nil)
		}},
		{"Prometheus", func() error { return httpOK(ctx, nil, st.Prometheus+"/-/ready", nil) }},
	}
	errs := make([]error, len(waits))
	var wg sync.WaitGroup
	for i, w := range waits {
		wg.Go(func() { errs[i] = waitFor(ctx, 60*time.Second, w.name, w.fn) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return st, err
	}
	for _, c := range st.Components {
		if !c.alive() {
			return st, fmt.Errorf("%s exited (see %s)", c.Name, c.Log)
		}
	}
	return st, nil
}

// kwokConfig writes kwok's --config: the stages plus a ClusterLogs rule so that `kubectl logs` (and
// `--previous`) of any pod answers with a fixed text instead of an error.
func kwokConfig(dir string) (string, error) {
	current, previous := filepath.Join(dir, "container.log"), filepath.Join(dir, "previous.log")
	if err := os.WriteFile(current, criLog("container started (simulated by the mlplugins local platform)"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(previous, criLog("container exited (simulated by the mlplugins local platform)"), 0o644); err != nil {
		return "", err
	}
	logs := fmt.Sprintf(`---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: all-pods
spec:
  logs:
  - logsFile: %q
    previousLogsFile: %q
    follow: false
`, current, previous)
	path := filepath.Join(dir, "config.yaml")
	return path, os.WriteFile(path, append(append([]byte{}, stagesYAML...), logs...), 0o644)
}

// wantedNodes reads PLATFORM_NODES (default 3, at most 50).
func wantedNodes() (int, error) {
	v := os.Getenv("PLATFORM_NODES")
	if v == "" {
		return 3, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 50 {
		return 0, fmt.Errorf("PLATFORM_NODES=%q: want a number from 1 to 50", v)
	}
	return n, nil
}

// growNodes adds nodes to a running platform (it never removes any) and records the new count.
func growNodes(ctx context.Context, dir string, st *State, n int) error {
	kc, err := newKubeClient(st.APIServer, st.Token, st.CAFile)
	if err != nil {
		return err
	}
	if err := createNodes(ctx, kc, n); err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "nodes Ready", func() error { return nodesReady(ctx, kc, n) }); err != nil {
		return err
	}
	st.Nodes = n
	if err := rewriteEnvVar(filepath.Join(dir, "env"), "PLATFORM_NODES", strconv.Itoa(n)); err != nil {
		return err
	}
	return saveState(dir, st)
}

// rewriteEnvVar sets one export line of the env file.
func rewriteEnvVar(path, name, value string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	line := "export " + name + "=" + shellQuote(value)
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, "export "+name+"=") {
			out = append(out, l)
		}
	}
	out = append(out, line)
	return os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

// buildTools runs tools.sh (a no-op once the binaries are cached) and returns the bin directory it prints.
// PLATFORM_TOOLS_DIR names a prepared bin directory instead (same layout as tools.sh's, with ../kwok).
func buildTools(ctx context.Context, root string, stderr io.Writer) (string, error) {
	if d := os.Getenv("PLATFORM_TOOLS_DIR"); d != "" {
		return filepath.Abs(d)
	}
	script := filepath.Join(root, "test", "platform", "tools.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build platform tools with %s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := lines[len(lines)-1]
	if _, err := os.Stat(filepath.Join(bin, ".complete")); err != nil {
		return "", fmt.Errorf("tools.sh printed %q, which is not a complete tools directory", bin)
	}
	return bin, nil
}

// ensurePrometheus returns the prometheus binary, installing Debian's package when it is missing.
func ensurePrometheus(ctx context.Context, stderr io.Writer) (string, error) {
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p, nil
	}
	fmt.Fprintln(stderr, "prometheus not found; installing the Debian package")
	cmd := exec.CommandContext(ctx, "sh", "-c", "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus")
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("install prometheus: %w", err)
	}
	return exec.LookPath("prometheus")
}

// installSelf copies the running executable to path so that later commands (route, serve-azure) have a
// stable launcher even when up ran through `go run`, or from the copy that wipe just removed.
func installSelf(path string) error {
	data, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("copy the launcher: %w", err)
	}
	return writeFileAtomic(path, data, 0o755)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error (it aborts the program instead)
	return hex.EncodeToString(b)
}

// writeBundle writes the system trust store followed by the given CA files.
func writeBundle(path string, cas ...string) error {
	var buf bytes.Buffer
	for _, p := range systemCABundles {
		if b, err := os.ReadFile(p); err == nil {
			buf.Write(b)
			buf.WriteByte('\n')
			break
		}
	}
	for _, p := range cas {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read ca: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: mlplugins-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: mlplugins-local
  context:
    cluster: mlplugins-local
    user: admin
    namespace: default
current-context: mlplugins-local
`, server, base64.StdEncoding.EncodeToString(ca), token)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// registryConfig writes a distribution registry config (JSON is valid YAML) and returns its path.
func registryConfig(storage, listen string, auth map[string]any) (string, error) {
	cfg := map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "warn", "accesslog": map[string]any{"disabled": true}},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": storage},
			"delete":     map[string]any{"enabled": true},
		},
		"http": map[string]any{"addr": listen, "secret": randomHex(16)},
	}
	if auth != nil {
		cfg["auth"] = auth
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := storage + ".json"
	return path, os.WriteFile(path, b, 0o644)
}

// prometheusConfig writes prometheus.yml: 1 s scrapes of itself and of every target that `platform route
// --scrape` writes under prometheus/targets, plus any rule file a test drops into prometheus/rules.
func prometheusConfig(dir, listen string) (string, error) {
	cfg := map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
		"rule_files": []string{filepath.Join(dir, "prometheus/rules/*.yml")},
		"scrape_configs": []any{
			map[string]any{"job_name": "prometheus", "static_configs": []any{map[string]any{"targets": []string{listen}}}},
			map[string]any{"job_name": "pods", "file_sd_configs": []any{map[string]any{
				"files": []string{filepath.Join(dir, "prometheus/targets/*.json")}, "refresh_interval": "1s",
			}}},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "prometheus", "prometheus.yml")
	return path, os.WriteFile(path, b, 0o644)
}

// installCRDs installs kwok's PortForward CRDs from its module copy and waits for them to be established.
func installCRDs(ctx context.Context, kc *kubeClient, toolsDir string) error {
	for _, name := range []string{"portforwards", "clusterportforwards"} {
		path := filepath.Join(toolsDir, "..", "kwok", "crd", "bases", "kwok.x-k8s.io_"+name+".yaml")
		y, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read kwok crd: %w", err)
		}
		j, err := yaml.YAMLToJSON(y)
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		if err := kc.create(ctx, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", j); err != nil {
			return fmt.Errorf("install crd %s: %w", name, err)
		}
		err = waitFor(ctx, 30*time.Second, "crd "+name, func() error {
			var crd struct {
				Status struct {
					Conditions []condition `json:"conditions"`
				} `json:"status"`
			}
			if err := kc.do(ctx, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name+".kwok.x-k8s.io", "", nil, &crd); err != nil {
				return err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == "Established" && c.Status == "True" {
					return nil
				}
			}
			return errors.New("not established")
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// createNodes creates n kwok nodes shaped like an AKS node pool without GPUs.
func createNodes(ctx context.Context, kc *kubeClient, n int) error {
	res := map[string]string{"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "256Gi"}
	for i := range n {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := map[string]any{
			"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{
				"name":        name,
				"annotations": map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				"labels": map[string]string{
					"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
					"type": "kwok", "kubernetes.azure.com/agentpool": "nodepool1",
					"node.kubernetes.io/instance-type": "Standard_D32s_v5", "topology.kubernetes.io/zone": fmt.Sprintf("local-%d", i%3+1),
				},
			},
			"status": map[string]any{"capacity": res, "allocatable": res},
		}
		if err := kc.create(ctx, "/api/v1/nodes", node); err != nil {
			return fmt.Errorf("create node %s: %w", name, err)
		}
	}
	return nil
}

func nodesReady(ctx context.Context, kc *kubeClient, want int) error {
	var nl nodeList
	if err := kc.do(ctx, "GET", "/api/v1/nodes", "", nil, &nl); err != nil {
		return err
	}
	ready := 0
	for _, n := range nl.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				ready++
			}
		}
	}
	if ready < want {
		return fmt.Errorf("%d of %d nodes Ready", ready, want)
	}
	return nil
}

// writeEnv writes the sourceable env file.
func writeEnv(dir string, st *State, bundle, secret string) error {
	vars := [][2]string{
		{"PLATFORM_DIR", dir},
		{"PLATFORM_LAUNCHER", filepath.Join(dir, "platform")},
		{"PLATFORM_BIN", st.BinDir},
		{"KUBECONFIG", filepath.Join(dir, "kubeconfig")},
		{"HELM_BIN", filepath.Join(st.BinDir, "helm")},
		{"HELM4_BIN", filepath.Join(st.BinDir, "helm4")},
		{"HELM_CONFIG_HOME", filepath.Join(dir, "helm/config")},
		{"HELM_CACHE_HOME", filepath.Join(dir, "helm/cache")},
		{"HELM_DATA_HOME", filepath.Join(dir, "helm/data")},
		{"DOCKER_CONFIG", filepath.Join(dir, "docker")},
		{"SOURCE_REGISTRY", st.Source},
		{"ACR_LOGIN_SERVER", st.ACR},
		{"AZURE_TENANT_ID", tenantID},
		{"AZURE_CLIENT_ID", clientID},
		{"AZURE_CLIENT_SECRET", secret},
		{"AZURE_AUTHORITY_HOST", "https://" + st.Entra + "/"},
		{"SSL_CERT_FILE", bundle},
		{"PROMETHEUS_URL", st.Prometheus},
		{"PROMETHEUS_DATA_DIR", filepath.Join(dir, "prometheus/data")},
		{"PROMETHEUS_RULES_DIR", filepath.Join(dir, "prometheus/rules")},
		{"PLATFORM_NODES", strconv.Itoa(st.Nodes)},
		{"PLATFORM_REGISTRY_STORAGE", st.RegistryStorage},
	}
	var b strings.Builder
	b.WriteString("# Written by `platform up`; source it: . .platform/env\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "export %s=%s\n", v[0], shellQuote(v[1]))
	}
	return os.WriteFile(filepath.Join(dir, "env"), []byte(b.String()), 0o600)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// waitFor polls fn every 100 ms until it succeeds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpOK GETs url and accepts 2xx or any of the extra status codes.
func httpOK(ctx context.Context, hc *http.Client, url string, extra []int) error {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	for _, c := range extra {
		if resp.StatusCode == c {
			return nil
		}
	}
	return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
}

// criLog formats one line the way the CRI writes container logs, which is what kwok serves.
func criLog(msg string) []byte {
	return []byte(time.Now().UTC().Format(time.RFC3339Nano) + " stdout F " + msg + "\n")
}
