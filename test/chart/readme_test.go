package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeValuesTable fails when README.md's values table drifts from values.yaml (-update rewrites it).
func TestReadmeValuesTable(t *testing.T) {
	values, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ValuesRows(values)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 40 {
		t.Errorf("only %d documented values", len(rows))
	}
	readmePath := filepath.Join(chartDir(t), "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReplaceValuesTable(string(readme), ValuesTable(rows))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(readmePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want != string(readme) {
		t.Errorf("README.md values table is out of date (go test ./test/chart -run TestReadmeValuesTable -update):\n%s", diffLines(string(readme), want))
	}
}

// TestValuesRows checks the generator on a small file: documented maps stay whole, undocumented ones are
// descended into, and an undocumented leaf is refused.
func TestValuesRows(t *testing.T) {
	rows, err := ValuesRows([]byte("# header\n\n# -- Replicas.\nreplicaCount: 2\nimage:\n  # -- Repo | path.\n  repository: a/b\n# -- Context,\n# two lines.\nctx:\n  runAsUser: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := ValuesTable(rows)
	for _, w := range []string{"| `replicaCount` | int | `2` | Replicas. |", "| `image.repository` | string | `\"a/b\"` | Repo \\| path. |", "| `ctx` | object | `{\"runAsUser\":1}` | Context, two lines. |"} {
		if !strings.Contains(got, w) {
			t.Errorf("table lacks %q:\n%s", w, got)
		}
	}
	if _, err := ValuesRows([]byte("image:\n  tag: x\n")); err == nil || !strings.Contains(err.Error(), "image.tag (line 2) has no") {
		t.Errorf("undocumented leaf: got %v", err)
	}
}
