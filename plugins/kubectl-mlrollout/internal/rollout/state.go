// Package rollout is the engine of kubectl mlrollout: the rollout state kept in annotations on the
// stable Deployment, the canary Deployment, the watch-driven step machine, the canary checks,
// Events, history and the read-only summaries that status, history and list print.
package rollout

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

// Annotations and labels the tool writes.
const (
	// AnnotationState holds the JSON State of the rollout in progress on the stable Deployment.
	AnnotationState = "rollouts.mlplugins.io/state"
	// AnnotationHistory holds the JSON list of the last finished rollouts on the stable Deployment.
	AnnotationHistory = "rollouts.mlplugins.io/history"
	// AnnotationRolloutID marks the canary Deployment with the rollout that created it.
	AnnotationRolloutID = "rollouts.mlplugins.io/rollout-id"
	// LabelTrack is the extra label of canary pods; its value is TrackCanary.
	LabelTrack = "rollouts.mlplugins.io/track"
	// TrackCanary is the value of LabelTrack on canary pods.
	TrackCanary = "canary"
	// CanarySuffix is appended to the stable Deployment's name to name the canary Deployment.
	CanarySuffix = "-canary"
	// HistoryLimit is how many finished rollouts the history annotation keeps.
	HistoryLimit = 10
	// HeartbeatInterval is how often the driving process refreshes its heartbeat.
	HeartbeatInterval = 5 * time.Second
	// StaleAfter is how old a heartbeat must be before another process may take the rollout over.
	StaleAfter = 3 * HeartbeatInterval
)

// Phase is the phase of a rollout in progress.
type Phase string

// Phases of a rollout in progress. A finished rollout has no state, only a history Record.
const (
	PhaseProgressing Phase = "Progressing"
	PhasePaused      Phase = "Paused"
	PhasePromoting   Phase = "Promoting"
	PhaseRollingBack Phase = "RollingBack"
	PhaseAborting    Phase = "Aborting"
)

// Result is how a rollout ended, as recorded in history.
type Result string

// Results.
const (
	ResultPromoted   Result = "Promoted"
	ResultRolledBack Result = "RolledBack"
	ResultAborted    Result = "Aborted"
	ResultUndone     Result = "Undone"
)

// State is the rollout in progress, stored as JSON in AnnotationState.
type State struct {
	ID             string            `json:"id"`
	Phase          Phase             `json:"phase"`
	Message        string            `json:"message,omitempty"`
	Images         map[string]string `json:"images"`
	PreviousImages map[string]string `json:"previousImages"`
	Plan           plan.Plan         `json:"plan"`
	Mode           plan.Mode         `json:"mode"`
	OnFailure      string            `json:"onFailure"`
	PrometheusURL  string            `json:"prometheusURL,omitempty"`
	PrometheusAuth string            `json:"prometheusAuth,omitempty"`
	// Replicas is the stable Deployment's spec.replicas before the rollout, restored on abort.
	Replicas      int32         `json:"replicas"`
	Step          int           `json:"step"`
	StepStartedAt time.Time     `json:"stepStartedAt"`
	ReadyAt       *time.Time    `json:"readyAt,omitempty"`
	Checks        []CheckStatus `json:"checks,omitempty"`
	// PromoteRequest is set by `promote` while another process drives the rollout: "step" or "full".
	PromoteRequest string    `json:"promoteRequest,omitempty"`
	Owner          string    `json:"owner,omitempty"`
	Heartbeat      time.Time `json:"heartbeat,omitempty"`
	StartedAt      time.Time `json:"startedAt"`
}

// CheckStatus is the running tally of one check: over the whole rollout, and at the current step
// (failureLimit applies per step).
type CheckStatus struct {
	Name         string       `json:"name"`
	Kind         string       `json:"kind"`
	Runs         int          `json:"runs"`
	Failures     int          `json:"failures"`
	StepRuns     int          `json:"stepRuns"`
	StepFailures int          `json:"stepFailures"`
	Last         *Measurement `json:"last,omitempty"`
}

// Built-in check names.
const (
	CheckCanaryReady      = "canary-ready"
	CheckCanaryContainers = "canary-containers"
)

// NewCheckStatuses returns the zero tallies of the built-in checks and of p's checks.
func NewCheckStatuses(p *plan.Plan) []CheckStatus {
	out := []CheckStatus{{Name: CheckCanaryReady, Kind: "builtin"}, {Name: CheckCanaryContainers, Kind: "builtin"}}
	for _, c := range p.Checks {
		out = append(out, CheckStatus{Name: c.Name, Kind: c.Kind()})
	}
	return out
}

