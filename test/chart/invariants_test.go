package chart

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// objects holds one render, decoded.
type objects struct {
	raw        map[string]map[string]any // "Kind/name" -> object
	deployment appsv1.Deployment
	service    corev1.Service
	testPod    corev1.Pod
	pdb        *policyv1.PodDisruptionBudget
}

func decodeRender(t *testing.T, out map[string]string) objects {
	t.Helper()
	o := objects{raw: map[string]map[string]any{}}
	for name, body := range out {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		for _, doc := range strings.Split(body, "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var m map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
				t.Fatalf("%s: not strict YAML: %v", name, err)
			}
			if m == nil {
				continue
			}
			kind, _ := m["kind"].(string)
			meta, _ := m["metadata"].(map[string]any)
			key := fmt.Sprintf("%s/%v", kind, meta["name"])
			if _, dup := o.raw[key]; dup {
				t.Fatalf("%s rendered twice", key)
			}
			o.raw[key] = m
			var target any
			switch kind {
			case "Deployment":
				target = &o.deployment
			case "Service":
				target = &o.service
			case "Pod":
				target = &o.testPod
			case "PodDisruptionBudget":
				o.pdb = &policyv1.PodDisruptionBudget{}
				target = o.pdb
			default:
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
				t.Fatalf("%s: does not decode as a %s: %v", name, kind, err)
			}
		}
	}
	return o
}

// TestRenderedInvariants checks, for the defaults and every ci variant, what the chart promises:
// Pod Security restricted, the selector contract with canaries, labels, read-only model volume,
// token automount off, and images listed in Chart.yaml.
func TestRenderedInvariants(t *testing.T) {
	c := loadChart(t)
	variants := map[string]map[string]any{"default": {}}
	for _, f := range ciValueFiles(t) {
		variants[f] = readValuesFile(t, filepath.Join(chartDir(t), "ci", f))
	}
	for name, vals := range variants {
		t.Run(name, func(t *testing.T) {
			out, err := renderValues(t, c, vals)
			if err != nil {
				t.Fatal(err)
			}
			o := decodeRender(t, out)
			d := o.deployment
			if d.Name == "" || o.service.Name == "" || o.testPod.Name == "" {
				t.Fatalf("want a Deployment, a Service and a test Pod, got %v", keys(o.raw))
			}
			wantSelector := map[string]string{"app.kubernetes.io/name": "mlapp", "app.kubernetes.io/instance": releaseName}
			assertMapEqual(t, "Service selector", o.service.Spec.Selector, wantSelector)
			assertMapEqual(t, "Deployment selector", d.Spec.Selector.MatchLabels, wantSelector)
			if len(d.Spec.Selector.MatchExpressions) != 0 {
				t.Errorf("Deployment selector has expressions %v", d.Spec.Selector.MatchExpressions)
			}
			if o.pdb != nil {
				assertMapEqual(t, "PDB selector", o.pdb.Spec.Selector.MatchLabels, wantSelector)
			}
			// A canary made by kubectl mlrollout: the same template plus a track label. The Service must select it.
			canary := map[string]string{"rollouts.mlplugins.io/track": "canary"}
			for k, v := range d.Spec.Template.Labels {
				canary[k] = v
			}
			for k, v := range o.service.Spec.Selector {
				if canary[k] != v {
					t.Errorf("Service selector %s=%s does not select canary pods", k, v)
				}
			}
			for k := range o.service.Spec.Selector {
				if strings.Contains(k, "version") || k == "pod-template-hash" {
					t.Errorf("Service selects on %s, which differs between stable and canary", k)
				}
			}
			// The test pod must not be mistaken for an app pod.
			if matches(o.service.Spec.Selector, o.testPod.Labels) {
				t.Errorf("Service selector matches the helm test pod")
			}
			for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
				"app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart",
				"mlapp.aks-mlops.io/model", "mlapp.aks-mlops.io/model-version"} {
				if d.Spec.Template.Labels[l] == "" || d.Labels[l] == "" {
					t.Errorf("label %s missing on the Deployment or its pods", l)
				}
			}
			assertRestricted(t, "Deployment", d.Spec.Template.Spec)
			assertRestricted(t, "test Pod", o.testPod.Spec)
			if o.testPod.Annotations["helm.sh/hook"] != "test" {
				t.Errorf("test pod is not a helm test hook")
			}
			if a := d.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
				t.Errorf("automountServiceAccountToken is not false")
			}
			for _, ct := range d.Spec.Template.Spec.Containers {
				for _, m := range ct.VolumeMounts {
					if m.Name == "model" && !m.ReadOnly {
						t.Errorf("model volume is mounted read-write in %s", ct.Name)
					}
				}
				if ct.StartupProbe == nil || ct.ReadinessProbe == nil || ct.LivenessProbe == nil {
					t.Errorf("container %s lacks a startup, readiness or liveness probe", ct.Name)
				}
				if ct.Lifecycle == nil || ct.Lifecycle.PreStop == nil || ct.Lifecycle.PreStop.Sleep == nil {
					t.Errorf("container %s has no preStop sleep", ct.Name)
				}
			}
			gpu := d.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
			if !gpu.IsZero() {
				if d.Spec.Template.Spec.NodeSelector["kubernetes.azure.com/accelerator"] != "nvidia" {
					t.Errorf("GPU pods lack the AKS GPU node selector")
				}
				tolerated := false
				for _, tol := range d.Spec.Template.Spec.Tolerations {
					tolerated = tolerated || (tol.Key == "sku" && tol.Value == "gpu" && tol.Effect == corev1.TaintEffectNoSchedule)
				}
				if !tolerated {
					t.Errorf("GPU pods do not tolerate sku=gpu:NoSchedule")
				}
			}
		})
	}
}

