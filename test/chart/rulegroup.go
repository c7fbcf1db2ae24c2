package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// RuleFile is a Prometheus rule file (the subset the chart's alerts use).
type RuleFile struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Placeholders of files/alerts.yaml and the ARM parameters that replace them.
var rulePlaceholders = []struct{ token, param string }{
	{"__NAMESPACE__", "namespace"},
	{"__APP__", "appName"},
}

// azureSeverity maps the rules' severity label to Azure Monitor's 0 (critical) .. 4 (verbose).
var azureSeverity = map[string]int{"critical": 0, "error": 1, "warning": 2, "info": 3}

// ParseRuleFile decodes a rule file strictly.
func ParseRuleFile(data []byte) (*RuleFile, error) {
	var f RuleFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("parsing rule file: %w", err)
	}
	return &f, nil
}

// AzureRuleGroupTemplate turns the chart's alert rule file into an ARM template deploying one
// Microsoft.AlertsManagement/prometheusRuleGroups per group, with the same expressions, durations,
// labels and annotations; the placeholders become the parameters namespace and appName.
func AzureRuleGroupTemplate(alertsYAML []byte) ([]byte, error) {
	f, err := ParseRuleFile(alertsYAML)
	if err != nil {
		return nil, err
	}
	var resources []any
	for _, g := range f.Groups {
		var rules []any
		for _, r := range g.Rules {
			sev, ok := azureSeverity[r.Labels["severity"]]
			if !ok {
				return nil, fmt.Errorf("rule %s: severity label %q is not one of critical, error, warning, info", r.Alert, r.Labels["severity"])
			}
			rule := ordered{
				{"alert", r.Alert},
				{"enabled", true},
				{"expression", armSubstitute(oneLine(r.Expr))},
			}
			if r.For != "" {
				d, err := isoDuration(r.For)
				if err != nil {
					return nil, fmt.Errorf("rule %s: %w", r.Alert, err)
				}
				rule = append(rule, kv{"for", d})
			}
			rule = append(rule,
				kv{"severity", sev},
				kv{"labels", sortedStrings(r.Labels, false)},
				kv{"annotations", sortedStrings(r.Annotations, true)},
				kv{"resolveConfiguration", ordered{{"autoResolved", true}, {"timeToResolve", "PT10M"}}},
				kv{"actions", "[if(empty(parameters('actionGroupId')), createArray(), createArray(createObject('actionGroupId', parameters('actionGroupId'))))]"},
			)
			rules = append(rules, rule)
		}
		interval := "PT1M"
		if g.Interval != "" {
			if interval, err = isoDuration(g.Interval); err != nil {
				return nil, fmt.Errorf("group %s: %w", g.Name, err)
			}
		}
		resources = append(resources, ordered{
			{"type", "Microsoft.AlertsManagement/prometheusRuleGroups"},
			{"apiVersion", "2023-03-01"},
			{"name", fmt.Sprintf("[format('{0}-%s', parameters('ruleGroupPrefix'))]", g.Name)},
			{"location", "[parameters('location')]"},
			{"properties", ordered{
				{"description", fmt.Sprintf("[format('Alerts of the mlapp release {0} in namespace {1} (generated from charts/mlapp/files/alerts.yaml, group %s).', parameters('appName'), parameters('namespace'))]", g.Name)},
				{"scopes", []any{"[parameters('azureMonitorWorkspaceId')]", "[parameters('clusterResourceId')]"}},
				{"clusterName", "[last(split(parameters('clusterResourceId'), '/'))]"},
				{"enabled", true},
				{"interval", interval},
				{"rules", rules},
			}},
		})
	}
	param := func(typ, desc string, def any) ordered {
		p := ordered{{"type", typ}}
		if def != nil {
			p = append(p, kv{"defaultValue", def})
		}
		return append(p, kv{"metadata", ordered{{"description", desc}}})
	}
	tmpl := ordered{
		{"$schema", "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"},
		{"contentVersion", "1.0.0.0"},
		{"metadata", ordered{{"description", "Azure Monitor managed Prometheus alert rules for one mlapp release. Generated from charts/mlapp/files/alerts.yaml by go test ./test/chart -update; do not edit."}}},
		{"parameters", ordered{
			{"azureMonitorWorkspaceId", param("string", "Resource ID of the Azure Monitor workspace the AKS cluster sends metrics to.", nil)},
			{"clusterResourceId", param("string", "Resource ID of the AKS cluster (Microsoft.ContainerService/managedClusters); its name scopes the rules.", nil)},
			{"namespace", param("string", "Namespace of the mlapp release.", nil)},
			{"appName", param("string", "Full name of the release's objects (Deployment, HPA): <release>-mlapp unless the release name contains mlapp.", nil)},
			{"ruleGroupPrefix", param("string", "Prefix of the rule group names.", "[format('{0}-{1}', parameters('namespace'), parameters('appName'))]")},
			{"actionGroupId", param("string", "Resource ID of an action group to notify; empty for none.", "")},
			{"location", param("string", "Location of the rule groups (the workspace's region).", "[resourceGroup().location]")},
		}},
		{"resources", resources},
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(tmpl); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

var spaces = regexp.MustCompile(`\s+`)

// oneLine collapses whitespace; the rules' strings never hold runs of whitespace.
func oneLine(s string) string { return strings.TrimSpace(spaces.ReplaceAllString(s, " ")) }

// armSubstitute turns a string holding placeholders into an ARM expression that replaces them with
// parameters; a string without placeholders is returned as is.
func armSubstitute(s string) string {
	if !strings.Contains(s, "__") {
		return armLiteral(s)
	}
	expr := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	for _, p := range rulePlaceholders {
		if strings.Contains(s, p.token) {
			expr = fmt.Sprintf("replace(%s, '%s', parameters('%s'))", expr, p.token, p.param)
		}
	}
	return "[" + expr + "]"
}

// armLiteral escapes a literal that ARM would otherwise read as an expression.
func armLiteral(s string) string {
	if strings.HasPrefix(s, "[") {
		return "[" + s
	}
	return s
}

func sortedStrings(m map[string]string, substitute bool) ordered {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var o ordered
	for _, k := range keys {
		v := armLiteral(m[k])
		if substitute {
			v = armSubstitute(m[k])
		}
		o = append(o, kv{k, v})
	}
	return o
}

// isoDuration converts a Prometheus duration (5m, 1h30m) to ISO 8601 (PT5M, PT1H30M).
func isoDuration(s string) (string, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d%time.Second != 0 {
		return "", fmt.Errorf("duration %q cannot be expressed in ISO 8601 seconds", s)
	}
	out := "PT"
	if h := d / time.Hour; h > 0 {
		out += fmt.Sprintf("%dH", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		out += fmt.Sprintf("%dM", m)
		d -= m * time.Minute
	}
	if d > 0 {
		out += fmt.Sprintf("%dS", d/time.Second)
	}
	return out, nil
}

// kv and ordered keep the template's key order stable and readable.
type kv struct {
	k string
	v any
}

type ordered []kv

// MarshalJSON writes the pairs in order.
func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(p.k)
		if err != nil {
			return nil, err
		}
		var v bytes.Buffer
		enc := json.NewEncoder(&v)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(p.v); err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(bytes.TrimRight(v.Bytes(), "\n"))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
