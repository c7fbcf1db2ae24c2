package health

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels, annotations and names shared with `kubectl mlrollout` and Helm.
const (
	LabelInstance = "app.kubernetes.io/instance"
	LabelName     = "app.kubernetes.io/name"
	// LabelTrack marks the canary Deployment that `kubectl mlrollout` creates ("canary").
	LabelTrack = "rollouts.mlplugins.io/track"
	// AnnotationRolloutState holds the rollout state (JSON) on the stable Deployment.
	AnnotationRolloutState = "rollouts.mlplugins.io/state"
	// AnnotationSLO states the availability objective in percent (default 99.5).
	AnnotationSLO = "mlhealth.mlplugins.io/slo"
	// AnnotationLatencyP95 states the p95 latency threshold as a Go duration (default 1s).
	AnnotationLatencyP95 = "mlhealth.mlplugins.io/latency-p95"
	// AnnotationRequestMetric names the request-duration histogram (default http_request_duration_seconds).
	AnnotationRequestMetric = "mlhealth.mlplugins.io/request-metric"
	// ResourceGPU is the NVIDIA device plugin's resource name.
	ResourceGPU corev1.ResourceName = "nvidia.com/gpu"
)

// Kube is the live state read from the Kubernetes API. Nil slices of optional kinds mean "not read"
// (for example nodes when listing them is forbidden).
type Kube struct {
	Deployments []appsv1.Deployment
	ReplicaSets []appsv1.ReplicaSet
	Pods        []corev1.Pod
	HPAs        []autoscalingv2.HorizontalPodAutoscaler
	PDBs        []policyv1.PodDisruptionBudget
	PVCs        []corev1.PersistentVolumeClaim
	Nodes       []corev1.Node
	Events      []corev1.Event
	NodesRead   bool
	PDBsRead    bool
	HPAsRead    bool
	EventsRead  bool
	PVCsRead    bool
}

// Metric names the kinds of per-pod samples a metrics source supplies.
type Metric string

// Per-pod samples. Window-suffixed kinds feed the multi-window SLO burn rate.
const (
	MetricCPU      Metric = "cpu"      // cores
	MetricMemory   Metric = "memory"   // working-set bytes
	MetricRestarts Metric = "restarts" // increase over the window
	MetricRequests Metric = "requests" // req/s over 5m
	MetricErrors   Metric = "errors"   // 5xx req/s over 5m
	MetricBuckets  Metric = "buckets"  // histogram bucket rates over 5m, with Le
	MetricGPU      Metric = "gpu"      // GPU utilisation percent
)

// BurnWindows are the long windows of the multi-window burn-rate rule (the 5m window is MetricRequests/MetricErrors).
var BurnWindows = []string{"30m", "1h", "6h"}

// RequestsOver and ErrorsOver name the request and error rate samples over a burn window.
func RequestsOver(window string) Metric { return Metric("requests:" + window) }

// ErrorsOver names the 5xx rate samples over a burn window.
func ErrorsOver(window string) Metric { return Metric("errors:" + window) }

// Sample is one value for one pod.
type Sample struct {
	Namespace string
	Pod       string
	// Le is the bucket bound of MetricBuckets samples ("+Inf" allowed).
	Le    string
	Value float64
}

// Samples holds per-pod samples by kind; nil when no metrics source is configured.
type Samples map[Metric][]Sample

// History is what the log source (Log Analytics) knows about the window, including pods that are gone.
type History struct {
	Restarts []HistoryRestart
	Events   []HistoryEvent
}

// HistoryRestart is the restart and last-termination history of one container.
type HistoryRestart struct {
	Namespace string
	// Controller is the owning ReplicaSet's name (KubePodInventory.ControllerName).
	Controller   string
	Pod          string
	Container    string
	Restarts     int
	LastReason   string
	LastFinished time.Time
}

// HistoryEvent is one Warning event summary (KubeEvents).
type HistoryEvent struct {
	Namespace string
	Kind      string
	Name      string
	Reason    string
	Message   string
	Count     int
	Last      time.Time
}

// Options select what Build reports on.
type Options struct {
	// App matches a Deployment by Helm release label, app name label or name; empty for all.
	App string
	// Selector filters Deployments by label; nil for everything.
	Selector      labels.Selector
	SelectorText  string
	Namespace     string
	AllNamespaces bool
	Since         time.Duration
	Now           time.Time
	// TroubleSince, when later than Now-Since, starts the window of past trouble (Warning events,
	// container restarts, OOM kills) there instead: --wait-healthy waits for the app to be healthy
	// from when it began, not for trouble before it to age out of --since.
	TroubleSince time.Time
}
