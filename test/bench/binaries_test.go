//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBinariesBenchmark records each plugin's size and `--help` start-up time next to `kubectl version --client`,
// the cheapest command of the tool users already run.
func TestBinariesBenchmark(t *testing.T) {
	root := repoRoot()
	bin := filepath.Join(root, "bin")
	const runs = 20
	timeIt := func(name string, args ...string) time.Duration {
		var ds []time.Duration
		for i := 0; i < runs; i++ {
			start := time.Now()
			if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
			}
			ds = append(ds, time.Since(start))
		}
		return Median(ds)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	base := timeIt(kubectl, "version", "--client")
	kst, _ := os.Stat(kubectl)
	var b strings.Builder
	b.WriteString("## Binaries\n\n`make build && go test -tags bench ./test/bench -run TestBinariesBenchmark -v` (`-trimpath -ldflags \"-s -w\"`, median of 20 runs).\n\n")
	b.WriteString("| binary | size | start-up (`--help`) | vs `kubectl version --client` |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| kubectl %s (baseline) | %.1f MB | %s | 1.00x |\n", kubectlVersion(kubectl), float64(kst.Size())/1e6, base.Round(100*time.Microsecond))
	for _, p := range []string{"kubectl-mlrollout", "kubectl-mlhealth", "helm-acrpush"} {
		path := filepath.Join(bin, p)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatalf("%s not built (run make build): %v", p, err)
		}
		d := timeIt(path, "--help")
		fmt.Fprintf(&b, "| %s | %.1f MB | %s | %.2fx |\n", p, float64(st.Size())/1e6, d.Round(100*time.Microsecond), float64(d)/float64(base))
	}
	if err := WriteSection("binaries", b.String()); err != nil {
		t.Fatal(err)
	}
	t.Log(b.String())
}

func kubectlVersion(kubectl string) string {
	out, _ := exec.Command(kubectl, "version", "--client").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Client Version: "); ok {
			return v
		}
	}
	return ""
}
