package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// TestMain stops the platform after the package's tests when they had to start it (see framework.Main).
func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }

func TestPlatformNodesReady(t *testing.T) {
	env := framework.Setup(t)
	want := 3
	if v := env.Vars["PLATFORM_NODES"]; v != "" {
		want, _ = strconv.Atoi(v)
	}
	nodes, err := env.Clientset(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
		if cpu := n.Status.Allocatable.Cpu().Value(); cpu != 32 {
			t.Errorf("node %s allocatable cpu %d, want 32", n.Name, cpu)
		}
		if mem := n.Status.Allocatable.Memory().Value(); mem != 128<<30 {
			t.Errorf("node %s allocatable memory %d, want 128Gi", n.Name, mem)
		}
	}
	if ready < want {
		t.Fatalf("%d Ready nodes, want at least %d", ready, want)
	}
	res := env.Kubectl(t, "get", "nodes")
	if res.Code != 0 || !strings.Contains(res.Stdout, "Ready") {
		t.Fatalf("kubectl get nodes: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestPlatformUpDownLeavesNothing runs a second platform in its own directory: up is idempotent and grows
// nodes on request, status reports it healthy, and down leaves no process and no state behind.
func TestPlatformUpDownLeavesNothing(t *testing.T) {
	env := framework.Setup(t)
	dir := filepath.Join(t.TempDir(), ".platform")
	launcher := func(nodes string, args ...string) (string, error) {
		cmd := exec.Command("go", append([]string{"run", "."}, args...)...)
		cmd.Dir = filepath.Join(env.Root, "test", "platform")
		cmd.Env = append(os.Environ(), "PLATFORM_DIR="+dir, "PLATFORM_NODES="+nodes)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = launcher("1", "down") })
	if out, err := launcher("1", "up"); err != nil || !strings.Contains(out, "platform ready in") {
		t.Fatalf("up: %v\n%s", err, out)
	}
	out, err := launcher("2", "up")
	if err != nil || !strings.Contains(out, "platform already up") || !strings.Contains(out, "2 nodes") {
		t.Fatalf("second up: %v\n%s", err, out)
	}
	if out, err := launcher("2", "status"); err != nil || !strings.Contains(out, "kube-apiserver") || !strings.Contains(out, "TOTAL") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	// The registries' blobs may live on tmpfs (PLATFORM_REGISTRY_STORAGE): down removes them too.
	storage, _ := filepath.EvalSymlinks(filepath.Join(dir, "registry"))
	if storage == "" {
		t.Fatal("no registry storage")
	}
	if out, err := launcher("2", "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("down left %s behind (%v)", dir, err)
	}
	if _, err := os.Stat(storage); !os.IsNotExist(err) {
		t.Errorf("down left the registry storage %s behind (%v)", storage, err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), dir) {
			t.Errorf("process %s still runs: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func TestPlatformDeploymentRollout(t *testing.T) {
	env := framework.Setup(t)
	ns := env.Namespace(t)
	if res := env.Kubectl(t, "create", "deployment", "web", "-n", ns, "--image=registry.example/web:v1", "--replicas=3"); res.Code != 0 {
		t.Fatalf("create deployment: %s", res.Stderr)
	}
	if res := env.Kubectl(t, "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"); res.Code != 0 {
		t.Fatalf("rollout status: %s%s", res.Stdout, res.Stderr)
	}
	if n := readyPods(t, env, ns, "app=web"); n != 3 {
		t.Fatalf("%d Ready pods, want 3", n)
	}
	// A new image rolls out too, replacing every pod.
	if res := env.Kubectl(t, "set", "image", "deployment/web", "-n", ns, "web=registry.example/web:v2"); res.Code != 0 {
		t.Fatalf("set image: %s", res.Stderr)
	}
	if res := env.Kubectl(t, "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"); res.Code != 0 {
		t.Fatalf("rollout status after set image: %s%s", res.Stdout, res.Stderr)
	}
}

func readyPods(t *testing.T, env *framework.Env, ns, selector string) int {
	t.Helper()
	pods, err := env.Clientset(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			n++
		}
	}
	return n
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// twoTracks deploys a stable and a canary Deployment (labels app=model, track=...) and starts one local
// server per track, routed with `platform route` (and scraped by Prometheus with scrape).
func twoTracks(t *testing.T, env *framework.Env, ns string, scrape bool) {
	t.Helper()
	for _, track := range []string{"stable", "canary"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/metrics" {
				fmt.Fprintf(w, "# TYPE e2e_model_requests_total counter\ne2e_model_requests_total{served_by=%q} 42\n", track)
				return
			}
			fmt.Fprintf(w, "hello from %s\n", track)
		}))
		t.Cleanup(srv.Close)
		env.Apply(t, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-%[1]s
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: model, track: %[1]s}
  template:
    metadata:
      labels: {app.kubernetes.io/name: model, track: %[1]s}
    spec:
      containers:
      - name: server
        image: registry.example/model:%[1]s
        ports: [{containerPort: 8080}]
`, track))
		env.Route(t, ns, "app.kubernetes.io/name=model,track="+track, 8080, strings.TrimPrefix(srv.URL, "http://"), scrape)
	}
	for _, track := range []string{"stable", "canary"} {
		if res := env.Kubectl(t, "rollout", "status", "deployment/model-"+track, "-n", ns, "--timeout=60s"); res.Code != 0 {
			t.Fatalf("rollout %s: %s", track, res.Stderr)
		}
	}
}

func TestPlatformPortForwardRoutes(t *testing.T) {
	env := framework.Setup(t)
	ns := env.Namespace(t)
	twoTracks(t, env, ns, false)
	for _, track := range []string{"stable", "canary"} {
		pods, err := env.Clientset(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "track=" + track})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("pods of %s: %v (%d)", track, err, len(pods.Items))
		}
		for _, p := range pods.Items {
			var body string
			framework.Eventually(t, 30*time.Second, func() (bool, error) {
				b, err := portForwardGet(t, env, ns, p.Name, 8080, "/")
				body = b
				return err == nil, err
			})
			if want := "hello from " + track; strings.TrimSpace(body) != want {
				t.Errorf("pod %s answered %q, want %q", p.Name, body, want)
			}
		}
	}
	// The route drops the forwards of pods that go away.
	if res := env.Kubectl(t, "scale", "deployment/model-canary", "-n", ns, "--replicas=0"); res.Code != 0 {
		t.Fatalf("scale: %s", res.Stderr)
	}
	framework.Eventually(t, 30*time.Second, func() (bool, error) {
		res := env.Kubectl(t, "get", "portforwards.kwok.x-k8s.io", "-n", ns, "-o", "name")
		if n := len(strings.Fields(res.Stdout)); res.Code != 0 || n != 2 {
			return false, fmt.Errorf("%d portforwards, want 2 (exit %d %s)", n, res.Code, res.Stderr)
		}
		return true, nil
	})
}

var forwardingRE = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) ->`)

// portForwardGet runs `kubectl port-forward pod/NAME :PORT`, GETs path through it and stops it.
func portForwardGet(t *testing.T, env *framework.Env, ns, pod string, port int, path string) (string, error) {
	t.Helper()
	cmd := env.Command("kubectl", "port-forward", "-n", ns, "pod/"+pod, ":"+strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	local := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := forwardingRE.FindStringSubmatch(sc.Text()); m != nil {
				local <- m[1]
			}
		}
		close(local)
	}()
	var lp string
	select {
	case p, ok := <-local:
		if !ok {
			return "", fmt.Errorf("kubectl port-forward exited: %s", stderr.String())
		}
		lp = p
	case <-time.After(15 * time.Second):
		return "", fmt.Errorf("kubectl port-forward not listening: %s", stderr.String())
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://127.0.0.1:" + lp + path)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

func TestPlatformSourceRegistryPushPull(t *testing.T) {
	env := framework.Setup(t)
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(env.SourceRegistry+"/e2e/random:"+strconv.FormatInt(time.Now().UnixNano(), 36), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push to %s: %v", ref, err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	d, err := got.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d != want {
		t.Fatalf("pulled digest %s, pushed %s", d, want)
	}
	layers, err := got.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("pulled %d layers (%v), want 2", len(layers), err)
	}
	// The platform's crane reads the same registry.
	res := env.Run(t, "crane", "digest", "--insecure", ref.String())
	if res.Code != 0 || strings.TrimSpace(res.Stdout) != want.String() {
		t.Fatalf("crane digest: exit %d %q %s", res.Code, res.Stdout, res.Stderr)
	}
}

// promQuery runs an instant query against the platform's Prometheus and returns the result vector.
func promQuery(env *framework.Env, q string) ([]map[string]any, error) {
	resp, err := http.Get(env.PrometheusURL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string           `json:"resultType"`
			Result     []map[string]any `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, body.Error)
	}
	return body.Data.Result, nil
}

func TestPlatformPrometheus(t *testing.T) {
	env := framework.Setup(t)
	framework.Eventually(t, 30*time.Second, func() (bool, error) {
		r, err := promQuery(env, `up{job="prometheus"} == 1`)
		return len(r) == 1, err
	})

	ns := env.Namespace(t)
	twoTracks(t, env, ns, true)
	// Each routed pod is its own target, labelled with namespace, pod and the pod's name/track labels.
	framework.Eventually(t, 60*time.Second, func() (bool, error) {
		r, err := promQuery(env, fmt.Sprintf(`e2e_model_requests_total{namespace=%q}`, ns))
		if err != nil || len(r) != 4 {
			return false, err
		}
		for _, s := range r {
			m := s["metric"].(map[string]any)
			if m["pod"] == nil || m["app_kubernetes_io_name"] != "model" || m["track"] != m["served_by"] {
				return false, fmt.Errorf("unexpected series labels %v", m)
			}
		}
		return true, nil
	})
}

func TestPlatformPodSecurityRestricted(t *testing.T) {
	env := framework.Setup(t)
	ns := env.Namespace(t)
	if res := env.Kubectl(t, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted"); res.Code != 0 {
		t.Fatalf("label namespace: %s", res.Stderr)
	}
	privileged := `apiVersion: v1
kind: Pod
metadata:
  name: privileged
spec:
  containers:
  - name: c
    image: registry.example/tool:v1
    securityContext: {privileged: true}
`
	res := tryApply(t, env, ns, privileged)
	if res.Code == 0 || !strings.Contains(res.Stderr, "violates PodSecurity") {
		t.Fatalf("privileged pod in a restricted namespace: exit %d, stderr %q", res.Code, res.Stderr)
	}
	restricted := `apiVersion: v1
kind: Pod
metadata:
  name: restricted
spec:
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: registry.example/tool:v1
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
`
	env.Apply(t, ns, restricted)
}

// tryApply runs kubectl apply and returns its result without failing the test.
func tryApply(t *testing.T, env *framework.Env, ns, manifest string) framework.Result {
	t.Helper()
	cmd := env.Command("kubectl", "apply", "-n", ns, "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("kubectl apply: %v", err)
	}
	return framework.Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
}

// behaviourCheck checks the pod status a behaviour must produce.
type behaviourCheck func(p *corev1.Pod) error

func TestPlatformPodBehaviours(t *testing.T) {
	env := framework.Setup(t)
	ns := env.Namespace(t)
	cases := []struct {
		name, image, annotation string
		check                   behaviourCheck
	}{
		{"normal", "registry.example/app:v1", "", func(p *corev1.Pod) error {
			if p.Status.Phase != corev1.PodRunning || !podReady(p) {
				return fmt.Errorf("phase %s ready %v", p.Status.Phase, podReady(p))
			}
			return nil
		}},
		{"crashloop", "registry.example/app:v1-crashloop", "", restarting("CrashLoopBackOff", "Error", 2)},
		{"crashloop-annotated", "registry.example/app:v1", "crashloop", restarting("CrashLoopBackOff", "Error", 1)},
		{"oomkilled", "registry.example/app:v1-oomkilled", "", restarting("CrashLoopBackOff", "OOMKilled", 1)},
		{"imagepull", "registry.example/app:v1-imagepull", "", func(p *corev1.Pod) error {
			cs := p.Status.ContainerStatuses
			if p.Status.Phase != corev1.PodPending || len(cs) != 1 || cs[0].State.Waiting == nil || cs[0].State.Waiting.Reason != "ImagePullBackOff" {
				return fmt.Errorf("phase %s statuses %+v", p.Status.Phase, cs)
			}
			return nil
		}},
		{"notready", "registry.example/app:v1-notready", "", func(p *corev1.Pod) error {
			cs := p.Status.ContainerStatuses
			if p.Status.Phase != corev1.PodRunning || podReady(p) || len(cs) != 1 || cs[0].State.Running == nil || cs[0].Ready {
				return fmt.Errorf("phase %s ready %v statuses %+v", p.Status.Phase, podReady(p), cs)
			}
			return nil
		}},
	}
	for _, c := range cases {
		ann := ""
		if c.annotation != "" {
			ann = fmt.Sprintf("\n  annotations: {platform.mlplugins.io/behaviour: %s}", c.annotation)
		}
		env.Apply(t, ns, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s%s\nspec:\n  containers:\n  - name: app\n    image: %s\n", c.name, ann, c.image))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var last error
			framework.Eventually(t, 30*time.Second, func() (bool, error) {
				p, err := env.Clientset(t).CoreV1().Pods(ns).Get(context.Background(), c.name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				last = c.check(p)
				return last == nil, last
			})
		})
	}
	// Stable behaviours stay put: a notready pod never becomes Ready.
	time.Sleep(2 * time.Second)
	p, err := env.Clientset(t).CoreV1().Pods(ns).Get(context.Background(), "notready", metav1.GetOptions{})
	if err != nil || podReady(p) {
		t.Fatalf("notready pod became Ready (%v)", err)
	}
}

// restarting checks a container waiting with reason, last terminated with lastReason, and at least min restarts.
func restarting(reason, lastReason string, minRestarts int32) behaviourCheck {
	return func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if len(cs) != 1 || cs[0].State.Waiting == nil || cs[0].State.Waiting.Reason != reason ||
			cs[0].LastTerminationState.Terminated == nil || cs[0].LastTerminationState.Terminated.Reason != lastReason ||
			cs[0].RestartCount < minRestarts || podReady(p) {
			return fmt.Errorf("phase %s statuses %+v", p.Status.Phase, cs)
		}
		return nil
	}
}
