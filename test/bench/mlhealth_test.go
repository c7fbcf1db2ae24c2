//go:build bench

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

const (
	benchTaint     = "mlplugins.io/mlhealth-bench"
	benchNodes     = 5
	benchNodePods  = "1200"
	replicasPerDep = 10
	benchRuns      = 5
	benchRunsAll   = 3
)

// benchNodesUp adds kwok nodes with room for the benchmark's pods (the platform's three nodes take
// 110 pods each), tainted so that other workloads stay off them, and removes them at cleanup.
func benchNodesUp(t *testing.T, e *framework.Env) {
	t.Helper()
	cs := e.Clientset(t)
	ctx := context.Background()
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("512"), corev1.ResourceMemory: resource.MustParse("2Ti"),
		corev1.ResourcePods: resource.MustParse(benchNodePods)}
	for i := range benchNodes {
		name := fmt.Sprintf("mlhealth-bench-%d", i)
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{"kubernetes.io/hostname": name, "type": "kwok", benchTaint: "true"}},
			Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: benchTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
			Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", name, err)
		}
		// Cleanups run last-in first-out: the namespaces are deleted first; the node goes once kwok has
		// finished its pods (a pod on a deleted node waits for the pod garbage collector).
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for ctx.Err() == nil {
				pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0", FieldSelector: "spec.nodeName=" + name})
				if err == nil && len(pods.Items) == 0 {
					break
				}
				time.Sleep(2 * time.Second)
			}
			_ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
}

// applyDeployments applies n Deployments of replicasPerDep pods on the bench nodes.
func applyDeployments(t *testing.T, e *framework.Env, ns string, n int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-%03[1]d
  labels: {app.kubernetes.io/instance: model-%03[1]d, app.kubernetes.io/name: model}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: model-%03[1]d}}
  template:
    metadata: {labels: {app: model-%03[1]d}}
    spec:
      nodeSelector: {%[3]s: "true"}
      tolerations: [{key: %[3]s, operator: Exists, effect: NoSchedule}]
      containers:
      - name: model
        image: example.com/model:v1
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
`, i, replicasPerDep, benchTaint)
	}
	e.Apply(t, ns, b.String())
}

// waitRunning waits until want pods run in the bench namespaces.
func waitRunning(t *testing.T, e *framework.Env, want int, namespaces ...string) {
	t.Helper()
	cs := e.Clientset(t)
	start := time.Now()
	framework.Eventually(t, 6*time.Minute, func() (bool, error) {
		pods, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{ResourceVersion: "0",
			LabelSelector: "app", FieldSelector: "status.phase=Running"})
		if err != nil {
			return false, nil
		}
		running := 0
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Labels["app"], "model-") && p.DeletionTimestamp == nil && slices.Contains(namespaces, p.Namespace) {
				running++
			}
		}
		return running >= want, nil
	})
	t.Logf("%d pods running after %s", want, time.Since(start).Round(time.Second))
}

// timed runs the command with stdout captured and returns its wall time, its peak resident memory
// (KiB) and its output. Peak memory is the child's VmHWM polled from /proc every 5 ms: getrusage's
// ru_maxrss of a child of a Go program includes the parent's high-water mark (vfork, then exec).
func timed(t *testing.T, e *framework.Env, name string, args ...string) (time.Duration, int64, []byte) {
	t.Helper()
	cmd := e.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var hwm int64
	var err error
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
poll:
	for {
		if b, rerr := os.ReadFile(status); rerr == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
					var kb int64
					fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
					hwm = max(hwm, kb)
				}
			}
		}
		select {
		case err = <-done:
			break poll
		case <-time.After(5 * time.Millisecond):
		}
	}
	d := time.Since(start)
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 2 {
		err = nil // findings are not failures here
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return d, hwm, out.Bytes()
}

func requests(t *testing.T, out []byte) (int, int, int) {
	t.Helper()
	var r struct {
		Workloads []json.RawMessage `json:"workloads"`
		Sources   []struct {
			Name     string `json:"name"`
			Requests int    `json:"requests"`
			Detail   string `json:"detail"`
		} `json:"sources"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("report: %v", err)
	}
	for _, s := range r.Sources {
		if s.Name == "kubernetes" {
			var deps, pods int
			fmt.Sscanf(s.Detail, "%d deployments, %d pods", &deps, &pods)
			return s.Requests, len(r.Workloads), pods
		}
	}
	t.Fatal("no kubernetes source")
	return 0, 0, 0
}

