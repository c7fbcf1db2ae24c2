package plan

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Vars are the values a Prometheus query template can use.
type Vars struct {
	// Namespace is the Deployment's namespace.
	Namespace string
	// Deployment is the stable Deployment's name.
	Deployment string
	// CanaryDeployment is the canary Deployment's name.
	CanaryDeployment string
	// CanaryPods is a regex alternation of the canary pods' names ("a|b").
	CanaryPods string
	// StablePods is a regex alternation of the stable pods' names.
	StablePods string
}

// VarNames lists the template variables a query may use.
var VarNames = []string{"Namespace", "Deployment", "CanaryDeployment", "CanaryPods", "StablePods"}

// placeholder matches one {{ ... }} action of a query template.
var placeholder = regexp.MustCompile(`\{\{(.*?)\}\}`)

// variable matches the only action a query may use: {{ .Name }}.
var variable = regexp.MustCompile(`^\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*$`)

// templateError is the first bad action of a query and its line offset inside the query.
type templateError struct {
	msg  string
	line int
}

// checkTemplate finds the first action of q that is not a known {{ .Var }}. Queries are filled by
// plain substitution (no text/template: its reflection would keep every method of every type in
// the binary).
func checkTemplate(q string) *templateError {
	if i := strings.Index(q, "{{"); i >= 0 && !strings.Contains(q[i:], "}}") {
		return &templateError{msg: "query template: unclosed {{", line: strings.Count(q[:i], "\n")}
	}
	for _, m := range placeholder.FindAllStringSubmatchIndex(q, -1) {
		body := q[m[2]:m[3]]
		line := strings.Count(q[:m[0]], "\n")
		v := variable.FindStringSubmatch(body)
		if v == nil {
			return &templateError{msg: fmt.Sprintf("query template: {{%s}} is not a variable (want {{ .Name }} with one of: %s)", body, strings.Join(VarNames, ", ")), line: line}
		}
		if !contains(VarNames, v[1]) {
			return &templateError{msg: fmt.Sprintf("unknown template variable {{ .%s }} (want one of: %s)", v[1], strings.Join(VarNames, ", ")), line: line}
		}
	}
	return nil
}

// template validates a query template in node n, naming the line of a bad action.
func (p *parser) template(n *yaml.Node) error {
	line := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		line++ // a block scalar's text starts on the line after the indicator
	}
	if e := checkTemplate(n.Value); e != nil {
		return &LineError{File: p.file, Line: line + e.line, Msg: e.msg}
	}
	return nil
}

// Render fills a query template with vars.
func Render(q string, vars Vars) (string, error) {
	if e := checkTemplate(q); e != nil {
		return "", errors.New(e.msg)
	}
	values := map[string]string{
		"Namespace": vars.Namespace, "Deployment": vars.Deployment, "CanaryDeployment": vars.CanaryDeployment,
		"CanaryPods": vars.CanaryPods, "StablePods": vars.StablePods,
	}
	return placeholder.ReplaceAllStringFunc(q, func(m string) string {
		return values[variable.FindStringSubmatch(m[2 : len(m)-2])[1]]
	}), nil
}

// PodRegex returns a regex alternation matching exactly the given pod names, or a pattern that
// matches no pod when there are none (an empty alternation would match every pod).
func PodRegex(names []string) string {
	if len(names) == 0 {
		return "mlrollout-no-pods-matched"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strings.ReplaceAll(n, ".", `\\.`)
	}
	return strings.Join(q, "|")
}