func (s *State) check(name string) *CheckStatus {
	for i := range s.Checks {
		if s.Checks[i].Name == name {
			return &s.Checks[i]
		}
	}
	s.Checks = append(s.Checks, CheckStatus{Name: name, Kind: "builtin"})
	return &s.Checks[len(s.Checks)-1]
}

// observe records a measurement of the named check.
func (s *State) observe(name string, m Measurement) *CheckStatus {
	c := s.check(name)
	c.Runs++
	c.StepRuns++
	if !m.Passed {
		c.Failures++
		c.StepFailures++
	}
	c.Last = &m
	return c
}

// clone deep-copies the parts of s the engine changes.
func (s *State) clone() *State {
	c := *s
	c.Checks = append([]CheckStatus(nil), s.Checks...)
	return &c
}

// Measurement is one run of a check.
type Measurement struct {
	Time    time.Time `json:"time"`
	Passed  bool      `json:"passed"`
	Message string    `json:"message"`
}

// Record is a finished rollout in the history annotation.
type Record struct {
	ID             string            `json:"id"`
	Result         Result            `json:"result"`
	Reason         string            `json:"reason,omitempty"`
	Images         map[string]string `json:"images"`
	PreviousImages map[string]string `json:"previousImages,omitempty"`
	StepsReached   int               `json:"stepsReached"`
	Steps          int               `json:"steps"`
	Checks         []CheckStatus     `json:"checks,omitempty"`
	StartedAt      time.Time         `json:"startedAt"`
	FinishedAt     time.Time         `json:"finishedAt"`
	By             string            `json:"by,omitempty"`
}

// ReadState returns the rollout state on d, or nil when none is in progress.
func ReadState(d *appsv1.Deployment) (*State, error) {
	raw, ok := d.Annotations[AnnotationState]
	if !ok || raw == "" {
		return nil, nil
	}
	var s State
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("reading annotation %s on deployment %q: %w", AnnotationState, d.Name, err)
	}
	return &s, nil
}

// ReadHistory returns the history records on d, newest last.
func ReadHistory(d *appsv1.Deployment) ([]Record, error) {
	raw, ok := d.Annotations[AnnotationHistory]
	if !ok || raw == "" {
		return nil, nil
	}
	var h []Record
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return nil, fmt.Errorf("reading annotation %s on deployment %q: %w", AnnotationHistory, d.Name, err)
	}
	return h, nil
}

// writeState stores s on d (nil removes the annotation).
func writeState(d *appsv1.Deployment, s *State) {
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	if s == nil {
		delete(d.Annotations, AnnotationState)
		return
	}
	b, _ := json.Marshal(s) // State has only JSON-safe fields
	d.Annotations[AnnotationState] = string(b)
}

// appendHistory adds r to d's history, keeping the last HistoryLimit records.
func appendHistory(d *appsv1.Deployment, r Record) error {
	h, err := ReadHistory(d)
	if err != nil {
		h = nil // a corrupt history is replaced rather than blocking the rollout
	}
	h = append(h, r)
	if len(h) > HistoryLimit {
		h = h[len(h)-HistoryLimit:]
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[AnnotationHistory] = string(b)
	return nil
}

// Stale reports whether the owner's heartbeat is older than StaleAfter at now.
func (s *State) Stale(now time.Time) bool {
	return s.Owner == "" || now.Sub(s.Heartbeat) > StaleAfter
}

// Weight is the requested weight of the current step (the previous weight at a pause).
func (s *State) Weight() int {
	w := 0
	for i := 0; i <= s.Step && i < len(s.Plan.Steps); i++ {
		if !s.Plan.Steps[i].Pause {
			w = s.Plan.Steps[i].Weight
		}
	}
	return w
}

// CurrentStep returns the current step, or false once all steps are done.
func (s *State) CurrentStep() (plan.Step, bool) {
	if s.Step < 0 || s.Step >= len(s.Plan.Steps) {
		return plan.Step{}, false
	}
	return s.Plan.Steps[s.Step], true
}

// record turns the state into a history record.
func (s *State) record(result Result, reason, by string, now time.Time) Record {
	return Record{
		ID: s.ID, Result: result, Reason: reason, Images: s.Images, PreviousImages: s.PreviousImages,
		StepsReached: min(s.Step+1, len(s.Plan.Steps)), Steps: len(s.Plan.Steps), Checks: s.Checks,
		StartedAt: s.StartedAt, FinishedAt: now, By: by,
	}
}

// OwnerID names this process for the owner field: user@host (pid N).
func OwnerID() string {
	name := os.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s (pid %d)", name, host, os.Getpid())
}

// ImagesString renders container images as "a=img, b=img" in container-name order.
func ImagesString(images map[string]string) string {
	names := make([]string, 0, len(images))
	for n := range images {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + images[n]
	}
	return strings.Join(parts, ", ")
}
