// Package framework runs end-to-end tests against the local platform (test/platform): it brings the
// platform up or reuses a running one, builds the plugin binaries into bin/, and runs kubectl, helm and
// the plugins with the platform's environment.
package framework

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// rootModule is the module path of the repository root's go.mod.
const rootModule = "github.com/aks-mlops/mlplugins"

// Env is a running platform and the binaries built for the tests.
type Env struct {
	Root           string // repository root
	BinDir         string // <root>/bin, holding the built plugins
	PlatformBin    string // the platform's tools (helm, krew, crane, ...)
	KubeConfig     string
	SourceRegistry string // host:port, plain HTTP, anonymous
	ACRLoginServer string // host:port, HTTPS with the platform CA, ACR token protocol
	PrometheusURL  string
	Vars           map[string]string // every variable of .platform/env
}

// Result is the outcome of a command run by Env.Run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

var (
	setupOnce    sync.Once
	setupEnv     *Env
	setupErr     error
	startedHere  bool
	rootDir      string
	platformDir  string
	setupLogBuf  bytes.Buffer
	clientsetMu  sync.Mutex
	clientsetVal kubernetes.Interface
)

// Setup brings the platform up (or reuses a healthy one), builds the plugins into bin/ and returns the
// environment. It runs once per test binary; later calls return the same Env. With PLATFORM_NODES set
// (at most 50), a running platform with fewer nodes gets the missing ones (nodes are never removed).
func Setup(t testing.TB) *Env {
	t.Helper()
	setupOnce.Do(func() { setupEnv, setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("platform setup: %v\n%s", setupErr, setupLogBuf.String())
	}
	return setupEnv
}

// Main runs the tests of a package (call it from TestMain) and, when Setup had to start the platform,
// stops it afterwards unless PLATFORM_KEEP is set. A platform that was already running is left alone.
func Main(m *testing.M) int {
	code := m.Run()
	if startedHere && os.Getenv("PLATFORM_KEEP") == "" {
		cmd := launcherCommand(rootDir, "down")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "platform down: %v\n%s", err, out)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

func setup() (*Env, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	root, err := findRoot(wd)
	if err != nil {
		return nil, err
	}
	rootDir = root
	platformDir = os.Getenv("PLATFORM_DIR")
	if platformDir == "" {
		platformDir = filepath.Join(root, ".platform")
	}
	healthy := platformHealthy()
	if !healthy || wantMoreNodes() {
		// up is idempotent: on a healthy platform it only adds the nodes PLATFORM_NODES asks for.
		cmd := launcherCommand(root, "up")
		cmd.Stdout = &setupLogBuf
		cmd.Stderr = &setupLogBuf
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("platform up: %w", err)
		}
		startedHere = !healthy
	}
	vars, err := readEnvFile(filepath.Join(platformDir, "env"))
	if err != nil {
		return nil, err
	}
	env := &Env{
		Root:           root,
		BinDir:         filepath.Join(root, "bin"),
		PlatformBin:    vars["PLATFORM_BIN"],
		KubeConfig:     vars["KUBECONFIG"],
		SourceRegistry: vars["SOURCE_REGISTRY"],
		ACRLoginServer: vars["ACR_LOGIN_SERVER"],
		PrometheusURL:  vars["PROMETHEUS_URL"],
		Vars:           vars,
	}
	if err := buildPlugins(root, env.BinDir); err != nil {
		return nil, err
	}
	return env, nil
}

// platformHealthy reports whether .platform/env exists and `platform status` says every component is up.
func platformHealthy() bool {
	launcher := filepath.Join(platformDir, "platform")
	if _, err := os.Stat(filepath.Join(platformDir, "env")); err != nil {
		return false
	}
	if _, err := os.Stat(launcher); err != nil {
		return false
	}
	cmd := exec.Command(launcher, "status")
	cmd.Env = append(os.Environ(), "PLATFORM_DIR="+platformDir)
	return cmd.Run() == nil
}

// wantMoreNodes reports whether $PLATFORM_NODES asks for more nodes than the running platform has.
func wantMoreNodes() bool {
	want, err := strconv.Atoi(os.Getenv("PLATFORM_NODES"))
	if err != nil {
		return false
	}
	vars, err := readEnvFile(filepath.Join(platformDir, "env"))
	if err != nil {
		return true
	}
	have, err := strconv.Atoi(vars["PLATFORM_NODES"])
	return err != nil || want > have
}

// launcherCommand runs the launcher from source (go run in test/platform, its own module).
func launcherCommand(root string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", append([]string{"run", "."}, args...)...)
	cmd.Dir = filepath.Join(root, "test", "platform")
	cmd.Env = append(os.Environ(), "PLATFORM_DIR="+platformDir)
	return cmd
}

// buildPlugins builds the plugins (and the platform launcher) exactly as a user's `make build` does:
// the same flags and version stamp, so tests run what users run.
func buildPlugins(root, binDir string) error {
	cmd := exec.Command("make", "-s", "build", "BIN="+binDir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make build: %w\n%s", err, out)
	}
	return nil
}

func findRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && f[1] == rootModule {
					return d, nil
				}
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no %s go.mod above %s", rootModule, dir)
		}
	}
}

// readEnvFile parses the `export K='v'` lines that the launcher writes.
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read platform env: %w", err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "export ") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			continue
		}
		vars[k] = unquoteShell(v)
	}
	return vars, nil
}

