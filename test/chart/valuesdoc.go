package chart

import (
	"encoding/json"
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// ValuesRow is one documented value of a chart: its dotted key, type, default and description.
type ValuesRow struct {
	Key, Type, Default, Description string
}

// ValuesRows reads a values.yaml and returns a row for every key documented with a "# --" comment.
// A documented mapping is one row (its children are its default); an undocumented mapping is
// descended into. An undocumented leaf is an error, so a new value cannot be added without docs.
func ValuesRows(valuesYAML []byte) ([]ValuesRow, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(valuesYAML, &doc); err != nil {
		return nil, fmt.Errorf("parsing values: %w", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("values must be a mapping")
	}
	var rows []ValuesRow
	if err := walkValues(doc.Content[0], "", &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

func walkValues(m *yaml.Node, prefix string, rows *[]ValuesRow) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := k.Value
		if strings.ContainsAny(key, ".") {
			key = `"` + key + `"`
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		desc, ok := docComment(k.HeadComment)
		if !ok {
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				if err := walkValues(v, key, rows); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("value %s (line %d) has no \"# --\" comment", key, k.Line)
		}
		var val any
		if err := v.Decode(&val); err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		def, err := json.Marshal(val)
		if err != nil {
			return fmt.Errorf("encoding default of %s: %w", key, err)
		}
		*rows = append(*rows, ValuesRow{Key: key, Type: nodeType(v), Default: string(def), Description: desc})
	}
	return nil
}

// docComment returns the text of the last "# --" comment block in a head comment.
func docComment(head string) (string, bool) {
	lines := strings.Split(head, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var parts []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(l)
		if i == 0 {
			l = strings.TrimPrefix(l, "# --")
		} else {
			l = strings.TrimPrefix(l, "#")
		}
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " "), true
}

func nodeType(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	}
	switch n.Tag {
	case "!!bool":
		return "bool"
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!null":
		return "null"
	}
	return "string"
}

// ValuesTable renders rows as a Markdown table.
func ValuesTable(rows []ValuesRow) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", cell(r.Key), r.Type, cell(r.Default), cell(r.Description))
	}
	return b.String()
}

// Markers delimiting the generated values table in the chart README.
const (
	ValuesTableStart = "<!-- values-table:start (generated from values.yaml by go test ./test/chart -update; do not edit) -->"
	ValuesTableEnd   = "<!-- values-table:end -->"
)

// ReplaceValuesTable puts table between the markers of readme.
func ReplaceValuesTable(readme, table string) (string, error) {
	i := strings.Index(readme, ValuesTableStart)
	j := strings.Index(readme, ValuesTableEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("README lacks the values table markers")
	}
	return readme[:i+len(ValuesTableStart)] + "\n\n" + table + "\n" + readme[j:], nil
}
