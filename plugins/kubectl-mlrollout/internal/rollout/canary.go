package rollout

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// CanaryName is the name of the canary Deployment of stable.
func CanaryName(stable string) string { return stable + CanarySuffix }

// Images returns the container images of a pod template (init containers are not rolled).
func Images(t *corev1.PodTemplateSpec) map[string]string {
	out := map[string]string{}
	for _, c := range t.Spec.Containers {
		out[c.Name] = c.Image
	}
	return out
}

// ValidateImages checks that every container named in images exists in d's pod template.
func ValidateImages(d *appsv1.Deployment, images map[string]string) error {
	have := Images(&d.Spec.Template)
	var names []string
	for n := range have {
		names = append(names, n)
	}
	sort.Strings(names)
	for n := range images {
		if _, ok := have[n]; !ok {
			return fmt.Errorf("deployment %q has no container %q (containers: %s)", d.Name, n, strings.Join(names, ", "))
		}
	}
	return nil
}

// withImages returns a copy of t with the given container images.
func withImages(t corev1.PodTemplateSpec, images map[string]string) corev1.PodTemplateSpec {
	t = *t.DeepCopy()
	for i := range t.Spec.Containers {
		if img, ok := images[t.Spec.Containers[i].Name]; ok {
			t.Spec.Containers[i].Image = img
		}
	}
	return t
}

// NewCanary builds the canary Deployment for stable: the same pod template with the new images and
// the track label, a selector that adds the track label, and an owner reference to stable so that
// deleting stable garbage-collects the canary. The canary pods keep every stable label, so the
// Service that selects the stable pods selects them too.
func NewCanary(stable *appsv1.Deployment, images map[string]string, replicas int32, rolloutID string) *appsv1.Deployment {
	tmpl := withImages(stable.Spec.Template, images)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[LabelTrack] = TrackCanary
	sel := stable.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[LabelTrack] = TrackCanary
	lbls := map[string]string{}
	for k, v := range stable.Labels {
		lbls[k] = v
	}
	lbls[LabelTrack] = TrackCanary
	yes := true
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:        CanaryName(stable.Name),
			Namespace:   stable.Namespace,
			Labels:      lbls,
			Annotations: map[string]string{AnnotationRolloutID: rolloutID},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: stable.Name, UID: stable.UID,
				Controller: &yes,
			}},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:                &replicas,
			Selector:                sel,
			Template:                tmpl,
			Strategy:                stable.Spec.Strategy,
			MinReadySeconds:         stable.Spec.MinReadySeconds,
			ProgressDeadlineSeconds: stable.Spec.ProgressDeadlineSeconds,
			RevisionHistoryLimit:    stable.Spec.RevisionHistoryLimit,
		},
	}
}

// isCanaryPod reports whether p belongs to the canary track.
func isCanaryPod(p *corev1.Pod) bool { return p.Labels[LabelTrack] == TrackCanary }

// podReady reports whether p is running, not terminating and Ready.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// splitPods returns the live (not terminating) canary and stable pods matching the stable selector, sorted by name.
func splitPods(pods []*corev1.Pod, stable *appsv1.Deployment) (canary, stablePods []*corev1.Pod) {
	sel, err := metav1.LabelSelectorAsSelector(stable.Spec.Selector)
	if err != nil {
		sel = labels.Nothing()
	}
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Namespace != stable.Namespace || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if isCanaryPod(p) {
			canary = append(canary, p)
		} else {
			stablePods = append(stablePods, p)
		}
	}
	sort.Slice(canary, func(i, j int) bool { return canary[i].Name < canary[j].Name })
	sort.Slice(stablePods, func(i, j int) bool { return stablePods[i].Name < stablePods[j].Name })
	return canary, stablePods
}

func names(pods []*corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}

func readyPods(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if podReady(p) {
			out = append(out, p)
		}
	}
	return out
}

// badWaiting are container waiting reasons that fail the built-in container check at once.
var badWaiting = map[string]bool{
	"CrashLoopBackOff": true, "ImagePullBackOff": true, "ErrImagePull": true,
	"CreateContainerConfigError": true, "InvalidImageName": true, "CreateContainerError": true,
}

// ContainerProblem returns why a canary pod fails the built-in container check, or "".
func ContainerProblem(p *corev1.Pod) string {
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		switch {
		case cs.State.Waiting != nil && badWaiting[cs.State.Waiting.Reason]:
			return fmt.Sprintf("container %q of pod %q is in %s", cs.Name, p.Name, cs.State.Waiting.Reason)
		case cs.State.Terminated != nil && cs.State.Terminated.Reason == "OOMKilled",
			cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == "OOMKilled":
			return fmt.Sprintf("container %q of pod %q was OOMKilled", cs.Name, p.Name)
		case cs.RestartCount > 0:
			return fmt.Sprintf("container %q of pod %q restarted %d times", cs.Name, p.Name, cs.RestartCount)
		}
	}
	return ""
}

// FindHPA returns the HPA that scales the Deployment named name, or nil.
func FindHPA(hpas []*autoscalingv2.HorizontalPodAutoscaler, name string) *autoscalingv2.HorizontalPodAutoscaler {
	for _, h := range hpas {
		r := h.Spec.ScaleTargetRef
		if r.Kind == "Deployment" && r.Name == name && (r.APIVersion == "" || strings.HasPrefix(r.APIVersion, "apps/")) {
			return h
		}
	}
	return nil
}

// HPAFor returns the HPA among items that scales the Deployment named name, or nil.
func HPAFor(items []autoscalingv2.HorizontalPodAutoscaler, name string) *autoscalingv2.HorizontalPodAutoscaler {
	list := make([]*autoscalingv2.HorizontalPodAutoscaler, len(items))
	for i := range items {
		list[i] = &items[i]
	}
	return FindHPA(list, name)
}

// hpaReplicas is the replica count the canary follows under an HPA: its desired count, else the
// Deployment's current replicas.
func hpaReplicas(h *autoscalingv2.HorizontalPodAutoscaler, d *appsv1.Deployment) int32 {
	if h.Status.DesiredReplicas > 0 {
		return h.Status.DesiredReplicas
	}
	return specReplicas(d)
}

func specReplicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// progressDeadline is the Deployment's progressDeadlineSeconds (default 600).
func progressDeadline(d *appsv1.Deployment) int32 {
	if d.Spec.ProgressDeadlineSeconds != nil {
		return *d.Spec.ProgressDeadlineSeconds
	}
	return 600
}

// rolledOut reports whether d has finished a rolling update to its current template.
func rolledOut(d *appsv1.Deployment) bool {
	want := specReplicas(d)
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want
}
