package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// chartPodMonitorCRD is the part of the PodMonitor CRD of the AKS metrics add-on (group
// azmonitoring.coreos.com, a copy of the Prometheus operator's) that the chart uses. The platform has no
// Prometheus operator, so the test installs it; structural pruning drops any field it does not declare,
// and the test checks that none of the chart's fields were dropped.
const chartPodMonitorCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: podmonitors.azmonitoring.coreos.com
  labels:
    mlplugins.io/e2e: "true"
spec:
  group: azmonitoring.coreos.com
  scope: Namespaced
  names: {plural: podmonitors, singular: podmonitor, kind: PodMonitor, listKind: PodMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, podMetricsEndpoints]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                podTargetLabels: {type: array, items: {type: string}}
                podMetricsEndpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
`

// chartVariant is one ci/*-values.yaml install.
type chartVariant struct {
	file     string
	replicas int
}

// TestChartInstallRestricted installs every ci variant of charts/mlapp into its own namespace that
// enforces Pod Security "restricted" and checks that the pods are admitted and become Ready, where
// they should run, and that the helm test pod is admitted too.
func TestChartInstallRestricted(t *testing.T) {
	env := framework.Setup(t)
	chart := chartForPlatform(t, env)
	chartEnsurePodMonitorCRD(t, env)
	gpuNode := chartGPUNode(t, env)

	variants := []chartVariant{
		{file: "minimal-values.yaml", replicas: 1},
		{file: "production-values.yaml", replicas: 3}, // autoscaling.minReplicas
		{file: "gpu-values.yaml", replicas: 1},
	}
	for _, v := range variants {
		t.Run(strings.TrimSuffix(v.file, "-values.yaml"), func(t *testing.T) {
			ns := chartRestrictedNamespace(t, env)
			const release = "demo"
			values := filepath.Join(env.Root, "charts", "mlapp", "ci", v.file)
			if v.file == "production-values.yaml" {
				// Azure Files is not on the platform: a pre-bound volume stands in for the dynamically provisioned share.
				chartStaticVolume(t, env, ns, release+"-mlapp-model", "azurefile-csi-premium")
			}
			res := env.Helm(t, "install", release, chart, "-n", ns, "-f", values, "--wait", "--timeout", "5m")
			if res.Code != 0 {
				chartDump(t, env, ns)
				t.Fatalf("helm install -f ci/%s: exit %d\n%s%s", v.file, res.Code, res.Stdout, res.Stderr)
			}
			for _, next := range []string{"kubectl mlhealth " + release + " -n " + ns, "kubectl mlrollout start demo-mlapp -n " + ns} {
				if !strings.Contains(res.Stdout, next) {
					t.Errorf("NOTES do not show %q:\n%s", next, res.Stdout)
				}
			}
			pods := chartWaitReady(t, env, ns, release, v.replicas)
			for _, p := range pods {
				if v.file == "gpu-values.yaml" {
					if p.Spec.NodeName != gpuNode {
						t.Errorf("GPU pod %s runs on %s, want the GPU node %s", p.Name, p.Spec.NodeName, gpuNode)
					}
					if got := p.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]; got.Value() != 1 {
						t.Errorf("GPU pod %s limits nvidia.com/gpu=%s", p.Name, got.String())
					}
				} else if p.Spec.NodeName == gpuNode {
					t.Errorf("pod %s without GPUs was scheduled on the GPU node", p.Name)
				}
			}
			if v.file == "production-values.yaml" {
				chartCheckProductionObjects(t, env, ns, release)
			}
			// The helm test hook pod is admitted by the restricted namespace (server-side dry run: kwok pods
			// never complete, so `helm test` itself would wait forever).
			hook := env.Helm(t, "get", "hooks", release, "-n", ns)
			if hook.Code != 0 || !strings.Contains(hook.Stdout, "helm.sh/hook: test") {
				t.Fatalf("helm get hooks: exit %d\n%s%s", hook.Code, hook.Stdout, hook.Stderr)
			}
			dry := chartKubectlStdin(t, env, hook.Stdout, "apply", "-n", ns, "--dry-run=server", "-f", "-")
			if dry.Code != 0 {
				t.Errorf("helm test pod refused by the restricted namespace: %s", dry.Stderr)
			}
		})
	}
}

// TestChartRestrictedNamespaceEnforces is the control for TestChartInstallRestricted: the namespaces it
// uses really refuse a pod that breaks "restricted", and the same chart with privilege escalation allowed
// is refused with the Pod Security message.
func TestChartRestrictedNamespaceEnforces(t *testing.T) {
	env := framework.Setup(t)
	ns := chartRestrictedNamespace(t, env)
	res := env.Kubectl(t, "run", "root", "-n", ns, "--image=busybox", "--dry-run=server", "--restart=Never")
	if res.Code == 0 || !strings.Contains(res.Stderr, `violates PodSecurity "restricted:latest"`) {
		t.Fatalf("a default pod was not refused: exit %d %s", res.Code, res.Stderr)
	}
	chart := chartForPlatform(t, env)
	tmpl := env.Helm(t, "template", "bad", chart, "-n", ns, "--kube-version", "1.36.0",
		"--show-only", "templates/deployment.yaml", "--set", "securityContext.allowPrivilegeEscalation=true", "--set", "serviceAccount.create=false")
	if tmpl.Code != 0 {
		t.Fatalf("helm template: %s", tmpl.Stderr)
	}
	// A Deployment is admitted (with a warning); its pods would not be. Check the pod template as a pod.
	pod := chartPodFromDeployment(t, tmpl.Stdout)
	dry := chartKubectlStdin(t, env, pod, "apply", "-n", ns, "--dry-run=server", "-f", "-")
	if dry.Code == 0 || !strings.Contains(dry.Stderr, "allowPrivilegeEscalation != false") {
		t.Fatalf("a pod allowing privilege escalation was not refused: exit %d %s", dry.Code, dry.Stderr)
	}
}

// TestChartUpgradeAndUninstall upgrades a release with changed values (replicas, model version, image
// tag, PDB and NetworkPolicy on, then PDB off again) and uninstalls it, checking the namespace after each step.
func TestChartUpgradeAndUninstall(t *testing.T) {
	env := framework.Setup(t)
	chart := chartForPlatform(t, env)
	ns := chartRestrictedNamespace(t, env)
	const release = "up"
	ctx := context.Background()
	cs := env.Clientset(t)
	minimal := filepath.Join(env.Root, "charts", "mlapp", "ci", "minimal-values.yaml")

	if res := env.Helm(t, "install", release, chart, "-n", ns, "-f", minimal, "--wait", "--timeout", "5m"); res.Code != 0 {
		t.Fatalf("helm install: %s%s", res.Stdout, res.Stderr)
	}
	chartWaitReady(t, env, ns, release, 1)
	svcBefore, err := cs.CoreV1().Services(ns).Get(ctx, "up-mlapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	res := env.Helm(t, "upgrade", release, chart, "-n", ns, "-f", minimal, "--wait", "--timeout", "5m",
		"--set", "replicaCount=3", "--set", "model.version=2", "--set", "image.tag=1.1.0",
		"--set", "podDisruptionBudget.enabled=true", "--set", "networkPolicy.enabled=true")
	if res.Code != 0 {
		chartDump(t, env, ns)
		t.Fatalf("helm upgrade: %s%s", res.Stdout, res.Stderr)
	}
	pods := chartWaitReady(t, env, ns, release, 3)
	for _, p := range pods {
		if got := p.Labels["mlapp.aks-mlops.io/model-version"]; got != "2" {
			t.Errorf("pod %s model-version label %q, want 2", p.Name, got)
		}
		if img := p.Spec.Containers[0].Image; img != "contoso.azurecr.io/mlapp/model-server:1.1.0" {
			t.Errorf("pod %s image %s", p.Name, img)
		}
	}
	svcAfter, err := cs.CoreV1().Services(ns).Get(ctx, "up-mlapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(svcAfter.Spec.Selector) != fmt.Sprint(svcBefore.Spec.Selector) || svcAfter.Spec.ClusterIP != svcBefore.Spec.ClusterIP {
		t.Errorf("Service changed across the upgrade: %v %s -> %v %s", svcBefore.Spec.Selector, svcBefore.Spec.ClusterIP, svcAfter.Spec.Selector, svcAfter.Spec.ClusterIP)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "up-mlapp", metav1.GetOptions{}); err != nil {
		t.Errorf("PDB after upgrade: %v", err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "up-mlapp", metav1.GetOptions{}); err != nil {
		t.Errorf("NetworkPolicy after upgrade: %v", err)
	}
	// helm upgrade leaves old ReplicaSets scaled to zero, and no pod of the old version.
	framework.Eventually(t, 2*time.Minute, func() (bool, error) {
		all, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=up,app.kubernetes.io/name=mlapp"})
		if err != nil {
			return false, err
		}
		return len(all.Items) == 3, nil
	})

	res = env.Helm(t, "upgrade", release, chart, "-n", ns, "--reuse-values", "--set", "podDisruptionBudget.enabled=false", "--wait", "--timeout", "5m")
	if res.Code != 0 {
		t.Fatalf("helm upgrade (PDB off): %s%s", res.Stdout, res.Stderr)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "up-mlapp", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("PDB still there after turning it off: %v", err)
	}
	if h := env.Helm(t, "history", release, "-n", ns); h.Code != 0 || strings.Count(h.Stdout, "\n") != 4 {
		t.Errorf("helm history: want 3 revisions:\n%s%s", h.Stdout, h.Stderr)
	}

	if res := env.Helm(t, "uninstall", release, "-n", ns, "--wait", "--timeout", "4m"); res.Code != 0 {
		t.Fatalf("helm uninstall: %s%s", res.Stdout, res.Stderr)
	}
	chartExpectEmpty(t, env, ns, nil)
}

// TestChartUninstallKeepsModelClaim uninstalls the production variant: everything goes but the claim
// holding the model files (helm.sh/resource-policy: keep), which a reinstall adopts again.
func TestChartUninstallKeepsModelClaim(t *testing.T) {
	env := framework.Setup(t)
	chart := chartForPlatform(t, env)
	chartEnsurePodMonitorCRD(t, env)
	ns := chartRestrictedNamespace(t, env)
	const release = "keep"
	chartStaticVolume(t, env, ns, release+"-mlapp-model", "azurefile-csi-premium")
	values := filepath.Join(env.Root, "charts", "mlapp", "ci", "production-values.yaml")
	if res := env.Helm(t, "install", release, chart, "-n", ns, "-f", values, "--wait", "--timeout", "5m"); res.Code != 0 {
		chartDump(t, env, ns)
		t.Fatalf("helm install: %s%s", res.Stdout, res.Stderr)
	}
	chartWaitReady(t, env, ns, release, 3)
	if res := env.Helm(t, "uninstall", release, "-n", ns, "--wait", "--timeout", "4m"); res.Code != 0 {
		t.Fatalf("helm uninstall: %s%s", res.Stdout, res.Stderr)
	}
	if !strings.Contains(env.Kubectl(t, "get", "pvc", "-n", ns, "-o", "name").Stdout, "persistentvolumeclaim/keep-mlapp-model") {
		t.Errorf("the model claim was deleted by helm uninstall")
	}
	chartExpectEmpty(t, env, ns, []string{"persistentvolumeclaim/keep-mlapp-model"})
	if res := env.Helm(t, "install", release, chart, "-n", ns, "-f", values, "--wait", "--timeout", "5m"); res.Code != 0 {
		t.Fatalf("reinstall over the kept claim: %s%s", res.Stdout, res.Stderr)
	}
	chartWaitReady(t, env, ns, release, 3)
}

// chartForPlatform returns the chart directory to install. The platform's apiserver is built from source;
// when it reports no release version (v0.0.0-master) Helm cannot check the chart's kubeVersion against
// it, so a copy without kubeVersion is installed and the test says so.
func chartForPlatform(t *testing.T, env *framework.Env) string {
	t.Helper()
	dir := filepath.Join(env.Root, "charts", "mlapp")
	res := env.Kubectl(t, "version", "-o", "json")
	var v struct {
		ServerVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil {
		t.Fatalf("kubectl version -o json: %v\n%s%s", err, res.Stdout, res.Stderr)
	}
	if regexp.MustCompile(`^v1\.\d+\.\d+`).MatchString(v.ServerVersion.GitVersion) {
		return dir
	}
	t.Logf("WARNING: the platform's apiserver reports version %q; installing a copy of the chart without kubeVersion", v.ServerVersion.GitVersion)
	tmp := filepath.Join(t.TempDir(), "mlapp")
	if err := os.CopyFS(tmp, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	chartYAML := filepath.Join(tmp, "Chart.yaml")
	b, err := os.ReadFile(chartYAML)
	if err != nil {
		t.Fatal(err)
	}
	stripped := regexp.MustCompile(`(?m)^kubeVersion:.*\n`).ReplaceAll(b, nil)
	if err := os.WriteFile(chartYAML, stripped, 0o644); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// chartRestrictedNamespace creates a test namespace that enforces Pod Security "restricted".
func chartRestrictedNamespace(t *testing.T, env *framework.Env) string {
	t.Helper()
	ns := env.Namespace(t)
	res := env.Kubectl(t, "label", "namespace", ns, "--overwrite",
		"pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
		"pod-security.kubernetes.io/warn=restricted", "pod-security.kubernetes.io/audit=restricted")
	if res.Code != 0 {
		t.Fatalf("label namespace: %s", res.Stderr)
	}
	return ns
}

// chartEnsurePodMonitorCRD installs the PodMonitor CRD when the platform lacks it, and removes it at cleanup.
func chartEnsurePodMonitorCRD(t *testing.T, env *framework.Env) {
	t.Helper()
	if env.Kubectl(t, "get", "crd", "podmonitors.azmonitoring.coreos.com").Code == 0 {
		return
	}
	env.Apply(t, "", chartPodMonitorCRD)
	t.Cleanup(func() {
		if out, err := env.Command("kubectl", "delete", "crd", "podmonitors.azmonitoring.coreos.com", "--ignore-not-found", "--wait=false").CombinedOutput(); err != nil {
			t.Logf("delete PodMonitor CRD: %v %s", err, out)
		}
	})
	if res := env.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/podmonitors.azmonitoring.coreos.com"); res.Code != 0 {
		t.Fatalf("PodMonitor CRD not established: %s", res.Stderr)
	}
}

// chartGPUNode adds a kwok node like an AKS GPU pool node (label kubernetes.azure.com/accelerator=nvidia, taint
// sku=gpu:NoSchedule, 4 nvidia.com/gpu) and deletes it at cleanup. It returns the node name.
func chartGPUNode(t *testing.T, env *framework.Env) string {
	t.Helper()
	cs := env.Clientset(t)
	ctx := context.Background()
	name := "e2e-gpu-" + chartRandom()
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("24"), corev1.ResourceMemory: resource.MustParse("220Gi"),
		corev1.ResourcePods: resource.MustParse("110"), "nvidia.com/gpu": resource.MustParse("4"),
		corev1.ResourceEphemeralStorage: resource.MustParse("256Gi"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok",
				"kubernetes.azure.com/accelerator": "nvidia", "kubernetes.azure.com/agentpool": "gpupool",
				"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4", "topology.kubernetes.io/zone": "local-1",
				"mlplugins.io/e2e": "true",
			},
		},
		Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: "sku", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create GPU node: %v", err)
	}
	t.Cleanup(func() {
		if err := cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete GPU node %s: %v", name, err)
		}
	})
	framework.Eventually(t, 2*time.Minute, func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				gpus := n.Status.Allocatable["nvidia.com/gpu"]
				return gpus.Value() == 4, nil
			}
		}
		return false, nil
	})
	return name
}

// chartStaticVolume creates a PersistentVolume pre-bound to claim ns/claim in storageClass (deleted at cleanup).
func chartStaticVolume(t *testing.T, env *framework.Env, ns, claim, storageClass string) {
	t.Helper()
	cs := env.Clientset(t)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-model-" + chartRandom(), Labels: map[string]string{"mlplugins.io/e2e": "true"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              storageClass,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				NFS: &corev1.NFSVolumeSource{Server: "models.file.core.windows.net", Path: "/models/mlapp", ReadOnly: true},
			},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PV: %v", err)
	}
	t.Cleanup(func() {
		if err := cs.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete PV %s: %v", pv.Name, err)
		}
	})
}

// chartWaitReady waits until exactly want pods of the release exist and all are Ready, and returns them.
func chartWaitReady(t *testing.T, env *framework.Env, ns, release string, want int) []corev1.Pod {
	t.Helper()
	cs := env.Clientset(t)
	var pods []corev1.Pod
	sel := "app.kubernetes.io/name=mlapp,app.kubernetes.io/instance=" + release
	// Generous: on a loaded platform the HPA controller can take minutes to raise a Deployment to minReplicas.
	framework.Eventually(t, 6*time.Minute, func() (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		if len(pods) != want {
			return false, fmt.Errorf("%d pods, want %d", len(pods), want)
		}
		for _, p := range pods {
			if !chartPodReady(p) {
				return false, fmt.Errorf("pod %s not Ready (phase %s)", p.Name, p.Status.Phase)
			}
		}
		return true, nil
	})
	return pods
}

func chartPodReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// chartCheckProductionObjects checks the objects only the production variant has.
func chartCheckProductionObjects(t *testing.T, env *framework.Env, ns, release string) {
	t.Helper()
	for _, obj := range []string{"hpa", "pdb", "networkpolicy", "ingress", "podmonitors.azmonitoring.coreos.com", "serviceaccount"} {
		if res := env.Kubectl(t, "get", obj, release+"-mlapp", "-n", ns); res.Code != 0 {
			t.Errorf("%s %s-mlapp: %s", obj, release, res.Stderr)
		}
	}
	pvc := env.Kubectl(t, "get", "pvc", release+"-mlapp-model", "-n", ns, "-o", "jsonpath={.status.phase}")
	if pvc.Stdout != "Bound" {
		t.Errorf("model claim is %q, want Bound (%s)", pvc.Stdout, pvc.Stderr)
	}
	// Nothing of the PodMonitor spec was pruned by the CRD schema.
	pm := env.Kubectl(t, "get", "podmonitors.azmonitoring.coreos.com", release+"-mlapp", "-n", ns, "-o", "jsonpath={.spec.podMetricsEndpoints[0].port} {.spec.podMetricsEndpoints[0].path} {.spec.podTargetLabels[3]}")
	if pm.Stdout != "http /metrics mlapp.aks-mlops.io/model" {
		t.Errorf("PodMonitor spec: %q %s", pm.Stdout, pm.Stderr)
	}
	sa := env.Kubectl(t, "get", "serviceaccount", release+"-mlapp", "-n", ns, "-o", `jsonpath={.metadata.annotations.azure\.workload\.identity/client-id} {.automountServiceAccountToken}`)
	if sa.Stdout != "00000000-0000-0000-0000-000000000001 false" {
		t.Errorf("ServiceAccount: %q %s", sa.Stdout, sa.Stderr)
	}
}

// chartExpectEmpty checks that only what a fresh namespace holds (and keep) is left after an uninstall.
func chartExpectEmpty(t *testing.T, env *framework.Env, ns string, keep []string) {
	t.Helper()
	allowed := map[string]bool{"serviceaccount/default": true, "configmap/kube-root-ca.crt": true}
	for _, k := range keep {
		allowed[k] = true
	}
	framework.Eventually(t, 4*time.Minute, func() (bool, error) {
		res := env.Kubectl(t, "get", "all,configmap,secret,serviceaccount,pvc,pdb,networkpolicy,ingress,hpa,podmonitors.azmonitoring.coreos.com",
			"-n", ns, "-o", "name", "--ignore-not-found")
		if res.Code != 0 && !strings.Contains(res.Stderr, "the server doesn't have a resource type") {
			return false, fmt.Errorf("kubectl get: %s", res.Stderr)
		}
		var left []string
		for _, l := range strings.Fields(res.Stdout) {
			if !allowed[l] {
				left = append(left, l)
			}
		}
		if len(left) > 0 {
			return false, fmt.Errorf("left in the namespace: %v", left)
		}
		return true, nil
	})
}

// chartPodFromDeployment turns a rendered Deployment into a Pod with its template, for a dry-run admission.
func chartPodFromDeployment(t *testing.T, deployment string) string {
	t.Helper()
	i := strings.Index(deployment, "\n    spec:\n")
	if i < 0 {
		t.Fatalf("no pod template in:\n%s", deployment)
	}
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Pod\nmetadata:\n  name: escalation\nspec:\n")
	for _, l := range strings.Split(deployment[i+len("\n    spec:\n"):], "\n") {
		b.WriteString(strings.TrimPrefix(l, "    ") + "\n")
	}
	return b.String()
}

func chartKubectlStdin(t *testing.T, env *framework.Env, stdin string, args ...string) framework.Result {
	t.Helper()
	cmd := env.Command("kubectl", args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := framework.Result{Stdout: out.String(), Stderr: errOut.String()}
	if err != nil {
		res.Code = cmd.ProcessState.ExitCode()
		if res.Code < 0 {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
	}
	t.Logf("$ kubectl %s  (exit %d)", strings.Join(args, " "), res.Code)
	return res
}

// chartDump logs the namespace's state after a failure.
func chartDump(t *testing.T, env *framework.Env, ns string) {
	t.Helper()
	t.Logf("namespace %s:\n%s", ns, env.Kubectl(t, "get", "all,pvc,events", "-n", ns, "-o", "wide").Stdout)
}

func chartRandom() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestChartServiceSelectsCanary checks the chart's side of the canary contract on a real cluster: a
// canary made the way kubectl mlrollout makes it (the stable pod template, a new image, plus the label
// rollouts.mlplugins.io/track=canary) is admitted in the restricted namespace, and the chart's Service
// sends traffic to both tracks (its EndpointSlices hold stable and canary pods).
func TestChartServiceSelectsCanary(t *testing.T) {
	env := framework.Setup(t)
	chart := chartForPlatform(t, env)
	ns := chartRestrictedNamespace(t, env)
	ctx := context.Background()
	cs := env.Clientset(t)
	const release = "cn"
	minimal := filepath.Join(env.Root, "charts", "mlapp", "ci", "minimal-values.yaml")
	if res := env.Helm(t, "install", release, chart, "-n", ns, "-f", minimal, "--set", "replicaCount=2", "--wait", "--timeout", "5m"); res.Code != 0 {
		t.Fatalf("helm install: %s%s", res.Stdout, res.Stderr)
	}
	stable, err := cs.AppsV1().Deployments(ns).Get(ctx, "cn-mlapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	canary := stable.DeepCopy()
	canary.ObjectMeta = metav1.ObjectMeta{Name: "cn-mlapp-canary", Namespace: ns, Labels: stable.Labels}
	canary.Status = appsv1.DeploymentStatus{}
	one := int32(1)
	canary.Spec.Replicas = &one
	canary.Spec.Selector = stable.Spec.Selector.DeepCopy()
	canary.Spec.Selector.MatchLabels["rollouts.mlplugins.io/track"] = "canary"
	canary.Spec.Template.Labels["rollouts.mlplugins.io/track"] = "canary"
	canary.Spec.Template.Spec.Containers[0].Image = "contoso.azurecr.io/mlapp/model-server:2.0.0"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, canary, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create canary: %v", err)
	}
	framework.Eventually(t, 4*time.Minute, func() (bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=cn-mlapp"})
		if err != nil {
			return false, err
		}
		var stablePods, canaryPods int
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.TargetRef == nil || e.Conditions.Ready == nil || !*e.Conditions.Ready {
					continue
				}
				if strings.HasPrefix(e.TargetRef.Name, "cn-mlapp-canary-") {
					canaryPods++
				} else {
					stablePods++
				}
			}
		}
		if stablePods != 2 || canaryPods != 1 {
			return false, fmt.Errorf("service endpoints: %d stable, %d canary; want 2 and 1", stablePods, canaryPods)
		}
		return true, nil
	})
}

// TestChartMlrolloutCanary runs the real `kubectl mlrollout` against the chart's Deployment in a
// restricted namespace: at the 50% pause the canary pods are admitted and Ready and the chart's Service
// sends traffic to both tracks; `promote` then rolls the new image into the stable Deployment.
func TestChartMlrolloutCanary(t *testing.T) {
	env := framework.Setup(t)
	chart := chartForPlatform(t, env)
	ns := chartRestrictedNamespace(t, env)
	ctx := context.Background()
	cs := env.Clientset(t)
	const release, newImage = "ro", "contoso.azurecr.io/mlapp/model-server:1.1.0"
	minimal := filepath.Join(env.Root, "charts", "mlapp", "ci", "minimal-values.yaml")
	if res := env.Helm(t, "install", release, chart, "-n", ns, "-f", minimal, "--set", "replicaCount=4", "--wait", "--timeout", "5m"); res.Code != 0 {
		t.Fatalf("helm install: %s%s", res.Stdout, res.Stderr)
	}
	res := env.Kubectl(t, "mlrollout", "start", "ro-mlapp", "-n", ns, "--image", "model-server="+newImage, "--steps", "50,pause,100", "--timeout", "3m")
	if res.Code != 4 {
		t.Fatalf("mlrollout start: exit %d, want 4 (paused)\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	endpoints := func() (stable, canary int, err error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=ro-mlapp"})
		if err != nil {
			return 0, 0, err
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, 0, err
		}
		track := map[string]string{}
		for _, p := range pods.Items {
			track[p.Name] = p.Labels["rollouts.mlplugins.io/track"]
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.TargetRef == nil || e.Conditions.Ready == nil || !*e.Conditions.Ready {
					continue
				}
				if track[e.TargetRef.Name] == "canary" {
					canary++
				} else {
					stable++
				}
			}
		}
		return stable, canary, nil
	}
	framework.Eventually(t, 2*time.Minute, func() (bool, error) {
		s, c, err := endpoints()
		if err != nil {
			return false, err
		}
		if s != 2 || c != 2 {
			return false, fmt.Errorf("service endpoints at 50%%: %d stable, %d canary; want 2 and 2", s, c)
		}
		return true, nil
	})
	canaryPods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "rollouts.mlplugins.io/track=canary"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range canaryPods.Items {
		if p.Spec.Containers[0].Image != newImage || !chartPodReady(p) {
			t.Errorf("canary pod %s: image %s, ready %v", p.Name, p.Spec.Containers[0].Image, chartPodReady(p))
		}
	}
	if res := env.Kubectl(t, "mlrollout", "promote", "ro-mlapp", "-n", ns, "--timeout", "3m"); res.Code != 0 {
		t.Fatalf("mlrollout promote: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	pods := chartWaitReady(t, env, ns, release, 4)
	for _, p := range pods {
		if p.Spec.Containers[0].Image != newImage || p.Labels["rollouts.mlplugins.io/track"] != "" {
			t.Errorf("after promote, pod %s: image %s, track %q", p.Name, p.Spec.Containers[0].Image, p.Labels["rollouts.mlplugins.io/track"])
		}
	}
	framework.Eventually(t, 2*time.Minute, func() (bool, error) {
		s, c, err := endpoints()
		return err == nil && s == 4 && c == 0, err
	})
}
