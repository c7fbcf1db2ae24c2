// Package health turns lists of Kubernetes objects, and optionally metric samples and log history,
// into one health Report for an ML app: per-workload status and numbers, findings with a stable
// reason and a hint, and the status of each data source.
//
// Everything here is pure: no clients, no clock (the caller passes Now), so the rules are tested
// with YAML fixtures and a pinned time.
package health

import "time"

// Severity ranks a Finding. Only critical and warning findings change a workload's status;
// info findings are advice.
type Severity string

// Severities, from least to most severe.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Rank orders severities: info 1, warning 2, critical 3, anything else 0.
func (s Severity) Rank() int {
	switch s {
	case SeverityInfo:
		return 1
	case SeverityWarning:
		return 2
	case SeverityCritical:
		return 3
	}
	return 0
}

// Status is the verdict for a workload or for the whole report.
type Status string

// Statuses.
const (
	StatusHealthy  Status = "Healthy"
	StatusWarning  Status = "Warning"
	StatusCritical Status = "Critical"
	// StatusUnknown is the report's status when the Kubernetes source failed: there is no live state to judge.
	StatusUnknown Status = "Unknown"
)

// statusFor maps the worst severity seen to a status.
func statusFor(worst Severity) Status {
	switch worst {
	case SeverityCritical:
		return StatusCritical
	case SeverityWarning:
		return StatusWarning
	}
	return StatusHealthy
}

// Source status values.
const (
	SourceOK       = "ok"
	SourceError    = "error"
	SourceDisabled = "disabled"
)

// Report is the whole result; its JSON shape is the documented, stable schema of -o json|yaml
// (docs/mlhealth.md).
type Report struct {
	Status      Status     `json:"status"`
	GeneratedAt time.Time  `json:"generatedAt"`
	Scope       Scope      `json:"scope"`
	Workloads   []Workload `json:"workloads"`
	Findings    []Finding  `json:"findings"`
	Sources     []Source   `json:"sources"`
}

// Scope says what was looked at.
type Scope struct {
	// Namespace is empty when AllNamespaces is set.
	Namespace     string `json:"namespace,omitempty"`
	AllNamespaces bool   `json:"allNamespaces"`
	App           string `json:"app,omitempty"`
	Selector      string `json:"selector,omitempty"`
	// Since is the look-back window, as a Go duration string ("1h0m0s").
	Since string `json:"since"`
}

// Replicas are the counts of a Deployment, as kubectl shows them.
type Replicas struct {
	Desired   int32 `json:"desired"`
	Ready     int32 `json:"ready"`
	UpToDate  int32 `json:"upToDate"`
	Available int32 `json:"available"`
}

// Workload is one Deployment (with its mlrollout canary, if any) and what is known about it.
type Workload struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Status    Status   `json:"status"`
	Replicas  Replicas `json:"replicas"`
	// Restarts are container restarts within the window; OOMKills are OOM-killed container
	// terminations within the window.
	Restarts  int       `json:"restarts"`
	OOMKills  int       `json:"oomKills"`
	Images    []string  `json:"images"`
	Resources Resources `json:"resources"`
	Metrics   *Metrics  `json:"metrics,omitempty"`
	Canary    *Canary   `json:"canary,omitempty"`
}

// Resources are the summed requests and limits of the workload's scheduled pods.
type Resources struct {
	CPURequestCores    float64 `json:"cpuRequestCores"`
	CPULimitCores      float64 `json:"cpuLimitCores"`
	MemoryRequestBytes float64 `json:"memoryRequestBytes"`
	MemoryLimitBytes   float64 `json:"memoryLimitBytes"`
	GPUs               int64   `json:"gpus"`
}

// Metrics are the values read from the metrics source for a workload; a nil field means the
// series was absent.
type Metrics struct {
	// RequestRate is requests per second over the last 5 minutes.
	RequestRate *float64 `json:"requestRate,omitempty"`
	// ErrorRatio is the share (0-1) of requests answered with a 5xx code over the last 5 minutes.
	ErrorRatio *float64 `json:"errorRatio,omitempty"`
	// LatencyP95Seconds is the 95th percentile of request duration over the last 5 minutes.
	LatencyP95Seconds *float64 `json:"latencyP95Seconds,omitempty"`
	CPUCores          *float64 `json:"cpuCores,omitempty"`
	MemoryBytes       *float64 `json:"memoryBytes,omitempty"`
	// GPUUtilization is the mean GPU utilisation in percent (DCGM_FI_DEV_GPU_UTIL).
	GPUUtilization *float64 `json:"gpuUtilization,omitempty"`
}

// Canary is the `kubectl mlrollout` canary of a workload.
type Canary struct {
	Name      string   `json:"name"`
	Status    Status   `json:"status"`
	Replicas  Replicas `json:"replicas"`
	Step      *int     `json:"step,omitempty"`
	Steps     *int     `json:"steps,omitempty"`
	Weight    *float64 `json:"weight,omitempty"`
	Phase     string   `json:"phase,omitempty"`
	LastCheck string   `json:"lastCheck,omitempty"`
	Metrics   *Metrics `json:"metrics,omitempty"`
}

// Finding is one problem or piece of advice.
type Finding struct {
	Severity Severity `json:"severity"`
	// Reason is a stable CamelCase identifier (CrashLoopBackOff, HPAAtMax, ...).
	Reason string `json:"reason"`
	// Object is kind/name in lower case (pod/x, deployment/y, node/z), with the namespace in Namespace.
	Object    string `json:"object"`
	Namespace string `json:"namespace,omitempty"`
	// Workload names the Deployment the finding belongs to, if any.
	Workload string `json:"workload,omitempty"`
	Message  string `json:"message"`
	Hint     string `json:"hint"`

	// workloadNS orders findings of cluster-scoped objects (nodes) with their workload.
	workloadNS string
}

// Source is the status of one data source.
type Source struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Requests is the number of API requests the source made (Kubernetes, Prometheus, Log Analytics).
	Requests int `json:"requests,omitempty"`
	// Detail says what was read or skipped, for people.
	Detail string `json:"detail,omitempty"`
}
