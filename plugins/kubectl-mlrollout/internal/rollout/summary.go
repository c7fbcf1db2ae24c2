package rollout

import (
	"fmt"
	"io"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
)

// Track is one side of a rollout as status shows it.
type Track struct {
	Images   map[string]string `json:"images"`
	Replicas int32             `json:"replicas"`
	Ready    int32             `json:"ready"`
}

// Summary is the view model of `status` and `list`: what the annotations and Deployments say.
type Summary struct {
	Namespace    string        `json:"namespace"`
	Deployment   string        `json:"deployment"`
	InProgress   bool          `json:"inProgress"`
	ID           string        `json:"id,omitempty"`
	Phase        string        `json:"phase"`
	Message      string        `json:"message,omitempty"`
	Step         int           `json:"step,omitempty"`
	Steps        int           `json:"steps,omitempty"`
	StepName     string        `json:"stepName,omitempty"`
	Weight       int           `json:"weight,omitempty"`
	ActualWeight float64       `json:"actualWeight"`
	Mode         plan.Mode     `json:"mode,omitempty"`
	HPA          string        `json:"hpa,omitempty"`
	Stable       Track         `json:"stable"`
	Canary       *Track        `json:"canary,omitempty"`
	Checks       []CheckStatus `json:"checks,omitempty"`
	Owner        string        `json:"owner,omitempty"`
	OwnerAlive   bool          `json:"ownerAlive"`
	Heartbeat    *time.Time    `json:"heartbeat,omitempty"`
	StartedAt    *time.Time    `json:"startedAt,omitempty"`
	BakeLeft     string        `json:"bakeLeft,omitempty"`
	Last         *Record       `json:"lastRollout,omitempty"`
}

// Summarize builds the Summary of stable (with its canary, nil if none, and HPA, nil if none) at now.
func Summarize(stable, canary *appsv1.Deployment, hpa *autoscalingv2.HorizontalPodAutoscaler, now time.Time) (Summary, error) {
	s := Summary{
		Namespace: stable.Namespace, Deployment: stable.Name, Phase: "Idle",
		Stable: Track{Images: Images(&stable.Spec.Template), Replicas: specReplicas(stable), Ready: stable.Status.ReadyReplicas},
	}
	if hpa != nil {
		s.HPA = hpa.Name
	}
	if canary != nil {
		s.Canary = &Track{Images: Images(&canary.Spec.Template), Replicas: specReplicas(canary), Ready: canary.Status.ReadyReplicas}
	}
	if total := s.Stable.Ready + readyOf(s.Canary); total > 0 {
		s.ActualWeight = float64(int(float64(readyOf(s.Canary))*1000/float64(total))) / 10
	}
	h, err := ReadHistory(stable)
	if err != nil {
		return s, err
	}
	if len(h) > 0 {
		s.Last = &h[len(h)-1]
	}
	st, err := ReadState(stable)
	if err != nil || st == nil {
		return s, err
	}
	s.InProgress, s.ID, s.Phase, s.Message, s.Mode = true, st.ID, string(st.Phase), st.Message, st.Mode
	s.Steps, s.Step, s.Weight = len(st.Plan.Steps), min(st.Step+1, len(st.Plan.Steps)), st.Weight()
	if step, ok := st.CurrentStep(); ok {
		s.StepName = step.String()
		if st.ReadyAt != nil && step.Bake > 0 && st.Phase == PhaseProgressing {
			if left := st.ReadyAt.Add(time.Duration(step.Bake)).Sub(now); left > 0 {
				s.BakeLeft = left.Round(time.Second).String()
			}
		}
	} else {
		s.StepName = "promote"
	}
	s.Checks = st.Checks
	s.Owner, s.OwnerAlive = st.Owner, !st.Stale(now)
	if !st.Heartbeat.IsZero() {
		hb := st.Heartbeat
		s.Heartbeat = &hb
	}
	started := st.StartedAt
	s.StartedAt = &started
	return s, nil
}

func readyOf(t *Track) int32 {
	if t == nil {
		return 0
	}
	return t.Ready
}

// Age renders a duration the way kubectl does (5s, 3m, 2h, 4d).
func Age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// RenderStatus writes the human-readable status of s at now.
func RenderStatus(w io.Writer, s Summary, now time.Time) {
	kv := func(k, format string, args ...any) { fmt.Fprintf(w, "%-12s %s\n", k+":", fmt.Sprintf(format, args...)) }
	kv("Deployment", "%s/%s", s.Namespace, s.Deployment)
	if !s.InProgress {
		kv("Rollout", "none in progress")
		kv("Stable", "%s  %d/%d ready", ImagesString(s.Stable.Images), s.Stable.Ready, s.Stable.Replicas)
		if s.Canary != nil {
			kv("Canary", "%s exists but belongs to no rollout in progress: delete it before the next start", CanaryName(s.Deployment))
		}
		if s.Last != nil {
			line := fmt.Sprintf("%s %s %s ago (%s)", s.Last.ID, s.Last.Result, Age(now.Sub(s.Last.FinishedAt)), ImagesString(s.Last.Images))
			if s.Last.Reason != "" {
				line += ": " + s.Last.Reason
			}
			kv("Last", "%s", line)
		}
		return
	}
	kv("Rollout", "%s  %s", s.ID, s.Phase)
	step := fmt.Sprintf("%d/%d  %s", s.Step, s.Steps, s.StepName)
	if s.BakeLeft != "" {
		step += fmt.Sprintf("  (bake %s left)", s.BakeLeft)
	}
	kv("Step", "%s", step)
	kv("Traffic", "canary %.1f%% of ready pods (weight %d%%, %s)", s.ActualWeight, s.Weight, s.Mode)
	kv("Stable", "%s  %d/%d ready", ImagesString(s.Stable.Images), s.Stable.Ready, s.Stable.Replicas)
	if s.Canary != nil {
		kv("Canary", "%s  %d/%d ready", ImagesString(s.Canary.Images), s.Canary.Ready, s.Canary.Replicas)
	} else {
		kv("Canary", "none")
	}
	if s.HPA != "" {
		kv("HPA", "%s (stable replicas left to it)", s.HPA)
	}
	switch {
	case s.Owner == "":
		kv("Owner", "none: run `kubectl mlrollout resume %s` or `abort %s`", s.Deployment, s.Deployment)
	case s.OwnerAlive:
		kv("Owner", "%s (heartbeat %s ago)", s.Owner, Age(now.Sub(*s.Heartbeat)))
	default:
		kv("Owner", "%s NOT RESPONDING (heartbeat %s ago): run `kubectl mlrollout resume %s` or `abort %s`", s.Owner, Age(now.Sub(*s.Heartbeat)), s.Deployment, s.Deployment)
	}
	if s.Message != "" {
		kv("Message", "%s", s.Message)
	}
	if len(s.Checks) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := printers.NewTable(w)
	fmt.Fprintln(tw, "CHECK\tKIND\tRUNS\tFAILURES\tLAST")
	for _, c := range s.Checks {
		last := "-"
		if c.Last != nil {
			verdict := "passed"
			if !c.Last.Passed {
				verdict = "FAILED"
			}
			last = fmt.Sprintf("%s %s ago: %s", verdict, Age(now.Sub(c.Last.Time)), oneLine(c.Last.Message))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Name, c.Kind, c.Runs, c.Failures, last)
	}
	_ = tw.Flush()
}

// oneLine folds text over many lines (an Azure identity error carries a whole HTTP answer) into one line, for
// tables, Events, check results and the state annotation.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
