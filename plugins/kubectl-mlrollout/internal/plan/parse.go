package plan

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// LineError is a plan file error at a line.
type LineError struct {
	File string
	Line int
	Msg  string
}

// Error reads "plan file "f": line N: msg".
func (e *LineError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("plan file %q: line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("plan file %q: %s", e.File, e.Msg)
}

// parser walks the YAML node tree, so that every error names the line it comes from
// (decoding into structs through sigs.k8s.io/yaml would lose the lines).
type parser struct {
	file string
	dir  string
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &LineError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// ParseFile reads and strictly validates a plan file.
func ParseFile(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading plan file: %w", err)
	}
	return Parse(path, b)
}

// Parse strictly validates the plan in b; name is used in errors and to resolve bodyFile paths.
func Parse(name string, b []byte) (*Plan, error) {
	p := &parser{file: name, dir: filepath.Dir(name)}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, &LineError{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, p.errf(&extra, "more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, p.errf(nil, "empty plan")
	}
	root := doc.Content[0]
	fields, err := p.mapping(root, "plan", "apiVersion", "kind", "steps", "checks")
	if err != nil {
		return nil, err
	}
	if n, ok := fields["apiVersion"]; !ok || n.Value != APIVersion {
		return nil, p.errf(orNode(n, root), "apiVersion must be %q", APIVersion)
	}
	if n, ok := fields["kind"]; !ok || n.Value != Kind {
		return nil, p.errf(orNode(n, root), "kind must be %q", Kind)
	}
	out := &Plan{}
	stepsNode, ok := fields["steps"]
	if !ok {
		return nil, p.errf(root, "steps is required")
	}
	if stepsNode.Kind != yaml.SequenceNode || len(stepsNode.Content) == 0 {
		return nil, p.errf(stepsNode, "steps must be a non-empty list")
	}
	for _, sn := range stepsNode.Content {
		s, err := p.step(sn)
		if err != nil {
			return nil, err
		}
		out.Steps = append(out.Steps, s)
	}
	if err := validateWeights(out.Steps, func(i int) string { return "" }); err != nil {
		return nil, p.errf(stepsNode.Content[stepIndexFromErr(out.Steps)], "%s", strings.TrimPrefix(err.Error(), ": "))
	}
	out.Steps = Finish(out.Steps)
	if cn, ok := fields["checks"]; ok {
		if cn.Kind != yaml.SequenceNode {
			return nil, p.errf(cn, "checks must be a list")
		}
		seen := map[string]int{}
		for _, n := range cn.Content {
			c, err := p.check(n)
			if err != nil {
				return nil, err
			}
			if l, dup := seen[c.Name]; dup {
				return nil, p.errf(n, "duplicate check name %q (first on line %d)", c.Name, l)
			}
			seen[c.Name] = n.Line
			out.Checks = append(out.Checks, c)
		}
	}
	return out, nil
}

// stepIndexFromErr finds the first step that breaks the weight rules, to point at its line.
func stepIndexFromErr(steps []Step) int {
	last := 0
	for i, s := range steps {
		if s.Pause {
			continue
		}
		if s.Weight < 1 || s.Weight > 100 || s.Weight <= last {
			return i
		}
		last = s.Weight
	}
	return len(steps) - 1
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

// mapping checks that n is a mapping with only the allowed keys, and returns key -> value node.
func (p *parser) mapping(n *yaml.Node, what string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s must be a mapping", what)
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !contains(allowed, k.Value) {
			return nil, p.errf(k, "unknown field %q in %s (want one of: %s)", k.Value, what, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.errf(k, "duplicate field %q in %s", k.Value, what)
		}
		out[k.Value] = v
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) scalar(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s must be a scalar", field)
	}
	return n.Value, nil
}

func (p *parser) intValue(n *yaml.Node, field string) (int, error) {
	s, err := p.scalar(n, field)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, p.errf(n, "%s: %q is not an integer", field, s)
	}
	return v, nil
}

func (p *parser) floatValue(n *yaml.Node, field string) (float64, error) {
	s, err := p.scalar(n, field)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, p.errf(n, "%s: %q is not a number", field, s)
	}
	return v, nil
}

func (p *parser) duration(n *yaml.Node, field string) (Duration, error) {
	s, err := p.scalar(n, field)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, p.errf(n, "%s: bad duration %q (want e.g. 30s, 2m, 1h)", field, s)
	}
	if d < 0 {
		return 0, p.errf(n, "%s: duration %q is negative", field, s)
	}
	return Duration(d), nil
}

