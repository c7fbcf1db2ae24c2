package plan

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseFull(t *testing.T) {
	p, err := ParseFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 4 || p.Steps[0].Weight != 10 || time.Duration(p.Steps[1].Bake) != 5*time.Minute || !p.Steps[2].Pause {
		t.Fatalf("steps = %+v", p.Steps)
	}
	if len(p.Checks) != 3 {
		t.Fatalf("checks = %+v", p.Checks)
	}
	if c := p.Checks[0]; *c.Prometheus.Max != 0.5 || c.EffectiveInterval() != 30*time.Second || time.Duration(c.InitialDelay) != 90*time.Second {
		t.Fatalf("check 0 = %+v", c)
	}
	if c := p.Checks[1]; *c.Prometheus.MaxRatio != 1.2 || c.EffectiveInterval() != DefaultInterval || c.InitialDelay != 0 {
		t.Fatalf("check 1 = %+v", c)
	}
	h := p.Checks[2].HTTP
	if h.Method != "POST" || h.Port != 8080 || time.Duration(h.MaxLatency) != 500*time.Millisecond || h.CompareWithStable.Tolerance != 0.01 {
		t.Fatalf("http = %+v", h)
	}
}

const head = "apiVersion: mlrollout.aks-mlops.io/v1alpha1\nkind: RolloutPlan\n"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", head + "steps:\n- weight: 10\n  bak: 2m\n", `plan file "p.yaml": line 5: unknown field "bak" in step (want one of: weight, bake, pause)`},
		{"bad duration", head + "steps:\n- weight: 10\n  bake: 2 minutes\n", `plan file "p.yaml": line 5: bake: bad duration "2 minutes" (want e.g. 30s, 2m, 1h)`},
		{"weight not growing", head + "steps:\n- weight: 50\n- weight: 20\n", `plan file "p.yaml": line 5: weight 20 does not grow (previous weight 50)`},
		{"weight above 100", head + "steps:\n- weight: 10\n- weight: 120\n", `plan file "p.yaml": line 5: weight 120 is outside 1..100`},
		{"unknown variable", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus:\n    query: 'up{pod=~\"{{ .CanaryPod }}\"}'\n    max: 1\n", `plan file "p.yaml": line 8: unknown template variable {{ .CanaryPod }} (want one of: Namespace, Deployment, CanaryDeployment, CanaryPods, StablePods)`},
		{"unknown variable in block", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus:\n    query: |\n      sum(up{\n        pod=~\"{{ .Pods }}\"})\n    max: 1\n", `plan file "p.yaml": line 10: unknown template variable {{ .Pods }} (want one of: Namespace, Deployment, CanaryDeployment, CanaryPods, StablePods)`},
		{"not a variable", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus:\n    query: 'up{pod=~\"{{ printf .CanaryPods }}\"}'\n    max: 1\n", `plan file "p.yaml": line 8: query template: {{ printf .CanaryPods }} is not a variable (want {{ .Name }} with one of: Namespace, Deployment, CanaryDeployment, CanaryPods, StablePods)`},
		{"unclosed", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus:\n    query: 'up{pod=~\"{{ .CanaryPods\"}'\n    max: 1\n", `plan file "p.yaml": line 8: query template: unclosed {{`},
		{"wrong kind", "apiVersion: mlrollout.aks-mlops.io/v1alpha1\nkind: Rollout\nsteps: []\n", `plan file "p.yaml": line 2: kind must be "RolloutPlan"`},
		{"no bound", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus:\n    query: up\n", `plan file "p.yaml": line 8: prometheus check needs max, min, or baselineQuery with maxRatio`},
		{"both kinds", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  prometheus: {query: up, max: 1}\n  http: {port: 80}\n", `plan file "p.yaml": line 6: check "a" needs exactly one of prometheus or http`},
		{"dup check", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  http: {port: 80}\n- name: a\n  http: {port: 80}\n", `plan file "p.yaml": line 8: duplicate check name "a" (first on line 6)`},
		{"bad port", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  http: {port: 0}\n", `plan file "p.yaml": line 7: port 0 is outside 1..65535`},
		{"bad jsonpath", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  http:\n    port: 80\n    compareWithStable: {jsonPath: predictions}\n", `plan file "p.yaml": line 9: jsonPath: "predictions" must start with $`},
		{"bad initialDelay", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  initialDelay: 10\n  http: {port: 80}\n", `plan file "p.yaml": line 7: initialDelay: bad duration "10" (want e.g. 30s, 2m, 1h)`},
		{"negative initialDelay", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  initialDelay: -5s\n  http: {port: 80}\n", `plan file "p.yaml": line 7: initialDelay: duration "-5s" is negative`},
		{"initialDelay not scalar", head + "steps:\n- weight: 10\nchecks:\n- name: a\n  initialDelay: [5s]\n  http: {port: 80}\n", `plan file "p.yaml": line 7: initialDelay must be a scalar`},
		{"pause with field", head + "steps:\n- pause: {}\n  weight: 10\n", `plan file "p.yaml": line 4: a pause step takes no other field`},
		{"not yaml", "steps: [\n", `plan file "p.yaml": line 1: did not find expected node content`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.doc))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v\nwant  %s", err, tt.want)
			}
		})
	}
}

func TestBodyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "req.json"), []byte(`{"a":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := head + "steps:\n- weight: 10\nchecks:\n- name: a\n  http:\n    port: 80\n    bodyFile: req.json\n"
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.Checks[0].HTTP; h.Body != `{"a":1}` || h.Method != "POST" {
		t.Fatalf("http = %+v", h)
	}
	if got := len(p.Steps); got != 2 || p.Steps[1].Weight != 100 {
		t.Fatalf("final 100%% step not appended: %+v", p.Steps)
	}
}

func TestParseSteps(t *testing.T) {
	tests := []struct {
		spec string
		want []Step
		err  string
	}{
		{spec: "10,50,pause,100", want: []Step{{Weight: 10, Bake: Duration(time.Minute)}, {Weight: 50, Bake: Duration(time.Minute)}, {Pause: true}, {Weight: 100}}},
		{spec: "25", want: []Step{{Weight: 25, Bake: Duration(time.Minute)}, {Weight: 100}}},
		{spec: "10,,100", err: `malformed --steps "10,,100": empty step`},
		{spec: "10,x", err: `malformed --steps "10,x": "x" is neither a weight nor "pause"`},
		{spec: "50,10", err: `malformed --steps "50,10": step 2: weight 10 does not grow (previous weight 50)`},
		{spec: "0,10", err: `malformed --steps "0,10": step 1: weight 0 is outside 1..100`},
		{spec: "pause", err: `malformed --steps "pause": step 1: the plan has no weight step`},
	}
	for _, tt := range tests {
		got, err := ParseSteps(tt.spec, time.Minute)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%s: err = %v, want %s", tt.spec, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.spec, err)
		}
		if len(got) != len(tt.want) {
			t.Fatalf("%s: got %+v", tt.spec, got)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: step %d = %+v, want %+v", tt.spec, i, got[i], tt.want[i])
			}
		}
	}
}

func TestTargetFor(t *testing.T) {
	tests := []struct {
		weight   int
		replicas int32
		mode     Mode
		want     Target
	}{
		{10, 10, ConstantCapacity, Target{Canary: 1, Stable: 9, Weight: 10}},
		{25, 10, ConstantCapacity, Target{Canary: 3, Stable: 7, Weight: 30}},
		{1, 10, ConstantCapacity, Target{Canary: 1, Stable: 9, Weight: 10}},
		{99, 10, ConstantCapacity, Target{Canary: 9, Stable: 1, Weight: 90}},
		{100, 10, ConstantCapacity, Target{Canary: 10, Stable: 0, Weight: 100}},
		{50, 3, ConstantCapacity, Target{Canary: 2, Stable: 1, Weight: 66.7}},
		{10, 1, ConstantCapacity, Target{Canary: 1, Stable: 0, Weight: 100}},
		{10, 10, Surge, Target{Canary: 1, Stable: 10, Weight: 9.1}},
		{50, 10, Surge, Target{Canary: 10, Stable: 10, Weight: 50}},
		{100, 10, Surge, Target{Canary: 10, Stable: 0, Weight: 100}},
		{100, 4, HPA, Target{Canary: 4, Stable: 4, Weight: 50}},
	}
	for _, tt := range tests {
		if got := TargetFor(tt.weight, tt.replicas, tt.mode); got != tt.want {
			t.Errorf("TargetFor(%d, %d, %s) = %+v, want %+v", tt.weight, tt.replicas, tt.mode, got, tt.want)
		}
	}
}

func TestRender(t *testing.T) {
	got, err := Render(`x{namespace="{{ .Namespace }}",pod=~"{{ .CanaryPods }}"} / y{deployment="{{.Deployment}}",c="{{ .CanaryDeployment }}",s=~"{{ .StablePods }}"}`,
		Vars{Namespace: "ns", Deployment: "d", CanaryDeployment: "d-canary", CanaryPods: PodRegex([]string{"a-1", "a-2"}), StablePods: PodRegex(nil)})
	if err != nil {
		t.Fatal(err)
	}
	want := `x{namespace="ns",pod=~"a-1|a-2"} / y{deployment="d",c="d-canary",s=~"mlrollout-no-pods-matched"}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if _, err := Render("{{ .Nope }}", Vars{}); err == nil {
		t.Fatal("unknown variable rendered")
	}
}

func TestJSONPathCompare(t *testing.T) {
	doc := map[string]any{"predictions": []any{[]any{0.1, 0.9}}, "model": "m"}
	path, err := ParseJSONPath("$.predictions[0]")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Lookup(doc, path)
	if err != nil {
		t.Fatal(err)
	}
	if d := CompareValues(v, []any{0.105, 0.9}, 0.01); d != "" {
		t.Fatalf("within tolerance: %s", d)
	}
	if d := CompareValues(v, []any{0.3, 0.9}, 0.01); d != "$[0]: canary 0.1, stable 0.3 (tolerance 0.01)" {
		t.Fatalf("diff = %q", d)
	}
	if d := CompareValues(v, []any{0.1}, 0.01); d != "$: canary has a list of 2, stable has a list of 1" {
		t.Fatalf("diff = %q", d)
	}
	if _, err := Lookup(doc, []PathElem{{Key: "nope"}}); err == nil {
		t.Fatal("missing key found")
	}
	for _, bad := range []string{"x", "$..a", "$[a]", "$[1"} {
		if _, err := ParseJSONPath(bad); err == nil {
			t.Errorf("ParseJSONPath(%q) accepted", bad)
		}
	}
}
