package examples

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/aks-mlops/mlplugins/pkg/shared/kube"
	mlrollout "github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/cmd"
)

// planWithMlrollout runs `kubectl mlrollout plan` (which changes nothing) on a fake cluster holding the
// chart's Deployment, so that planFile goes through mlrollout's own strict plan parser.
func planWithMlrollout(t *testing.T, planFile string) (string, error) {
	t.Helper()
	replicas := int32(4)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mlapp", Namespace: "ml"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "model-server", Image: "mlappacr.azurecr.io/release/mlapp/model-server:v1"},
			}}},
		},
	}
	var out, errOut bytes.Buffer
	f := mlrollout.NewFactory(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	f.Clients = &kube.Clients{Kube: fake.NewClientset(d), Namespace: "ml"}
	cmd := mlrollout.NewCmdPlan(f)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"mlapp", "--image", "model-server=" + computed["NEW_IMAGE"], "--plan", planFile, "-o", "json"})
	err := cmd.Execute()
	return out.String(), err
}

// TestRolloutPlanParsesWithMlrollout checks examples/rollout-plan.yaml with mlrollout's parser and the
// shape the pipelines and the demo rely on: three steps ending at 100%, and the three checks.
func TestRolloutPlanParsesWithMlrollout(t *testing.T) {
	out, err := planWithMlrollout(t, filepath.Join(repoRoot(t), "examples", "rollout-plan.yaml"))
	if err != nil {
		t.Fatalf("kubectl mlrollout plan rejects examples/rollout-plan.yaml: %v", err)
	}
	var v struct {
		Steps []struct {
			Step   map[string]any `json:"step"`
			Target map[string]any `json:"target"`
		} `json:"steps"`
		Checks []struct {
			Name       string         `json:"name"`
			Prometheus map[string]any `json:"prometheus"`
			HTTP       map[string]any `json:"http"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("plan on a 4-replica Deployment:\n%s", out)
	var names []string
	for _, c := range v.Checks {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "error-rate,p95-vs-stable,predict" {
		t.Errorf("checks %v", names)
	}
	if len(v.Steps) != 3 {
		t.Errorf("%d steps, want 3", len(v.Steps))
	}
	for _, c := range v.Checks {
		if c.Name == "predict" {
			cmp, _ := c.HTTP["compareWithStable"].(map[string]any)
			if c.HTTP["path"] != "/v1/models/mlapp:predict" || cmp["jsonPath"] != "$.predictions" || cmp["tolerance"] != 0.01 {
				t.Errorf("predict check %v", c.HTTP)
			}
		}
	}
}

// TestPlanParserIsStrict proves the check above is not a rubber stamp: the same plan with an unknown
// field is refused, naming the line.
func TestPlanParserIsStrict(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "rollout-plan.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "    maxRatio: 1.5", "    maxRatio: 1.5\n    maxRatoi: 2", 1)
	file := filepath.Join(t.TempDir(), "bad-plan.yaml")
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = planWithMlrollout(t, file)
	if err == nil || !strings.Contains(err.Error(), "line ") || !strings.Contains(err.Error(), "maxRatoi") {
		t.Errorf("misspelt field: error %v, want one naming the line and the field", err)
	}
}
