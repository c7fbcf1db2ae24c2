package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// rootModule is the module path that marks the repository root.
const rootModule = "github.com/aks-mlops/mlplugins"

// Component is one background process of the platform.
type Component struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // process start time in clock ticks since boot, guards against pid reuse
	Addr  string `json:"addr,omitempty"`
	Log   string `json:"log"`
}

// State is what up records in .platform/state.json.
type State struct {
	Root       string `json:"root"`
	BinDir     string `json:"binDir"`
	APIServer  string `json:"apiServer"`
	Token      string `json:"token"`
	CAFile     string `json:"caFile"`
	Prometheus string `json:"prometheus"`
	Source     string `json:"sourceRegistry"`
	ACR        string `json:"acrLoginServer"`
	ACRBackend string `json:"acrBackend"`
	Entra      string `json:"entra"`
	KwokServer string `json:"kwokServer"`
	Etcd       string `json:"etcd"`
	Nodes      int    `json:"nodes"`
	// RegistryStorage is where the registries keep their blobs: memory (tmpfs) or disk.
	RegistryStorage string      `json:"registryStorage"`
	Components      []Component `json:"components"`
	ReadySeconds    float64     `json:"readySeconds"`
}

// resolveDir finds the platform state directory: --dir, $PLATFORM_DIR, the directory of this executable
// when it is the copy that up installs, or <repository root>/.platform.
func resolveDir(flagDir string) (string, error) {
	if flagDir != "" {
		return filepath.Abs(flagDir)
	}
	if d := os.Getenv("PLATFORM_DIR"); d != "" {
		return filepath.Abs(d)
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		if filepath.Base(exe) == "platform" && filepath.Base(d) == ".platform" {
			return d, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	root, err := findRoot(wd)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".platform"), nil
}

// findRoot walks up from dir to the directory whose go.mod declares the project module.
func findRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(b) == rootModule {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no %s go.mod above %s (set PLATFORM_DIR or run inside the repository)", rootModule, dir)
		}
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", statePath(dir), err)
	}
	return &s, nil
}

func saveState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath(dir), b, 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lockDir takes an exclusive lock on dir/.lock, serialising up and down across processes.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
}

// procStart returns the start time of pid (field 22 of /proc/pid/stat) and whether it is alive (not a zombie).
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	var start uint64
	if _, err := fmt.Sscan(f[19], &start); err != nil {
		return 0, false
	}
	return start, true
}

// alive reports whether the component's process is still the one up started.
func (c Component) alive() bool {
	start, ok := procStart(c.PID)
	return ok && start == c.Start
}

// rssBytes sums the resident memory of pid and its descendants.
func rssBytes(pid int) int64 {
	var total int64
	for _, p := range append([]int{pid}, descendants(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				var kb int64
				_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "VmRSS:"), "kB")), &kb)
				total += kb * 1024
			}
		}
	}
	return total
}

// descendants lists the pids whose ancestor chain reaches pid.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		var pp int
		_, _ = fmt.Sscan(f[1], &pp)
		parent[p] = pp
	}
	var out []int
	for p := range parent {
		for q, n := parent[p], 0; q > 1 && n < 64; q, n = parent[q], n+1 {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

var errNotUp = errors.New("the platform is not up (run: make platform-up)")
