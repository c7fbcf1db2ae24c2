package health

import (
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Input is everything Build reads.
type Input struct {
	Kube Kube
	// Samples are per-pod metric samples; nil when no metrics source is configured or it failed.
	Samples Samples
	// History comes from Log Analytics; nil when not configured or it failed.
	History *History
	// Sources are copied into the report as they are.
	Sources []Source
}

// Thresholds of the rules; documented in docs/mlhealth.md.
const (
	HighRestartsThreshold = 3
	ReadinessGrace        = 30 * time.Second
	ErrorRatioWarning     = 0.05
	ErrorRatioCritical    = 0.20
	DefaultSLO            = 99.5
	DefaultLatencyP95     = time.Second
	GPUIdlePercent        = 10.0
	BurnRateFast          = 14.4
	BurnRateSlow          = 6.0
	CanaryErrorMargin     = 0.01
	CanaryLatencyFactor   = 1.2
)

// Build joins the inputs into a Report. It never fails: what is missing is reported in Sources.
func Build(in Input, o Options) Report {
	b := newBuilder(in, o)
	r := Report{
		GeneratedAt: o.Now.UTC(),
		Scope: Scope{
			Namespace:     o.Namespace,
			AllNamespaces: o.AllNamespaces,
			App:           o.App,
			Selector:      o.SelectorText,
			Since:         o.Since.String(),
		},
		Workloads: []Workload{},
		Findings:  []Finding{},
		Sources:   append([]Source{}, in.Sources...),
	}
	if o.AllNamespaces {
		r.Scope.Namespace = ""
	}
	worst := Severity("")
	for _, g := range b.selected() {
		w, fs := b.workload(g)
		r.Workloads = append(r.Workloads, w)
		r.Findings = append(r.Findings, fs...)
		for _, f := range fs {
			if f.Severity.Rank() > worst.Rank() {
				worst = f.Severity
			}
		}
	}
	sortFindings(r.Findings)
	r.Status = statusFor(worst)
	for _, s := range in.Sources {
		if s.Name == "kubernetes" && s.Status == SourceError {
			r.Status = StatusUnknown
		}
	}
	return r
}

// Matches reports whether d is selected by app (release label, name label or Deployment name) and sel.
func Matches(d *appsv1.Deployment, app string, sel labels.Selector) bool {
	if app != "" && d.Labels[LabelInstance] != app && d.Labels[LabelName] != app && d.Name != app {
		return false
	}
	return sel == nil || sel.Matches(labels.Set(d.Labels))
}

// IsCanary reports whether d is a canary created by `kubectl mlrollout`.
func IsCanary(d *appsv1.Deployment) bool { return d.Labels[LabelTrack] == "canary" }

type group struct {
	stable *appsv1.Deployment
	canary *appsv1.Deployment
}

type builder struct {
	in          Input
	o           Options
	windowStart time.Time
	rsOwner     map[string]string // ns/rs -> deployment
	podsByDep   map[string][]*corev1.Pod
	podOwner    map[string]string // ns/pod -> deployment (live pods)
	nodes       map[string]*corev1.Node
}

func key(ns, name string) string { return ns + "/" + name }

func newBuilder(in Input, o Options) *builder {
	b := &builder{
		in:          in,
		o:           o,
		windowStart: o.Now.Add(-o.Since),
		rsOwner:     map[string]string{},
		podsByDep:   map[string][]*corev1.Pod{},
		podOwner:    map[string]string{},
		nodes:       map[string]*corev1.Node{},
	}
	if o.TroubleSince.After(b.windowStart) {
		b.windowStart = o.TroubleSince
	}
	for i := range in.Kube.ReplicaSets {
		rs := &in.Kube.ReplicaSets[i]
		if ref := controllerOf(rs.OwnerReferences); ref != nil && ref.Kind == "Deployment" {
			b.rsOwner[key(rs.Namespace, rs.Name)] = ref.Name
		}
	}
	for i := range in.Kube.Pods {
		p := &in.Kube.Pods[i]
		ref := controllerOf(p.OwnerReferences)
		if ref == nil || ref.Kind != "ReplicaSet" {
			continue
		}
		dep, ok := b.rsOwner[key(p.Namespace, ref.Name)]
		if !ok {
			continue
		}
		k := key(p.Namespace, dep)
		b.podsByDep[k] = append(b.podsByDep[k], p)
		b.podOwner[key(p.Namespace, p.Name)] = dep
	}
	for i := range in.Kube.Nodes {
		b.nodes[in.Kube.Nodes[i].Name] = &in.Kube.Nodes[i]
	}
	return b
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) == 1 {
		return &refs[0]
	}
	return nil
}

