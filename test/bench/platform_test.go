//go:build bench

package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPlatformBenchmark measures the local platform: the cold build of its upstream binaries (recorded by
// tools.sh when it built them), warm `up` in a fresh state directory, `down`, and the memory of every process.
func TestPlatformBenchmark(t *testing.T) {
	root := repoRoot()
	launcher := filepath.Join(t.TempDir(), "platform")
	if out, err := exec.Command("go", "-C", filepath.Join(root, "test", "platform"), "build", "-o", launcher, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the launcher: %v\n%s", err, out)
	}
	binDir, err := exec.Command("bash", filepath.Join(root, "test", "platform", "tools.sh")).Output()
	if err != nil {
		t.Fatalf("tools.sh: %v", err)
	}
	cold := "not recorded"
	if b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(binDir)), "..", "build-seconds")); err == nil {
		cold = strings.TrimSpace(string(b)) + " s"
	}
	run := func(dir string, args ...string) (string, time.Duration) {
		cmd := exec.Command(launcher, args...)
		cmd.Env = append(os.Environ(), "PLATFORM_DIR="+dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("platform %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String(), time.Since(start)
	}
	var ups, downs []time.Duration
	var status string
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		t.Cleanup(func() { // stops what a failed iteration left; a no-op after its own down
			cmd := exec.Command(launcher, "down")
			cmd.Env = append(os.Environ(), "PLATFORM_DIR="+dir)
			_ = cmd.Run()
		})
		_, up := run(dir, "up")
		ups = append(ups, up)
		if i == 0 {
			time.Sleep(5 * time.Second) // let the processes settle before reading their memory
			status, _ = run(dir, "status")
		}
		_, down := run(dir, "down")
		downs = append(downs, down)
	}
	total := regexp.MustCompile(`(?m)^TOTAL\s+(\d+ MiB)`).FindStringSubmatch(status)
	if total == nil {
		t.Fatalf("no TOTAL line in platform status:\n%s", status)
	}
	var b strings.Builder
	b.WriteString("## Local platform\n\n")
	b.WriteString("`go test -tags bench ./test/bench -run TestPlatformBenchmark -v` (3 nodes, binaries cached).\n\n")
	b.WriteString("| measure | value | goal |\n| --- | --- | --- |\n")
	fmt.Fprintf(&b, "| cold build of the upstream binaries (`test/platform/tools.sh`, recorded when it ran) | %s | once per machine; CI budget 90 min |\n", cold)
	fmt.Fprintf(&b, "| warm `platform up` to ready (median of %d, fresh state directory) | %s | < 20 s: %s |\n", len(ups), Median(ups).Round(10*time.Millisecond), met(Median(ups) < 20*time.Second))
	fmt.Fprintf(&b, "| `platform down` (median) | %s | leaves no process |\n", Median(downs).Round(10*time.Millisecond))
	fmt.Fprintf(&b, "| resident memory of all platform processes, idle | %s | |\n\n", total[1])
	b.WriteString("Memory by component, from `platform status`:\n\n```\n" + strings.TrimSpace(status) + "\n```\n")
	if err := WriteSection("platform", b.String()); err != nil {
		t.Fatal(err)
	}
	t.Log(b.String())
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