// TestChartImagesAnnotation checks that artifacthub.io/images lists exactly the images the chart uses
// with its defaults (helm acrpush reads it), with every optional container turned on.
func TestChartImagesAnnotation(t *testing.T) {
	c := loadChart(t)
	var listed []struct{ Name, Image string }
	if err := yaml.Unmarshal([]byte(c.Metadata.Annotations["artifacthub.io/images"]), &listed); err != nil {
		t.Fatalf("artifacthub.io/images: %v", err)
	}
	out, err := renderValues(t, c, map[string]any{"modelFetch": map[string]any{"enabled": true, "sourceUrl": "https://a.blob.core.windows.net/m/"}})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, body := range out {
		for _, line := range strings.Split(body, "\n") {
			if s := strings.TrimSpace(line); strings.HasPrefix(s, "image: ") {
				used[strings.Trim(strings.TrimPrefix(s, "image: "), `"`)] = true
			}
		}
	}
	for _, l := range listed {
		if !used[l.Image] {
			t.Errorf("artifacthub.io/images lists %s, which the chart does not use", l.Image)
		}
		delete(used, l.Image)
	}
	for img := range used {
		t.Errorf("image %s is used but not listed in artifacthub.io/images", img)
	}
}

// TestTemplateGuards checks the value combinations a schema cannot express, refused by the templates.
func TestTemplateGuards(t *testing.T) {
	c := loadChart(t)
	cases := []struct{ name, values, want string }{
		{"max below min replicas", "autoscaling:\n  enabled: true\n  minReplicas: 5\n  maxReplicas: 2", "autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas"},
		{"grace period too short", "terminationGracePeriodSeconds: 10\npreStopSleepSeconds: 10", "terminationGracePeriodSeconds must exceed preStopSleepSeconds by more than 5 seconds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := renderValues(t, c, vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error %q, got %v", tc.want, err)
			}
		})
	}
}

// assertRestricted checks the Pod Security "restricted" rules on a pod spec.
func assertRestricted(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod runAsNonRoot is not true", what)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", what)
	}
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Errorf("%s: runs as root", what)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: uses host namespaces", what)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s", what, v.Name)
		}
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, ct := range all {
		sc := ct.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", what, ct.Name)
			continue
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation is not false", what, ct.Name)
		case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0:
			t.Errorf("%s/%s: capabilities are not drop [ALL]", what, ct.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: root filesystem is writable", what, ct.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s/%s: privileged", what, ct.Name)
		}
		if len(ct.Ports) > 0 && ct.Ports[0].HostPort != 0 {
			t.Errorf("%s/%s: host port", what, ct.Name)
		}
		if ct.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: no memory limit", what, ct.Name)
		}
	}
}