func (p *parser) step(n *yaml.Node) (Step, error) {
	f, err := p.mapping(n, "step", "weight", "bake", "pause")
	if err != nil {
		return Step{}, err
	}
	var s Step
	if pn, ok := f["pause"]; ok {
		if len(f) != 1 {
			return s, p.errf(n, "a pause step takes no other field")
		}
		if _, err := p.mapping(pn, "pause"); err != nil {
			return s, err
		}
		return Step{Pause: true}, nil
	}
	wn, ok := f["weight"]
	if !ok {
		return s, p.errf(n, "a step needs weight or pause")
	}
	if s.Weight, err = p.intValue(wn, "weight"); err != nil {
		return s, err
	}
	if s.Weight < 1 || s.Weight > 100 {
		return s, p.errf(wn, "weight %d is outside 1..100", s.Weight)
	}
	if bn, ok := f["bake"]; ok {
		if s.Bake, err = p.duration(bn, "bake"); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (p *parser) check(n *yaml.Node) (Check, error) {
	f, err := p.mapping(n, "check", "name", "interval", "initialDelay", "failureLimit", "prometheus", "http")
	if err != nil {
		return Check{}, err
	}
	var c Check
	nn, ok := f["name"]
	if !ok || nn.Value == "" {
		return c, p.errf(n, "a check needs a name")
	}
	c.Name = nn.Value
	if in, ok := f["interval"]; ok {
		if c.Interval, err = p.duration(in, "interval"); err != nil {
			return c, err
		}
		if c.Interval == 0 {
			return c, p.errf(in, "interval must be positive")
		}
	}
	if dn, ok := f["initialDelay"]; ok {
		if c.InitialDelay, err = p.duration(dn, "initialDelay"); err != nil {
			return c, err
		}
	}
	if fl, ok := f["failureLimit"]; ok {
		if c.FailureLimit, err = p.intValue(fl, "failureLimit"); err != nil {
			return c, err
		}
		if c.FailureLimit < 0 {
			return c, p.errf(fl, "failureLimit must not be negative")
		}
	}
	pn, hasProm := f["prometheus"]
	hn, hasHTTP := f["http"]
	switch {
	case hasProm == hasHTTP:
		return c, p.errf(n, "check %q needs exactly one of prometheus or http", c.Name)
	case hasProm:
		c.Prometheus, err = p.prometheus(pn)
	default:
		c.HTTP, err = p.http(hn)
	}
	return c, err
}

func (p *parser) prometheus(n *yaml.Node) (*PrometheusCheck, error) {
	f, err := p.mapping(n, "prometheus", "query", "baselineQuery", "max", "min", "maxRatio")
	if err != nil {
		return nil, err
	}
	pc := &PrometheusCheck{}
	qn, ok := f["query"]
	if !ok || strings.TrimSpace(qn.Value) == "" {
		return nil, p.errf(n, "prometheus.query is required")
	}
	pc.Query = qn.Value
	if err := p.template(qn); err != nil {
		return nil, err
	}
	if bn, ok := f["baselineQuery"]; ok {
		pc.BaselineQuery = bn.Value
		if err := p.template(bn); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"max", "min", "maxRatio"} {
		vn, ok := f[k]
		if !ok {
			continue
		}
		v, err := p.floatValue(vn, k)
		if err != nil {
			return nil, err
		}
		switch k {
		case "max":
			pc.Max = &v
		case "min":
			pc.Min = &v
		case "maxRatio":
			if v <= 0 {
				return nil, p.errf(vn, "maxRatio must be positive")
			}
			pc.MaxRatio = &v
		}
	}
	switch {
	case (pc.BaselineQuery == "") != (pc.MaxRatio == nil):
		return nil, p.errf(n, "baselineQuery and maxRatio go together")
	case pc.BaselineQuery == "" && pc.Max == nil && pc.Min == nil:
		return nil, p.errf(n, "prometheus check needs max, min, or baselineQuery with maxRatio")
	case pc.Max != nil && pc.Min != nil && *pc.Min > *pc.Max:
		return nil, p.errf(n, "min %g is above max %g", *pc.Min, *pc.Max)
	}
	return pc, nil
}

func (p *parser) http(n *yaml.Node) (*HTTPCheck, error) {
	f, err := p.mapping(n, "http", "port", "path", "method", "headers", "body", "bodyFile", "expectStatus", "maxLatency", "compareWithStable")
	if err != nil {
		return nil, err
	}
	hc := &HTTPCheck{Path: "/", ExpectStatus: http.StatusOK}
	pn, ok := f["port"]
	if !ok {
		return nil, p.errf(n, "http.port is required")
	}
	if hc.Port, err = p.intValue(pn, "port"); err != nil {
		return nil, err
	}
	if hc.Port < 1 || hc.Port > 65535 {
		return nil, p.errf(pn, "port %d is outside 1..65535", hc.Port)
	}
	if v, ok := f["path"]; ok {
		if !strings.HasPrefix(v.Value, "/") {
			return nil, p.errf(v, "path %q must start with /", v.Value)
		}
		hc.Path = v.Value
	}
	if v, ok := f["headers"]; ok {
		hm, err := p.mapping(v, "headers", keys(v)...)
		if err != nil {
			return nil, err
		}
		hc.Headers = map[string]string{}
		for k, vn := range hm {
			if hc.Headers[k], err = p.scalar(vn, "headers."+k); err != nil {
				return nil, err
			}
		}
	}
	_, hasBody := f["body"]
	_, hasFile := f["bodyFile"]
	if hasBody && hasFile {
		return nil, p.errf(n, "body and bodyFile are mutually exclusive")
	}
	if v, ok := f["body"]; ok {
		hc.Body = v.Value
	}
	if v, ok := f["bodyFile"]; ok {
		path := v.Value
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, p.errf(v, "bodyFile: %v", errors.Unwrap(err))
		}
		hc.Body = string(b)
	}
	hc.Method = http.MethodGet
	if hc.Body != "" {
		hc.Method = http.MethodPost
	}
	if v, ok := f["method"]; ok {
		m := strings.ToUpper(v.Value)
		if !contains([]string{"GET", "POST", "PUT", "HEAD"}, m) {
			return nil, p.errf(v, "method %q is not one of GET, POST, PUT, HEAD", v.Value)
		}
		hc.Method = m
	}
	if v, ok := f["expectStatus"]; ok {
		if hc.ExpectStatus, err = p.intValue(v, "expectStatus"); err != nil {
			return nil, err
		}
		if hc.ExpectStatus < 100 || hc.ExpectStatus > 599 {
			return nil, p.errf(v, "expectStatus %d is not an HTTP status", hc.ExpectStatus)
		}
	}
	if v, ok := f["maxLatency"]; ok {
		if hc.MaxLatency, err = p.duration(v, "maxLatency"); err != nil {
			return nil, err
		}
	}
	if v, ok := f["compareWithStable"]; ok {
		cf, err := p.mapping(v, "compareWithStable", "jsonPath", "tolerance")
		if err != nil {
			return nil, err
		}
		cmp := &Compare{JSONPath: "$"}
		if jn, ok := cf["jsonPath"]; ok {
			if _, err := ParseJSONPath(jn.Value); err != nil {
				return nil, p.errf(jn, "jsonPath: %v", err)
			}
			cmp.JSONPath = jn.Value
		}
		if tn, ok := cf["tolerance"]; ok {
			if cmp.Tolerance, err = p.floatValue(tn, "tolerance"); err != nil {
				return nil, err
			}
			if cmp.Tolerance < 0 {
				return nil, p.errf(tn, "tolerance must not be negative")
			}
		}
		hc.CompareWithStable = cmp
	}
	return hc, nil
}

// keys lists a mapping node's keys (headers accept any key).
func keys(n *yaml.Node) []string {
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, n.Content[i].Value)
	}
	sort.Strings(out)
	return out
}
