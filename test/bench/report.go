//go:build bench

// Package bench holds the side-by-side benchmarks run by `make bench`; each writes its section of docs/benchmarks.md.
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// WriteSection replaces (or appends) the section named area in docs/benchmarks.md, between
// `<!-- bench:area -->` and `<!-- /bench:area -->` markers, so benchmarks of different areas never overwrite each other.
func WriteSection(area, markdown string) error {
	path := filepath.Join(repoRoot(), "docs", "benchmarks.md")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmarks\n\nWritten by `make bench` (`go test -tags bench ./test/bench/...`); each section names the command that produced it.\n"
	}
	begin, end := "<!-- bench:"+area+" -->", "<!-- /bench:"+area+" -->"
	stamp := fmt.Sprintf("_Measured %s on %s/%s, %d CPUs._\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	block := begin + "\n" + stamp + strings.TrimSpace(markdown) + "\n" + end
	if i := strings.Index(text, begin); i >= 0 {
		if j := strings.Index(text[i:], end); j >= 0 {
			text = text[:i] + block + text[i+j+len(end):]
			return os.WriteFile(path, []byte(text), 0o644)
		}
	}
	text = strings.TrimRight(text, "\n") + "\n\n" + block + "\n"
	return os.WriteFile(path, []byte(text), 0o644)
}

// Median returns the median of ds (0 for none).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if b, _ := os.ReadFile(filepath.Join(d, "go.mod")); strings.HasPrefix(string(b), "module github.com/aks-mlops/mlplugins\n") {
				return d
			}
		}
	}
	return dir
}