func assertMapEqual(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	g, _ := yaml.Marshal(got)
	w, _ := yaml.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s:\n%s\nwant:\n%s", what, g, w)
	}
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestPodMonitorGroup checks both PodMonitor API groups, and that NOTES warn when AKS would not read it.
func TestPodMonitorGroup(t *testing.T) {
	c := loadChart(t)
	for group, warn := range map[string]bool{"azmonitoring.coreos.com": false, "monitoring.coreos.com": true} {
		out, err := renderValues(t, c, map[string]any{"metrics": map[string]any{"podMonitor": map[string]any{"enabled": true, "apiGroup": group}}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(strings.TrimSpace(out["mlapp/templates/podmonitor.yaml"]), "apiVersion: "+group+"/v1\nkind: PodMonitor\n") {
			t.Errorf("PodMonitor for %s:\n%s", group, out["mlapp/templates/podmonitor.yaml"])
		}
		if got := strings.Contains(out["mlapp/templates/NOTES.txt"], "only reads PodMonitors of group azmonitoring.coreos.com"); got != warn {
			t.Errorf("group %s: NOTES warning shown=%v, want %v", group, got, warn)
		}
	}
}

// TestNetworkPolicyAdmitsAzureMonitor checks the NetworkPolicy's peers: the release namespace, the
// allowed namespaces and the Azure Monitor metrics agent pods.
func TestNetworkPolicyAdmitsAzureMonitor(t *testing.T) {
	out, err := renderValues(t, loadChart(t), map[string]any{"networkPolicy": map[string]any{"enabled": true, "allowedNamespaces": []any{"app-routing-system"}}})
	if err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(out["mlapp/templates/networkpolicy.yaml"]), &np); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.From {
			b, _ := yaml.Marshal(p)
			peers = append(peers, strings.ReplaceAll(string(b), "\n", " "))
		}
		if len(rule.Ports) != 1 || rule.Ports[0].Port.String() != "http" {
			t.Errorf("rule ports %v, want only http", rule.Ports)
		}
	}
	joined := strings.Join(peers, "\n")
	for _, w := range []string{"podSelector: {}", "- app-routing-system", "rsName: ama-metrics", "dsName: ama-metrics-node", "kubernetes.io/metadata.name: kube-system"} {
		if !strings.Contains(joined, w) {
			t.Errorf("NetworkPolicy peers lack %q:\n%s", w, joined)
		}
	}
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
	}
}

// TestNumbersFromSetFlags checks that what `--set model.version=2 --set image.tag=3` passes (numbers)
// is accepted and rendered as strings.
func TestNumbersFromSetFlags(t *testing.T) {
	out, err := renderValues(t, loadChart(t), map[string]any{"model": map[string]any{"version": 2}, "image": map[string]any{"tag": 3}})
	if err != nil {
		t.Fatal(err)
	}
	d := out["mlapp/templates/deployment.yaml"]
	for _, w := range []string{`mlapp.aks-mlops.io/model-version: "2"`, `app.kubernetes.io/version: "3"`, `image: "contoso.azurecr.io/mlapp/model-server:3"`, "name: MODEL_VERSION\n              value: \"2\""} {
		if !strings.Contains(d, w) {
			t.Errorf("Deployment lacks %q", w)
		}
	}
}

// TestHPACustomMetric renders the optional per-pod custom metric next to CPU, and refuses half of one.
func TestHPACustomMetric(t *testing.T) {
	c := loadChart(t)
	out, err := renderValues(t, c, map[string]any{"autoscaling": map[string]any{"enabled": true,
		"customMetric": map[string]any{"name": "inference_queue_depth", "targetAverageValue": "5"}}})
	if err != nil {
		t.Fatal(err)
	}
	hpa := out["mlapp/templates/hpa.yaml"]
	for _, w := range []string{"apiVersion: autoscaling/v2", "name: cpu", "averageUtilization: 70", "type: Pods", "name: inference_queue_depth", `averageValue: "5"`} {
		if !strings.Contains(hpa, w) {
			t.Errorf("HPA lacks %q:\n%s", w, hpa)
		}
	}
	if strings.Contains(hpa, "name: memory") {
		t.Errorf("memory metric rendered with targetMemoryUtilizationPercentage 0")
	}
	if strings.Contains(out["mlapp/templates/deployment.yaml"], "\n  replicas:") {
		t.Errorf("Deployment sets replicas although the HPA owns them")
	}
	_, err = renderValues(t, c, map[string]any{"autoscaling": map[string]any{"customMetric": map[string]any{"name": "q"}}})
	if err == nil || !strings.Contains(err.Error(), "at '/autoscaling/customMetric': properties 'targetAverageValue' required, if 'name' exists") {
		t.Errorf("half a custom metric: %v", err)
	}
}