// stableNameOf returns the stable Deployment a canary belongs to: its owner, else its name without "-canary".
func stableNameOf(c *appsv1.Deployment) string {
	for _, r := range c.OwnerReferences {
		if r.Kind == "Deployment" {
			return r.Name
		}
	}
	return strings.TrimSuffix(c.Name, "-canary")
}

func (b *builder) selected() []group {
	deps := b.in.Kube.Deployments
	byKey := map[string]*appsv1.Deployment{}
	for i := range deps {
		byKey[key(deps[i].Namespace, deps[i].Name)] = &deps[i]
	}
	var gs []group
	canaryOf := map[string]*appsv1.Deployment{}
	for i := range deps {
		d := &deps[i]
		if IsCanary(d) {
			if s, ok := byKey[key(d.Namespace, stableNameOf(d))]; ok && !IsCanary(s) {
				canaryOf[key(s.Namespace, s.Name)] = d
				continue
			}
		}
	}
	for i := range deps {
		d := &deps[i]
		if IsCanary(d) && canaryOf[key(d.Namespace, stableNameOf(d))] == d {
			continue
		}
		if !Matches(d, b.o.App, b.o.Selector) {
			continue
		}
		gs = append(gs, group{stable: d, canary: canaryOf[key(d.Namespace, d.Name)]})
	}
	sort.Slice(gs, func(i, j int) bool {
		if gs[i].stable.Namespace != gs[j].stable.Namespace {
			return gs[i].stable.Namespace < gs[j].stable.Namespace
		}
		return gs[i].stable.Name < gs[j].stable.Name
	})
	return gs
}

// depStats is what is computed per Deployment (stable or canary).
type depStats struct {
	replicas  Replicas
	restarts  int
	ooms      int
	resources Resources
	metrics   *Metrics
	findings  []Finding
	pods      map[string]bool // live pod names
	rsNames   map[string]bool
}

func (b *builder) workload(g group) (Workload, []Finding) {
	d := g.stable
	st := b.deployment(d, d.Name)
	w := Workload{
		Namespace: d.Namespace,
		Name:      d.Name,
		Kind:      "Deployment",
		Replicas:  st.replicas,
		Restarts:  st.restarts,
		OOMKills:  st.ooms,
		Images:    images(d),
		Resources: st.resources,
		Metrics:   st.metrics,
	}
	findings := st.findings
	worst := worstOf(st.findings)
	if g.canary != nil {
		cs := b.deployment(g.canary, d.Name)
		c := canaryInfo(d, g.canary)
		c.Replicas = cs.replicas
		c.Metrics = cs.metrics
		c.Status = statusFor(worstOf(cs.findings))
		findings = append(findings, cs.findings...)
		if f := compareCanary(d, g.canary, st.metrics, cs.metrics); f != nil {
			findings = append(findings, *f)
			c.Status = statusFor(worstOf([]Finding{{Severity: worstOf(cs.findings)}, *f}))
		}
		w.Canary = &c
		w.Restarts += cs.restarts
		w.OOMKills += cs.ooms
		if s := worstOf(findings); s.Rank() > worst.Rank() {
			worst = s
		}
	}
	w.Status = statusFor(worst)
	return w, findings
}

func worstOf(fs []Finding) Severity {
	worst := Severity("")
	for _, f := range fs {
		if f.Severity.Rank() > worst.Rank() {
			worst = f.Severity
		}
	}
	return worst
}

func images(d *appsv1.Deployment) []string {
	out := []string{}
	for _, c := range d.Spec.Template.Spec.Containers {
		out = append(out, c.Image)
	}
	return out
}