func TestMLHealthBenchmark(t *testing.T) {
	e := framework.Setup(t)
	benchNodesUp(t, e)

	// Everything is created up front: 20 pods, 2,000 in one namespace, 3,000 more for -A.
	small := e.Namespace(t)
	applyDeployments(t, e, small, 2)
	ns := e.Namespace(t)
	applyDeployments(t, e, ns, 200)
	big := e.Namespace(t)
	applyDeployments(t, e, big, 300)
	waitRunning(t, e, 5020, small, ns, big)

	// Warm both binaries (page cache, kubectl's discovery cache).
	timed(t, e, "kubectl", "get", "pods", "-n", ns, "-o", "json")
	_, _, smallOut := timed(t, e, "kubectl", "mlhealth", "-n", small, "-o", "json")
	smallReq, _, smallPods := requests(t, smallOut)

	var mine, theirs []time.Duration
	var req, workloads, pods int
	for range benchRuns {
		d, _, out := timed(t, e, "kubectl", "mlhealth", "-n", ns, "-o", "json")
		mine = append(mine, d)
		req, workloads, pods = requests(t, out)
		d, _, _ = timed(t, e, "kubectl", "get", "pods", "-n", ns, "-o", "json")
		theirs = append(theirs, d)
	}
	m, k := Median(mine), Median(theirs)
	ratio := float64(m) / float64(k)
	if workloads != 200 || pods != 2000 {
		t.Errorf("report covers %d workloads, %d pods; want 200, 2000", workloads, pods)
	}
	if req != smallReq {
		t.Errorf("API requests depend on the pod count: %d for %d pods, %d for %d pods", smallReq, smallPods, req, pods)
	}

	// All namespaces with 5,000 bench pods (plus whatever else runs on the platform).
	timed(t, e, "kubectl", "get", "pods", "-A", "-o", "json")
	var mineA, theirsA []time.Duration
	var rssA, rssK int64
	var reqA, podsA int
	for range benchRunsAll {
		d, _, out := timed(t, e, "kubectl", "mlhealth", "-A", "-o", "json")
		mineA = append(mineA, d)
		reqA, _, podsA = requests(t, out)
		// Peak RSS of the plugin itself (kubectl execs it, so measure the binary directly).
		_, rss, _ := timed(t, e, e.BinDir+"/kubectl-mlhealth", "-A", "-o", "json")
		rssA = max(rssA, rss)
		d, rss, _ = timed(t, e, "kubectl", "get", "pods", "-A", "-o", "json")
		theirsA = append(theirsA, d)
		rssK = max(rssK, rss)
	}
	mA, kA := Median(mineA), Median(theirsA)
	ratioA := float64(mA) / float64(kA)

	verdict := func(r float64) string {
		if r <= 0.5 {
			return "met"
		}
		return "**not met**"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	md := fmt.Sprintf(`## kubectl mlhealth

Goal: `+"`kubectl mlhealth -n NS -o json`"+` takes at most 0.5x the wall time of `+"`kubectl get pods -n NS -o json`"+`,
with a number of API requests that does not depend on the number of pods. Medians of %[1]d interleaved runs each (3 with -A), stdout
captured, on the local platform (kwok nodes; pods from Deployments of %[2]d replicas). Command: `+"`make bench`"+`
(`+"`go test -tags bench ./test/bench/ -run TestMLHealthBenchmark`"+`).

| scope | pods | kubectl mlhealth -o json | kubectl get pods -o json | ratio | goal (<= 0.5x) |
| --- | ---: | ---: | ---: | ---: | --- |
| one namespace, 200 Deployments | %[3]d | %[4]s | %[5]s | %.2[6]fx | %[7]s |
| all namespaces (-A) | %[8]d | %[9]s | %[10]s | %.2[11]fx | %[12]s |

API requests per report (from the report's kubernetes source): %[13]d with %[14]d pods, %[15]d with %[3]d pods, %[16]d with -A
and %[8]d pods (one LIST per kind in parallel, plus a GET of the namespace when one is named): constant.

Peak resident memory (VmHWM) with -A and %[8]d pods: kubectl-mlhealth %.0[17]f MiB, kubectl get pods %.0[18]f MiB.
`, benchRuns, replicasPerDep, pods, ms(m), ms(k), ratio, verdict(ratio), podsA, ms(mA), ms(kA), ratioA, verdict(ratioA),
		smallReq, smallPods, req, reqA, float64(rssA)/1024, float64(rssK)/1024)
	t.Log("\n" + md)
	if err := WriteSection("mlhealth", md); err != nil {
		t.Fatal(err)
	}
	if ratio > 0.5 {
		t.Errorf("one namespace: ratio %.2f > 0.5", ratio)
	}
}
