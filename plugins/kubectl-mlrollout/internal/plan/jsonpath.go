package plan

import (
	"fmt"
	"strconv"
	"strings"
)

// PathElem is one element of a parsed JSON path: an object key or an array index.
type PathElem struct {
	Key   string
	Index int
	IsIdx bool
}

// ParseJSONPath parses the small JSONPath subset used by compareWithStable: "$", ".key", "['key']" and "[N]".
func ParseJSONPath(p string) ([]PathElem, error) {
	if !strings.HasPrefix(p, "$") {
		return nil, fmt.Errorf("%q must start with $", p)
	}
	rest := p[1:]
	var out []PathElem
	for rest != "" {
		switch {
		case rest[0] == '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			if end == 0 {
				return nil, fmt.Errorf("%q has an empty key", p)
			}
			out = append(out, PathElem{Key: rest[:end]})
			rest = rest[end:]
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("%q has an unclosed [", p)
			}
			inner := rest[1:end]
			rest = rest[end+1:]
			if len(inner) >= 2 && (inner[0] == '\'' || inner[0] == '"') && inner[len(inner)-1] == inner[0] {
				out = append(out, PathElem{Key: inner[1 : len(inner)-1]})
				continue
			}
			i, err := strconv.Atoi(inner)
			if err != nil || i < 0 {
				return nil, fmt.Errorf("%q: %q is not an array index", p, inner)
			}
			out = append(out, PathElem{Index: i, IsIdx: true})
		default:
			return nil, fmt.Errorf("%q: unexpected %q", p, rest[:1])
		}
	}
	return out, nil
}

// Lookup applies a parsed path to a decoded JSON value.
func Lookup(v any, path []PathElem) (any, error) {
	for _, e := range path {
		if e.IsIdx {
			a, ok := v.([]any)
			if !ok || e.Index >= len(a) {
				return nil, fmt.Errorf("no element [%d]", e.Index)
			}
			v = a[e.Index]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no field %q", e.Key)
		}
		if v, ok = m[e.Key]; !ok {
			return nil, fmt.Errorf("no field %q", e.Key)
		}
	}
	return v, nil
}

// CompareValues compares two decoded JSON values: numbers within tolerance, everything else exactly.
// It returns a description of the first difference, or "" when they agree.
func CompareValues(canary, stable any, tolerance float64) string {
	return compareAt("$", canary, stable, tolerance)
}

func compareAt(at string, a, b any, tol float64) string {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return fmt.Sprintf("%s: canary %v, stable %v", at, a, b)
		}
		if d := x - y; d > tol || -d > tol {
			return fmt.Sprintf("%s: canary %g, stable %g (tolerance %g)", at, x, y, tol)
		}
		return ""
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: canary has %s, stable has %s", at, describe(a), describe(b))
		}
		for i := range x {
			if d := compareAt(fmt.Sprintf("%s[%d]", at, i), x[i], y[i], tol); d != "" {
				return d
			}
		}
		return ""
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: canary has %s, stable has %s", at, describe(a), describe(b))
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok {
				return fmt.Sprintf("%s.%s: missing in stable", at, k)
			}
			if d := compareAt(at+"."+k, v, w, tol); d != "" {
				return d
			}
		}
		return ""
	default:
		if a != b {
			return fmt.Sprintf("%s: canary %v, stable %v", at, a, b)
		}
		return ""
	}
}

func describe(v any) string {
	switch x := v.(type) {
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return fmt.Sprintf("an object with %d fields", len(x))
	default:
		return fmt.Sprintf("%v", v)
	}
}