// deployment computes the numbers and findings of one Deployment; workload names the group.
func (b *builder) deployment(d *appsv1.Deployment, workload string) depStats {
	st := depStats{pods: map[string]bool{}, rsNames: map[string]bool{}}
	desired := int32(1)
	if d.Spec.Replicas != nil {
		desired = *d.Spec.Replicas
	}
	st.replicas = Replicas{
		Desired:   desired,
		Ready:     d.Status.ReadyReplicas,
		UpToDate:  d.Status.UpdatedReplicas,
		Available: d.Status.AvailableReplicas,
	}
	for k, dep := range b.rsOwner {
		ns, rs, _ := strings.Cut(k, "/")
		if ns == d.Namespace && dep == d.Name {
			st.rsNames[rs] = true
		}
	}
	pods := b.podsByDep[key(d.Namespace, d.Name)]
	for _, p := range pods {
		st.pods[p.Name] = true
	}
	fb := &findingsBuilder{ns: d.Namespace, workload: workload, dep: d.Name}
	b.podRules(d, pods, &st, fb)
	b.deploymentRules(d, &st, fb)
	b.hpaRules(d, fb)
	b.pdbRules(d, desired, fb)
	b.pvcRules(d, pods, fb)
	b.eventRules(d, &st, fb)
	b.nodeRules(pods, fb)
	b.history(d, &st, fb)
	b.metricRules(d, &st, fb)
	if st.restarts >= HighRestartsThreshold && !fb.has("CrashLoopBackOff") {
		fb.add(SeverityWarning, "HighRestarts", "deployment/"+d.Name,
			fmt.Sprintf("%d container restarts in the last %s", st.restarts, b.window()),
			fmt.Sprintf("look at the previous logs: kubectl logs -n %s deploy/%s --previous; check liveness probes and memory limits", d.Namespace, d.Name))
	}
	st.findings = fb.out()
	return st
}

// window is how far back past trouble is counted, for messages.
func (b *builder) window() string {
	return shortDuration(b.o.Now.Sub(b.windowStart))
}

func (b *builder) inWindow(t time.Time) bool {
	return !t.IsZero() && !t.Before(b.windowStart)
}

// podIssue is one pod's contribution to a grouped finding.
type podIssue struct {
	pod    string
	detail string
}

func (b *builder) podRules(d *appsv1.Deployment, pods []*corev1.Pod, st *depStats, fb *findingsBuilder) {
	issues := map[string][]podIssue{}
	var limits []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		addResources(&st.resources, p)
		if c := podCondition(p, corev1.PodScheduled); p.Status.Phase == corev1.PodPending && c != nil &&
			c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			issues["Unschedulable"] = append(issues["Unschedulable"], podIssue{p.Name, c.Message})
		}
		crashing := false
		statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
		for _, cs := range statuses {
			if w := cs.State.Waiting; w != nil {
				switch w.Reason {
				case "CrashLoopBackOff":
					crashing = true
					detail := fmt.Sprintf("container %q restarted %d times", cs.Name, cs.RestartCount)
					if t := cs.LastTerminationState.Terminated; t != nil {
						detail += fmt.Sprintf(", last exit %s (code %d)", orUnknown(t.Reason), t.ExitCode)
					}
					issues["CrashLoopBackOff"] = append(issues["CrashLoopBackOff"], podIssue{p.Name, detail})
				case "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull":
					crashing = true
					detail := fmt.Sprintf("container %q cannot pull %q", cs.Name, cs.Image)
					if w.Message != "" {
						detail += ": " + w.Message
					}
					issues["ImagePullBackOff"] = append(issues["ImagePullBackOff"], podIssue{p.Name, detail})
				}
			}
			t := cs.LastTerminationState.Terminated
			if t != nil && b.inWindow(t.FinishedAt.Time) {
				if t.Reason == "OOMKilled" {
					st.ooms++
					issues["OOMKilled"] = append(issues["OOMKilled"], podIssue{p.Name,
						fmt.Sprintf("container %q was OOM-killed at %s", cs.Name, t.FinishedAt.UTC().Format(time.RFC3339))})
					if l := memoryLimit(p, cs.Name); l != "" {
						limits = append(limits, l)
					}
				}
			}
			if cs.RestartCount > 0 && (b.inWindow(p.CreationTimestamp.Time) || (t != nil && b.inWindow(t.FinishedAt.Time))) {
				st.restarts += int(cs.RestartCount)
			}
		}
		if !crashing && p.Status.Phase == corev1.PodRunning {
			if c := podCondition(p, corev1.PodReady); c != nil && c.Status != corev1.ConditionTrue {
				since := c.LastTransitionTime.Time
				if p.Status.StartTime != nil && p.Status.StartTime.After(since) {
					since = p.Status.StartTime.Time
				}
				if !since.IsZero() && b.o.Now.Sub(since) >= ReadinessGrace {
					issues["ReadinessFailing"] = append(issues["ReadinessFailing"], podIssue{p.Name,
						fmt.Sprintf("running but not ready for %s", shortDuration(b.o.Now.Sub(since)))})
				}
			}
		}
	}
	ns := d.Namespace
	fb.addGrouped(SeverityCritical, "Unschedulable", issues["Unschedulable"], d.Name, "cannot be scheduled",
		unschedulableHint(issues["Unschedulable"]))
	fb.addGrouped(SeverityCritical, "CrashLoopBackOff", issues["CrashLoopBackOff"], d.Name, "in CrashLoopBackOff",
		fmt.Sprintf("read the crash: kubectl logs -n %s POD --previous", ns))
	fb.addGrouped(SeverityCritical, "ImagePullBackOff", issues["ImagePullBackOff"], d.Name, "cannot pull their image",
		"check the image name and tag, and that the cluster can pull from the registry (az aks check-acr --acr NAME)")
	oomHint := "raise the memory limit or lower the model's memory use (batch size, model size)"
	if len(limits) > 0 {
		oomHint = fmt.Sprintf("raise the memory limit (now %s) or lower the model's memory use (batch size, model size)", limits[0])
	}
	fb.addGrouped(SeverityWarning, "OOMKilled", issues["OOMKilled"], d.Name, "OOM-killed", oomHint)
	fb.addGrouped(SeverityWarning, "ReadinessFailing", issues["ReadinessFailing"], d.Name, "not ready",
		fmt.Sprintf("check the readiness probe and the model load time: kubectl describe pod -n %s POD", ns))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func unschedulableHint(is []podIssue) string {
	for _, i := range is {
		if strings.Contains(i.detail, string(ResourceGPU)) {
			return "no node has a free nvidia.com/gpu: add a GPU node pool (az aks nodepool add --node-vm-size Standard_NC...) or lower the GPU request"
		}
	}
	return "check requests, node selectors, affinity and taints against the nodes: kubectl describe pod -n NS POD"
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func memoryLimit(p *corev1.Pod, container string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				return q.String()
			}
		}
	}
	return ""
}

