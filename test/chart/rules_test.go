package chart

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// renderedAlerts renders the chart's PrometheusRule and returns its spec as a Prometheus rule file.
func renderedAlerts(t *testing.T) []byte {
	t.Helper()
	out, err := renderValues(t, loadChart(t), map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}})
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       RuleFile       `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(out["mlapp/templates/prometheusrule.yaml"]), &pr); err != nil {
		t.Fatalf("PrometheusRule: %v", err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) == 0 {
		t.Fatalf("unexpected PrometheusRule %s %s with %d groups", pr.APIVersion, pr.Kind, len(pr.Spec.Groups))
	}
	b, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "__") {
		t.Fatalf("placeholders left in the rendered rules:\n%s", b)
	}
	return b
}

// TestAlertRulesPromtool checks and unit-tests the alert rules, as the chart renders them, with the
// real promtool (Debian package prometheus): promtool check rules, then promtool test rules with
// testdata/alerts_test.yaml.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (apt-get install -y prometheus): %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), renderedAlerts(t), 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	// Every alert in the rule file has at least one firing test.
	for _, r := range mustRules(t, renderedAlerts(t)) {
		if !regexp.MustCompile(`alertname: ` + r.Alert + `\n\s+exp_alerts:\n\s+- exp_labels`).Match(tests) {
			t.Errorf("alert %s has no firing test in testdata/alerts_test.yaml", r.Alert)
		}
	}
}

// TestAzureMonitorRuleGroup fails when files/azure-monitor-rule-group.json drifts from files/alerts.yaml
// (-update regenerates it) and checks that, deployed with the release's namespace and name, it holds
// exactly the rules the chart renders.
func TestAzureMonitorRuleGroup(t *testing.T) {
	alerts, err := os.ReadFile(filepath.Join(chartDir(t), "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := AzureRuleGroupTemplate(alerts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(chartDir(t), "files", "azure-monitor-rule-group.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(got) {
		t.Fatalf("%s is out of date (go test ./test/chart -run TestAzureMonitorRuleGroup -update):\n%s", path, diffLines(string(want), string(got)))
	}

	var tmpl struct {
		Parameters map[string]json.RawMessage `json:"parameters"`
		Resources  []struct {
			Type       string `json:"type"`
			Properties struct {
				Interval string `json:"interval"`
				Rules    []struct {
					Alert       string            `json:"alert"`
					Expression  string            `json:"expression"`
					For         string            `json:"for"`
					Severity    int               `json:"severity"`
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"properties"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(got, &tmpl); err != nil {
		t.Fatal(err)
	}
	params := map[string]string{"namespace": releaseNamespace, "appName": releaseName + "-mlapp"}
	want2 := mustRules(t, renderedAlerts(t))
	var n int
	for _, res := range tmpl.Resources {
		if res.Type != "Microsoft.AlertsManagement/prometheusRuleGroups" {
			t.Errorf("unexpected resource type %s", res.Type)
		}
		for _, r := range res.Properties.Rules {
			if n >= len(want2) {
				t.Fatalf("more ARM rules than chart rules")
			}
			w := want2[n]
			n++
			if r.Alert != w.Alert {
				t.Errorf("rule %d: alert %s, want %s", n, r.Alert, w.Alert)
			}
			if e := evalARM(t, r.Expression, params); e != oneLine(w.Expr) {
				t.Errorf("%s: ARM expression evaluates to\n%s\nwant\n%s", r.Alert, e, oneLine(w.Expr))
			}
			if wf, _ := isoDuration(w.For); w.For != "" && r.For != wf {
				t.Errorf("%s: for %s, want %s", r.Alert, r.For, wf)
			}
			if r.Severity != azureSeverity[w.Labels["severity"]] || r.Labels["severity"] != w.Labels["severity"] {
				t.Errorf("%s: severity %d/%s, want %s", r.Alert, r.Severity, r.Labels["severity"], w.Labels["severity"])
			}
			for k, v := range w.Annotations {
				if got := evalARM(t, r.Annotations[k], params); got != v {
					t.Errorf("%s: annotation %s = %q, want %q", r.Alert, k, got, v)
				}
			}
		}
	}
	if n != len(want2) || n < 7 {
		t.Errorf("ARM template holds %d rules, the chart %d", n, len(want2))
	}
}

func mustRules(t *testing.T, ruleFile []byte) []Rule {
	t.Helper()
	f, err := ParseRuleFile(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules []Rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

var (
	armLiteralRE = regexp.MustCompile(`'((?:[^']|'')*)'`)
	armReplaceRE = regexp.MustCompile(`, '(__[A-Z]+__)', parameters\('(\w+)'\)\)`)
)

// evalARM evaluates the expressions AzureRuleGroupTemplate writes (a literal or nested replace() over a
// literal with parameters), the way Azure Resource Manager would.
func evalARM(t *testing.T, s string, params map[string]string) string {
	t.Helper()
	if !strings.HasPrefix(s, "[") {
		return s
	}
	if strings.HasPrefix(s, "[[") {
		return s[1:]
	}
	m := armLiteralRE.FindStringSubmatch(s)
	if m == nil || !strings.HasPrefix(s, "[replace(") {
		t.Fatalf("unexpected ARM expression %s", s)
	}
	out := strings.ReplaceAll(m[1], "''", "'")
	rest := s[len(m[0])+strings.Index(s, m[0]):]
	for _, r := range armReplaceRE.FindAllStringSubmatch(rest, -1) {
		v, ok := params[r[2]]
		if !ok {
			t.Fatalf("unknown parameter %s", r[2])
		}
		out = strings.ReplaceAll(out, r[1], v)
	}
	return out
}
