package chart

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestGoldenRenders renders the chart with its defaults and with every ci/*-values.yaml and compares
// manifests and NOTES with testdata/golden/.
func TestGoldenRenders(t *testing.T) {
	c := loadChart(t)
	cases := map[string]map[string]any{"default": {}}
	for _, f := range ciValueFiles(t) {
		cases[strings.TrimSuffix(f, "-values.yaml")] = readValuesFile(t, filepath.Join(chartDir(t), "ci", f))
	}
	for name, vals := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := renderValues(t, c, vals)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			assertGolden(t, filepath.Join("golden", name+".yaml"), manifest(out, false))
			assertGolden(t, filepath.Join("golden", name+".NOTES.txt"), manifest(out, true))
		})
	}
}