func addResources(r *Resources, p *corev1.Pod) {
	for _, c := range p.Spec.Containers {
		if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
			r.CPURequestCores += q.AsApproximateFloat64()
		}
		if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
			r.CPULimitCores += q.AsApproximateFloat64()
		}
		if q, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
			r.MemoryRequestBytes += q.AsApproximateFloat64()
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			r.MemoryLimitBytes += q.AsApproximateFloat64()
		}
		if q, ok := c.Resources.Limits[ResourceGPU]; ok {
			r.GPUs += q.Value()
		} else if q, ok := c.Resources.Requests[ResourceGPU]; ok {
			r.GPUs += q.Value()
		}
	}
}

func (b *builder) deploymentRules(d *appsv1.Deployment, st *depStats, fb *findingsBuilder) {
	obj := "deployment/" + d.Name
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			fb.add(SeverityCritical, "ProgressDeadlineExceeded", obj, c.Message,
				fmt.Sprintf("the rollout stalled: see why new pods do not become ready (kubectl rollout status -n %s %s); undo with kubectl rollout undo", d.Namespace, obj))
		}
	}
	r := st.replicas
	if r.Desired > 0 && r.Available < r.Desired {
		sev := SeverityWarning
		if r.Available == 0 {
			sev = SeverityCritical
		}
		fb.add(sev, "ReplicasUnavailable", obj,
			fmt.Sprintf("%d of %d replicas available (%d ready, %d up to date)", r.Available, r.Desired, r.Ready, r.UpToDate),
			"the other findings for this workload say why pods are not available")
	}
}

func (b *builder) hpaRules(d *appsv1.Deployment, fb *findingsBuilder) {
	for i := range b.in.Kube.HPAs {
		h := &b.in.Kube.HPAs[i]
		if h.Namespace != d.Namespace || h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			continue
		}
		obj := "horizontalpodautoscaler/" + h.Name
		if h.Spec.MaxReplicas > 0 && h.Status.CurrentReplicas >= h.Spec.MaxReplicas && h.Status.DesiredReplicas >= h.Spec.MaxReplicas {
			fb.add(SeverityWarning, "HPAAtMax", obj,
				fmt.Sprintf("at its maximum of %d replicas and wants %d", h.Spec.MaxReplicas, h.Status.DesiredReplicas),
				"raise maxReplicas if the nodes have room (GPU pools rarely do), or scale the node pool")
		}
		for _, c := range h.Status.Conditions {
			if c.Type == "ScalingActive" && c.Status == corev1.ConditionFalse {
				fb.add(SeverityWarning, "HPAMetricsUnavailable", obj, strings.TrimSpace(c.Reason+": "+c.Message),
					"the autoscaler cannot read its metrics: check metrics-server or the custom/external metrics adapter and the pods' resource requests")
			}
		}
	}
}

