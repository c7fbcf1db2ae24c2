package e2e

import (
	"strings"
	"testing"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// TestMLHealthShowsMLRolloutCanary runs the real `kubectl mlrollout start` until it pauses at a
// manual step, then expects the canary under its stable Deployment in `kubectl mlhealth`.
func TestMLHealthShowsMLRolloutCanary(t *testing.T) {
	e := framework.Setup(t)
	ns := e.Namespace(t)
	e.Apply(t, ns, deployment("canaried", 4, "example.com/canaried:v1", nil, ""))
	if r := mlhealth(t, e, nil, "canaried", "-n", ns, "--wait-healthy", "--timeout", "2m", "--interval", "1s"); r.Code != 0 {
		t.Fatalf("wait: exit %d %s", r.Code, r.Stderr)
	}
	start := e.Run(t, "kubectl", "mlrollout", "start", "canaried", "-n", ns, "--image", "model=example.com/canaried:v2",
		"--steps", "25,pause,100", "--timeout", "3m")
	if start.Code != 4 {
		t.Fatalf("mlrollout start: exit %d, want 4 (paused)\n%s\n%s", start.Code, start.Stdout, start.Stderr)
	}
	t.Cleanup(func() { e.Run(t, "kubectl", "mlrollout", "abort", "canaried", "-n", ns) })

	res := mlhealth(t, e, nil, "canaried", "-n", ns, "-o", "json")
	r := decodeReport(t, res.Stdout)
	if len(r.Workloads) != 1 {
		t.Fatalf("want the canary grouped with its stable Deployment, got %d workloads:\n%s", len(r.Workloads), res.Stdout)
	}
	w := r.Workloads[0]
	c := w.Canary
	if c == nil || c.Name != "canaried-canary" || c.Replicas.Desired != 1 || c.Step == nil || *c.Step != 2 || c.Steps == nil || *c.Steps != 3 ||
		c.Weight == nil || *c.Weight != 25 || c.Phase == "" {
		t.Fatalf("canary = %+v\n%s", c, res.Stdout)
	}
	if w.Images[0] != "example.com/canaried:v1" {
		t.Errorf("stable images = %v", w.Images)
	}
	table := mlhealth(t, e, nil, "canaried", "-n", ns)
	for _, want := range []string{"└ canaried-canary", "Canary " + ns + "/canaried-canary of canaried: step 2/3, weight 25%, " + c.Phase} {
		if !strings.Contains(table.Stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, table.Stdout)
		}
	}
}