// unquoteShell undoes the launcher's POSIX single quoting of a value.
func unquoteShell(s string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			in = !in
		case c == '\\' && !in && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// environ is the process environment with the platform's variables and PATH=BinDir:PlatformBin:$PATH.
func (e *Env) environ() []string {
	out := make([]string, 0, len(os.Environ())+len(e.Vars)+1)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := e.Vars[k]; ok || k == "PATH" {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range e.Vars {
		out = append(out, k+"="+v)
	}
	return append(out, "PATH="+e.BinDir+string(os.PathListSeparator)+e.PlatformBin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// Command returns a command with the platform's environment and PATH=BinDir:PlatformBin:$PATH.
// A bare name is looked up on that PATH.
func (e *Env) Command(name string, args ...string) *exec.Cmd {
	path := name
	if !strings.ContainsRune(name, filepath.Separator) {
		for _, d := range []string{e.BinDir, e.PlatformBin} {
			if fi, err := os.Stat(filepath.Join(d, name)); err == nil && !fi.IsDir() {
				path = filepath.Join(d, name)
				break
			}
		}
	}
	cmd := exec.Command(path, args...)
	cmd.Env = e.environ()
	return cmd
}

// Run runs name with args and returns its output and exit code; a non-zero exit is not fatal.
// It fails the test only when the command cannot be started or runs for more than 10 minutes.
func (e *Env) Run(t testing.TB, name string, args ...string) Result {
	t.Helper()
	return e.run(t, nil, name, args...)
}

func (e *Env) run(t testing.TB, stdin []byte, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := e.Command(name, args...)
	cmd = withContext(ctx, cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		res.Code = ee.ExitCode()
	}
	t.Logf("$ %s %s  (exit %d, %.2fs)", filepath.Base(name), redact(args), res.Code, time.Since(start).Seconds())
	return res
}

// withContext rebuilds cmd so that it is killed when ctx ends.
func withContext(ctx context.Context, cmd *exec.Cmd) *exec.Cmd {
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env, c.Dir = cmd.Env, cmd.Dir
	return c
}

// redact hides the values of password-like flags in a logged command line.
func redact(args []string) string {
	out := make([]string, len(args))
	hide := false
	for i, a := range args {
		switch {
		case hide:
			out[i], hide = "***", false
		case a == "-p" || a == "--password" || a == "--token" || a == "--client-secret":
			out[i], hide = a, true
		case strings.HasPrefix(a, "--password=") || strings.HasPrefix(a, "--token=") || strings.HasPrefix(a, "--client-secret="):
			k, _, _ := strings.Cut(a, "=")
			out[i] = k + "=***"
		default:
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// Kubectl runs kubectl with the platform's kubeconfig.
func (e *Env) Kubectl(t testing.TB, args ...string) Result {
	t.Helper()
	return e.Run(t, "kubectl", args...)
}

// Helm runs the platform's helm v3 (HELM_BIN).
func (e *Env) Helm(t testing.TB, args ...string) Result {
	t.Helper()
	return e.Run(t, e.Vars["HELM_BIN"], args...)
}

// Namespace creates a fresh namespace named after the test and deletes it at cleanup.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := namespaceName(t.Name())
	res := e.Kubectl(t, "create", "namespace", name)
	if res.Code != 0 {
		t.Fatalf("create namespace %s: %s", name, res.Stderr)
	}
	e.Kubectl(t, "label", "namespace", name, "mlplugins.io/e2e=true")
	t.Cleanup(func() {
		cmd := e.Command("kubectl", "delete", "namespace", name, "--wait=false", "--ignore-not-found")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("delete namespace %s: %v: %s", name, err, out)
		}
	})
	return name
}

func namespaceName(testName string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(testName) {
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteRune(c)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	s := strings.TrimSuffix(b.String(), "-")
	if len(s) > 40 {
		s = strings.TrimSuffix(s[:40], "-")
	}
	r := make([]byte, 3)
	_, _ = rand.Read(r)
	return "e2e-" + s + "-" + hex.EncodeToString(r)
}

// Clientset returns a typed client for the platform's apiserver.
func (e *Env) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	clientsetMu.Lock()
	defer clientsetMu.Unlock()
	if clientsetVal != nil {
		return clientsetVal
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.KubeConfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("create clientset: %v", err)
	}
	clientsetVal = cs
	return cs
}

// Apply runs `kubectl apply -n ns -f -` with manifest; a failure is fatal.
func (e *Env) Apply(t testing.TB, ns, manifest string) {
	t.Helper()
	args := []string{"apply", "-f", "-"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	res := e.run(t, []byte(manifest), "kubectl", args...)
	if res.Code != 0 {
		t.Fatalf("kubectl apply: exit %d: %s", res.Code, res.Stderr)
	}
}

// Route runs `platform route` so that port-forwards to podPort of the pods in ns matching selector reach
// target (host:port), and with scrape adds them as Prometheus targets. It returns once the route is
// watching; the route process is stopped at cleanup, which also removes its forwards and targets.
func (e *Env) Route(t testing.TB, ns, selector string, podPort int, target string, scrape bool) {
	t.Helper()
	args := []string{"route", "-n", ns, "-l", selector, "--port", strconv.Itoa(podPort), "--target", target}
	if scrape {
		args = append(args, "--scrape")
	}
	cmd := e.Command(e.Vars["PLATFORM_LAUNCHER"], args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("route: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start route: %v", err)
	}
	var (
		mu   sync.Mutex
		logs bytes.Buffer
	)
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "route ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	waited := make(chan struct{})
	go func() { <-done; _ = cmd.Wait(); close(waited) }() // the route's exit status means nothing once the test ends
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("route %s %s output:\n%s", ns, selector, logs.String())
			mu.Unlock()
		}
	})
	select {
	case <-ready:
	case err := <-waited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("route exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("route not ready after 30s:\n%s", logs.String())
	}
}

// Eventually polls cond every 200 ms until it returns true, failing the test after timeout. An error
// from cond counts as "not yet" and is reported if the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				t.Fatalf("condition not met after %s: %v", timeout, lastErr)
			}
			t.Fatalf("condition not met after %s", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