func (b *builder) pdbRules(d *appsv1.Deployment, desired int32, fb *findingsBuilder) {
	if !b.in.Kube.PDBsRead {
		return
	}
	found := false
	tmpl := labels.Set(d.Spec.Template.Labels)
	for i := range b.in.Kube.PDBs {
		p := &b.in.Kube.PDBs[i]
		if p.Namespace != d.Namespace || p.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(tmpl) {
			continue
		}
		found = true
		s := p.Status
		if s.ExpectedPods > 0 && s.DisruptionsAllowed == 0 && s.CurrentHealthy >= s.DesiredHealthy {
			fb.add(SeverityWarning, "PDBBlocksDisruption", "poddisruptionbudget/"+p.Name,
				fmt.Sprintf("allows no disruption (%d healthy, %d required): node drains and AKS upgrades will stall", s.CurrentHealthy, s.DesiredHealthy),
				"set maxUnavailable: 1 (or minAvailable below the replica count)")
		}
	}
	if !found && desired >= 2 {
		fb.add(SeverityInfo, "NoPodDisruptionBudget", "deployment/"+d.Name,
			fmt.Sprintf("%d replicas and no PodDisruptionBudget: a node drain may take them all down at once", desired),
			"add a PodDisruptionBudget with maxUnavailable: 1")
	}
}

func claimsOf(spec *corev1.PodSpec, into map[string]bool) {
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			into[v.PersistentVolumeClaim.ClaimName] = true
		}
	}
}

func storageHint(class string) string {
	switch {
	case strings.Contains(class, "azurefile"):
		return "Azure Files: check the storage account (quota, network rules, the secret in the claim's namespace) and that the Azure Files CSI driver is enabled"
	case strings.Contains(class, "azureblob") || strings.Contains(class, "blob"):
		return "Azure Blob: enable the Blob CSI driver (az aks update --enable-blob-driver) and check the storage account's network rules and the identity's role"
	}
	return "check the storage class and its provisioner: kubectl describe pvc"
}

func (b *builder) pvcRules(d *appsv1.Deployment, pods []*corev1.Pod, fb *findingsBuilder) {
	claims := map[string]bool{}
	claimsOf(&d.Spec.Template.Spec, claims)
	for _, p := range pods {
		claimsOf(&p.Spec, claims)
	}
	for i := range b.in.Kube.PVCs {
		c := &b.in.Kube.PVCs[i]
		if c.Namespace != d.Namespace || !claims[c.Name] || c.Status.Phase != corev1.ClaimPending {
			continue
		}
		class := ""
		if c.Spec.StorageClassName != nil {
			class = *c.Spec.StorageClassName
		}
		msg := fmt.Sprintf("claim %q (storage class %q) is Pending", c.Name, class)
		if e := b.lastEvent("PersistentVolumeClaim", c.Namespace, c.Name); e != "" {
			msg += ": " + e
		}
		fb.add(SeverityCritical, "PVCPending", "persistentvolumeclaim/"+c.Name, msg, storageHint(class))
	}
}

// eventTime is the most recent time an event was seen.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func eventCount(e *corev1.Event) int {
	if e.Series != nil && e.Series.Count > 0 {
		return int(e.Series.Count)
	}
	if e.Count > 0 {
		return int(e.Count)
	}
	return 1
}

func (b *builder) lastEvent(kind, ns, name string) string {
	var last *corev1.Event
	for i := range b.in.Kube.Events {
		e := &b.in.Kube.Events[i]
		if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Kind == kind && e.Namespace == ns && e.InvolvedObject.Name == name {
			if last == nil || eventTime(e).After(eventTime(last)) {
				last = e
			}
		}
	}
	if last == nil {
		return ""
	}
	return last.Reason + ": " + last.Message
}

// coveredReasons are event reasons other findings already explain.
var coveredReasons = map[string]bool{
	"FailedScheduling": true, "BackOff": true, "Failed": true, "ErrImagePull": true, "ImagePullBackOff": true,
	"FailedMount": true, "FailedAttachVolume": true, "ProvisioningFailed": true,
}

