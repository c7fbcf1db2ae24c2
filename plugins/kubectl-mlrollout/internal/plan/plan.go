// Package plan holds the rollout plan of kubectl mlrollout: the steps (weights, bakes, pauses), the
// canary checks, strict parsing of plan files with line numbers, and the replica counts each step
// can actually reach. It does no I/O other than reading the plan file and an HTTP check's bodyFile.
package plan

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// APIVersion and Kind identify a plan file.
const (
	APIVersion = "mlrollout.aks-mlops.io/v1alpha1"
	Kind       = "RolloutPlan"
)

// DefaultInterval is how often a check runs during a bake when the check names no interval.
const DefaultInterval = 30 * time.Second

// Duration is a time.Duration that reads and writes as a Go duration string ("2m30s") in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Plan is a validated rollout plan.
type Plan struct {
	Steps  []Step  `json:"steps"`
	Checks []Check `json:"checks,omitempty"`
}

// Step is one step of a plan: either a weight (with an optional bake) or a manual pause.
type Step struct {
	Weight int      `json:"weight,omitempty"`
	Bake   Duration `json:"bake,omitempty"`
	Pause  bool     `json:"pause,omitempty"`
}

// String renders the step the way --steps spells it.
func (s Step) String() string {
	if s.Pause {
		return "pause"
	}
	if s.Bake > 0 {
		return fmt.Sprintf("%d%% (bake %s)", s.Weight, time.Duration(s.Bake))
	}
	return fmt.Sprintf("%d%%", s.Weight)
}

// Check is a canary check run at every weight step.
type Check struct {
	Name     string   `json:"name"`
	Interval Duration `json:"interval,omitempty"`
	// InitialDelay is how long the check's first measurement of a step waits after the step's
	// canary pods are Ready (a new pod has no Prometheus series until it has been scraped).
	InitialDelay Duration         `json:"initialDelay,omitempty"`
	FailureLimit int              `json:"failureLimit,omitempty"`
	Prometheus   *PrometheusCheck `json:"prometheus,omitempty"`
	HTTP         *HTTPCheck       `json:"http,omitempty"`
}

// Kind names the check's type ("prometheus" or "http").
func (c Check) Kind() string {
	if c.Prometheus != nil {
		return "prometheus"
	}
	return "http"
}

// EffectiveInterval is the check's interval, or DefaultInterval when it names none.
func (c Check) EffectiveInterval() time.Duration {
	if c.Interval > 0 {
		return time.Duration(c.Interval)
	}
	return DefaultInterval
}

// PrometheusCheck is a PromQL query compared with a bound, or with a baseline query.
type PrometheusCheck struct {
	Query         string   `json:"query"`
	BaselineQuery string   `json:"baselineQuery,omitempty"`
	Max           *float64 `json:"max,omitempty"`
	Min           *float64 `json:"min,omitempty"`
	MaxRatio      *float64 `json:"maxRatio,omitempty"`
}

// HTTPCheck is a request sent to a canary pod through a port-forward.
type HTTPCheck struct {
	Port              int               `json:"port"`
	Path              string            `json:"path"`
	Method            string            `json:"method"`
	Headers           map[string]string `json:"headers,omitempty"`
	Body              string            `json:"body,omitempty"`
	ExpectStatus      int               `json:"expectStatus"`
	MaxLatency        Duration          `json:"maxLatency,omitempty"`
	CompareWithStable *Compare          `json:"compareWithStable,omitempty"`
}

// Compare says how a canary response is compared with a stable pod's response to the same request.
type Compare struct {
	JSONPath  string  `json:"jsonPath"`
	Tolerance float64 `json:"tolerance,omitempty"`
}

// ParseSteps parses the --steps flag ("10,50,pause,100"); bake applies to every weight step below 100.
func ParseSteps(spec string, bake time.Duration) ([]Step, error) {
	var steps []Step
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
			return nil, fmt.Errorf("malformed --steps %q: empty step", spec)
		case f == "pause":
			steps = append(steps, Step{Pause: true})
		default:
			w, err := strconv.Atoi(strings.TrimSuffix(f, "%"))
			if err != nil {
				return nil, fmt.Errorf("malformed --steps %q: %q is neither a weight nor \"pause\"", spec, f)
			}
			s := Step{Weight: w}
			if w < 100 {
				s.Bake = Duration(bake)
			}
			steps = append(steps, s)
		}
	}
	if err := validateWeights(steps, func(i int) string { return fmt.Sprintf("malformed --steps %q: step %d", spec, i+1) }); err != nil {
		return nil, err
	}
	return Finish(steps), nil
}

// validateWeights checks that weights lie in 1..100 and grow; where names the offending step.
func validateWeights(steps []Step, where func(i int) string) error {
	last := 0
	weights := 0
	for i, s := range steps {
		if s.Pause {
			continue
		}
		weights++
		switch {
		case s.Weight < 1 || s.Weight > 100:
			return fmt.Errorf("%s: weight %d is outside 1..100", where(i), s.Weight)
		case s.Weight <= last:
			return fmt.Errorf("%s: weight %d does not grow (previous weight %d)", where(i), s.Weight, last)
		}
		last = s.Weight
	}
	if weights == 0 && len(steps) > 0 {
		return fmt.Errorf("%s: the plan has no weight step", where(len(steps)-1))
	}
	return nil
}

// Finish appends the final 100% step when the plan does not end with one, so that every plan ends
// by sending all traffic to the canary before the promotion.
func Finish(steps []Step) []Step {
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].Pause {
			continue
		}
		if steps[i].Weight == 100 {
			return steps
		}
		break
	}
	return append(steps, Step{Weight: 100})
}
