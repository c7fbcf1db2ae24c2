package plan

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"

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

// parseTemplate parses q and returns the first unknown variable with its line offset inside q.
func parseTemplate(q string) (*template.Template, string, int, error) {
	t, err := template.New("query").Option("missingkey=error").Parse(q)
	if err != nil {
		return nil, "", 0, err
	}
	var bad string
	var badLine int
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		if n == nil || bad != "" {
			return
		}
		switch x := n.(type) {
		case *parse.ListNode:
			if x == nil {
				return
			}
			for _, c := range x.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(x.Pipe)
		case *parse.PipeNode:
			if x == nil {
				return
			}
			for _, c := range x.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range x.Args {
				walk(a)
			}
		case *parse.FieldNode:
			if !contains(VarNames, x.Ident[0]) {
				bad = x.Ident[0]
				badLine = strings.Count(q[:int(x.Pos)], "\n")
			}
		case *parse.IfNode:
			walk(x.Pipe)
			walk(x.List)
			walk(x.ElseList)
		case *parse.RangeNode:
			walk(x.Pipe)
			walk(x.List)
			walk(x.ElseList)
		case *parse.WithNode:
			walk(x.Pipe)
			walk(x.List)
			walk(x.ElseList)
		}
	}
	walk(t.Tree.Root)
	return t, bad, badLine, nil
}

// template validates a query template in node n, naming the line of an unknown variable.
func (p *parser) template(n *yaml.Node) error {
	_, bad, off, err := parseTemplate(n.Value)
	line := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		line++ // a block scalar's text starts on the line after the indicator
	}
	if err != nil {
		return &LineError{File: p.file, Line: line, Msg: fmt.Sprintf("query template: %v", err)}
	}
	if bad != "" {
		return &LineError{File: p.file, Line: line + off, Msg: fmt.Sprintf("unknown template variable {{ .%s }} (want one of: %s)", bad, strings.Join(VarNames, ", "))}
	}
	return nil
}

// Render fills a query template with vars.
func Render(q string, vars Vars) (string, error) {
	t, bad, _, err := parseTemplate(q)
	if err != nil {
		return "", fmt.Errorf("query template: %w", err)
	}
	if bad != "" {
		return "", fmt.Errorf("unknown template variable {{ .%s }}", bad)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, vars); err != nil {
		return "", fmt.Errorf("rendering query: %w", err)
	}
	return b.String(), nil
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