type eventSummary struct {
	reason, message string
	count           int
	last            time.Time
}

func (b *builder) related(d *appsv1.Deployment, st *depStats, kind, name string) bool {
	switch kind {
	case "Deployment":
		return name == d.Name
	case "ReplicaSet":
		return st.rsNames[name]
	case "Pod":
		return st.pods[name] || st.rsNames[podRS(name)]
	case "HorizontalPodAutoscaler":
		for _, h := range b.in.Kube.HPAs {
			if h.Namespace == d.Namespace && h.Name == name && h.Spec.ScaleTargetRef.Name == d.Name {
				return true
			}
		}
	}
	return false
}

// podRS strips the random suffix of a ReplicaSet-owned pod name.
func podRS(pod string) string {
	if i := strings.LastIndexByte(pod, '-'); i > 0 {
		return pod[:i]
	}
	return pod
}

func (b *builder) eventRules(d *appsv1.Deployment, st *depStats, fb *findingsBuilder) {
	var mounts []podIssue
	mountSeen := map[string]bool{}
	others := map[string]*eventSummary{}
	add := func(kind, name, reason, message string, count int, last time.Time) {
		if !b.inWindow(last) || !b.related(d, st, kind, name) {
			return
		}
		if (reason == "FailedMount" || reason == "FailedAttachVolume") && kind == "Pod" {
			if !mountSeen[name] {
				mountSeen[name] = true
				mounts = append(mounts, podIssue{name, message})
			}
			return
		}
		if coveredReasons[reason] {
			return
		}
		s := others[reason]
		if s == nil {
			s = &eventSummary{reason: reason}
			others[reason] = s
		}
		s.count += count
		if last.After(s.last) || s.message == "" {
			s.message, s.last = message, last
		}
	}
	for i := range b.in.Kube.Events {
		e := &b.in.Kube.Events[i]
		if e.Type != corev1.EventTypeWarning || e.Namespace != d.Namespace {
			continue
		}
		add(e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, eventCount(e), eventTime(e))
	}
	if b.in.History != nil {
		seen := map[string]bool{}
		for i := range b.in.Kube.Events {
			e := &b.in.Kube.Events[i]
			seen[e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+"/"+e.Reason] = true
		}
		for _, e := range b.in.History.Events {
			if e.Namespace != d.Namespace || seen[e.Kind+"/"+e.Name+"/"+e.Reason] {
				continue
			}
			add(e.Kind, e.Name, e.Reason, e.Message, e.Count, e.Last)
		}
	}
	hint := "a volume cannot be mounted: "
	for i := range b.in.Kube.PVCs {
		c := &b.in.Kube.PVCs[i]
		if c.Namespace == d.Namespace && c.Spec.StorageClassName != nil {
			claims := map[string]bool{}
			claimsOf(&d.Spec.Template.Spec, claims)
			if claims[c.Name] {
				hint += storageHint(*c.Spec.StorageClassName)
				break
			}
		}
	}
	if hint == "a volume cannot be mounted: " {
		hint += storageHint(firstCSIDriver(d))
	}
	fb.addGrouped(SeverityCritical, "FailedMount", mounts, d.Name, "cannot mount a volume", hint)
	if len(others) == 0 {
		return
	}
	list := make([]*eventSummary, 0, len(others))
	total := 0
	for _, s := range others {
		list = append(list, s)
		total += s.count
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].count != list[j].count {
			return list[i].count > list[j].count
		}
		return list[i].reason < list[j].reason
	})
	parts := []string{}
	for i, s := range list {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more", len(list)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%s x%d (%s)", s.reason, s.count, s.message))
	}
	fb.add(SeverityWarning, "WarningEvents", "deployment/"+d.Name,
		fmt.Sprintf("%d Warning %s in the last %s: %s", total, plural(total, "event", "events"), b.window(), strings.Join(parts, "; ")),
		fmt.Sprintf("kubectl events -n %s --types=Warning", d.Namespace))
}

func firstCSIDriver(d *appsv1.Deployment) string {
	for _, v := range d.Spec.Template.Spec.Volumes {
		switch {
		case v.CSI != nil:
			return v.CSI.Driver
		case v.AzureFile != nil:
			return "azurefile"
		}
	}
	return ""
}

