package plan

import "math"

// Mode is how the stable track is sized while the canary grows.
type Mode string

// Modes.
const (
	// ConstantCapacity scales the stable track down as the canary grows (the default).
	ConstantCapacity Mode = "constant-capacity"
	// Surge keeps the stable replicas and adds the canary on top.
	Surge Mode = "surge"
	// HPA leaves the stable replicas to a HorizontalPodAutoscaler and adds the canary on top.
	HPA Mode = "hpa"
)

// Target is the replica counts of one weight step and the traffic share they reach.
type Target struct {
	Canary int32   `json:"canaryReplicas"`
	Stable int32   `json:"stableReplicas"`
	Weight float64 `json:"actualWeight"`
}

// TargetFor returns the replica counts that approximate weight (percent of pods, which is the
// share of traffic a Service spreads evenly over ready pods) for a Deployment of replicas pods.
// The canary gets at least one pod at any weight.
func TargetFor(weight int, replicas int32, mode Mode) Target {
	n := float64(replicas)
	var t Target
	switch {
	case weight >= 100 && mode == HPA:
		t = Target{Canary: replicas, Stable: replicas}
	case weight >= 100:
		t = Target{Canary: replicas, Stable: 0}
	case mode == ConstantCapacity:
		c := int32(math.Floor(n*float64(weight)/100 + 0.5))
		c = max(c, 1)
		if c >= replicas && replicas > 1 {
			c = replicas - 1 // below 100% the stable track keeps at least one pod
		}
		c = min(c, replicas)
		t = Target{Canary: c, Stable: replicas - c}
	default:
		c := int32(math.Floor(n*float64(weight)/float64(100-weight) + 0.5))
		t = Target{Canary: max(c, 1), Stable: replicas}
	}
	if total := t.Canary + t.Stable; total > 0 {
		t.Weight = math.Round(float64(t.Canary)*1000/float64(total)) / 10
	}
	return t
}

// StepTarget is a step with its replica target (zero for pause steps).
type StepTarget struct {
	Index  int    `json:"index"`
	Step   Step   `json:"step"`
	Target Target `json:"target"`
}

// Targets computes the replica counts of every step of p.
func Targets(p *Plan, replicas int32, mode Mode) []StepTarget {
	out := make([]StepTarget, len(p.Steps))
	var prev Target
	for i, s := range p.Steps {
		t := prev
		if !s.Pause {
			t = TargetFor(s.Weight, replicas, mode)
		}
		out[i] = StepTarget{Index: i, Step: s, Target: t}
		prev = t
	}
	return out
}