func (b *builder) nodeRules(pods []*corev1.Pod, fb *findingsBuilder) {
	if !b.in.Kube.NodesRead {
		return
	}
	seen := map[string]bool{}
	for _, p := range pods {
		n := b.nodes[p.Spec.NodeName]
		if n == nil || seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		ready := false
		msg := "Ready condition missing"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue
				msg = strings.TrimSpace(fmt.Sprintf("Ready=%s %s %s", c.Status, c.Reason, c.Message))
			}
		}
		if !ready {
			fb.addNode(n.Name, "node hosting this workload's pods is not ready: "+msg)
		}
	}
}

// history merges Log Analytics restarts and OOM kills (which include pods that are gone).
func (b *builder) history(d *appsv1.Deployment, st *depStats, fb *findingsBuilder) {
	if b.in.History == nil {
		return
	}
	restarts := 0
	var ooms []podIssue
	for _, h := range b.in.History.Restarts {
		if h.Namespace != d.Namespace || !b.ownedByRS(d, st, h.Controller) {
			continue
		}
		restarts += h.Restarts
		if h.LastReason == "OOMKilled" && b.inWindow(h.LastFinished) && !st.pods[h.Pod] {
			ooms = append(ooms, podIssue{h.Pod, fmt.Sprintf("container %q was OOM-killed at %s (Log Analytics)", h.Container, h.LastFinished.UTC().Format(time.RFC3339))})
		}
	}
	if restarts > st.restarts {
		st.restarts = restarts
	}
	st.ooms += len(ooms)
	if len(ooms) > 0 && !fb.has("OOMKilled") {
		fb.addGrouped(SeverityWarning, "OOMKilled", ooms, d.Name, "OOM-killed",
			"raise the memory limit or lower the model's memory use (batch size, model size)")
	}
}

func (b *builder) ownedByRS(d *appsv1.Deployment, st *depStats, rs string) bool {
	if st.rsNames[rs] {
		return true
	}
	if _, known := b.rsOwner[key(d.Namespace, rs)]; known {
		return false
	}
	return podRS(rs) == d.Name
}

// findingsBuilder collects one Deployment's findings.
type findingsBuilder struct {
	ns, workload, dep string
	fs                []Finding
}

func (f *findingsBuilder) add(sev Severity, reason, obj, msg, hint string) {
	f.fs = append(f.fs, Finding{Severity: sev, Reason: reason, Object: obj, Namespace: f.ns, Workload: f.workload, workloadNS: f.ns, Message: msg, Hint: hint})
}

func (f *findingsBuilder) addNode(node, msg string) {
	f.fs = append(f.fs, Finding{Severity: SeverityCritical, Reason: "NodeNotReady", Object: "node/" + node, Workload: f.workload, workloadNS: f.ns,
		Message: msg, Hint: "kubectl describe node " + node + "; AKS repairs or replaces unhealthy nodes when auto-repair is on"})
}

// addGrouped adds one finding for pods with the same problem: about the pod when there is one,
// about the Deployment (with a count and examples) when there are several.
func (f *findingsBuilder) addGrouped(sev Severity, reason string, is []podIssue, dep, what, hint string) {
	if len(is) == 0 {
		return
	}
	hint = strings.ReplaceAll(hint, "POD", is[0].pod)
	hint = strings.ReplaceAll(hint, " NS ", " "+f.ns+" ")
	if len(is) == 1 {
		f.add(sev, reason, "pod/"+is[0].pod, is[0].detail, hint)
		return
	}
	msg := fmt.Sprintf("%d pods %s; pod/%s: %s", len(is), what, is[0].pod, is[0].detail)
	f.add(sev, reason, "deployment/"+dep, msg, hint)
}

func (f *findingsBuilder) has(reason string) bool {
	for _, x := range f.fs {
		if x.Reason == reason {
			return true
		}
	}
	return false
}

func (f *findingsBuilder) out() []Finding { return f.fs }

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity.Rank() != b.Severity.Rank() {
			return a.Severity.Rank() > b.Severity.Rank()
		}
		if a.workloadNS != b.workloadNS {
			return a.workloadNS < b.workloadNS
		}
		if a.Workload != b.Workload {
			return a.Workload < b.Workload
		}
		if a.Reason != b.Reason {
			return a.Reason < b.Reason
		}
		return a.Object < b.Object
	})
}

// shortDuration prints 90m as "1h30m" and 1h as "1h".
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
