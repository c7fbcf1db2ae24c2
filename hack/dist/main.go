// Command dist builds the release archives of the three plugins, a SHA256SUMS file and the Krew manifests.
//
// Archives are reproducible: the same source and VERSION give byte-identical archives (fixed file times,
// owners and modes, sorted entries, gzip without a name or time, -trimpath and an empty build id).
//
//	go run ./hack/dist -version v0.1.0 [-out dist] [-platforms linux/amd64,...] [-manifests krew-manifests]
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"
)

const module = "github.com/aks-mlops/mlplugins"

// defaultPlatforms are the platforms of a release.
var defaultPlatforms = "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64"

// downloadBase is where a release's archives are published; Krew manifests point there.
const downloadBase = "https://github.com/aks-mlops/mlplugins/releases/download"

var semver = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

type plugin struct {
	Name   string // binary name
	Krew   string // krew plugin name ("" for the Helm plugin)
	Extra  []file // files besides the binary and LICENSE
	BinDir string // directory of the binary inside the archive ("" for the root)
}

type file struct{ from, to string }

var plugins = []plugin{
	{Name: "kubectl-mlrollout", Krew: "mlrollout", Extra: []file{{"hack/dist/completion/kubectl_complete-mlrollout", "kubectl_complete-mlrollout"}}},
	{Name: "kubectl-mlhealth", Krew: "mlhealth", Extra: []file{{"hack/dist/completion/kubectl_complete-mlhealth", "kubectl_complete-mlhealth"}}},
	// plugin.yaml at the archive's root: Helm's HTTP installer looks for it there.
	{Name: "helm-acrpush", BinDir: "bin", Extra: []file{
		{"plugins/helm-acrpush/plugin.yaml", "plugin.yaml"},
		{"plugins/helm-acrpush/scripts/install-binary.sh", "scripts/install-binary.sh"},
	}},
}

// Artifact is one archive of one plugin for one platform.
type Artifact struct {
	Plugin, OS, Arch, File, URI, SHA256, Bin string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("dist", flag.ContinueOnError)
	version := fs.String("version", "", "Release version, v-prefixed semver (required)")
	out := fs.String("out", "dist", "Output directory")
	platforms := fs.String("platforms", defaultPlatforms, "Comma-separated GOOS/GOARCH list")
	manifests := fs.String("manifests", "krew-manifests", "Where the generated Krew manifests go")
	only := fs.String("plugins", "", "Comma-separated subset of plugins to build (default all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !semver.MatchString(*version) {
		return fmt.Errorf("version %q is not v-prefixed semver (like v1.2.3)", *version)
	}
	commit, date, err := gitStamp()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var arts []Artifact
	for _, p := range plugins {
		if *only != "" && !contains(strings.Split(*only, ","), p.Name) {
			continue
		}
		for _, pl := range strings.Split(*platforms, ",") {
			goos, goarch, ok := strings.Cut(strings.TrimSpace(pl), "/")
			if !ok {
				return fmt.Errorf("platform %q is not GOOS/GOARCH", pl)
			}
			a, err := buildOne(p, goos, goarch, *version, commit, date, *out)
			if err != nil {
				return fmt.Errorf("building %s for %s/%s: %w", p.Name, goos, goarch, err)
			}
			fmt.Fprintf(os.Stderr, "%s  %s\n", a.SHA256, a.File)
			arts = append(arts, a)
		}
	}
	if err := writeSums(filepath.Join(*out, "SHA256SUMS"), arts); err != nil {
		return err
	}
	return writeManifests(*manifests, *version, arts)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}

// gitStamp returns the commit and its committer date, the only time a reproducible build may use.
func gitStamp() (commit string, date time.Time, err error) {
	b, err := exec.Command("git", "log", "-1", "--format=%H %ct").Output()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("reading the commit to stamp: %w", err)
	}
	var secs int64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%s %d", &commit, &secs); err != nil {
		return "", time.Time{}, fmt.Errorf("parsing git log output %q: %w", b, err)
	}
	return commit, time.Unix(secs, 0).UTC(), nil
}

func buildOne(p plugin, goos, goarch, version, commit string, date time.Time, out string) (Artifact, error) {
	bin := p.Name
	if goos == "windows" {
		bin += ".exe"
	}
	tmp, err := os.MkdirTemp("", "dist-")
	if err != nil {
		return Artifact{}, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	ldflags := fmt.Sprintf("-s -w -buildid= -X %[1]s/pkg/shared/version.version=%[2]s -X %[1]s/pkg/shared/version.commit=%[3]s -X %[1]s/pkg/shared/version.date=%[4]s",
		module, version, commit, date.Format(time.RFC3339))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(tmp, bin), "./plugins/"+p.Name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=-buildvcs=false")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return Artifact{}, err
	}
	entries := []entry{{name: bin, src: filepath.Join(tmp, bin), mode: 0o755}, {name: "LICENSE", src: "LICENSE", mode: 0o644}}
	for _, f := range p.Extra {
		if goos == "windows" && strings.HasPrefix(f.to, "kubectl_complete-") {
			continue // kubectl's completion helpers are shell scripts
		}
		mode := int64(0o644)
		if strings.HasPrefix(f.to, "kubectl_complete-") || strings.HasSuffix(f.to, ".sh") {
			mode = 0o755
		}
		entries = append(entries, entry{name: f.to, src: f.from, mode: mode})
	}
	if p.BinDir != "" {
		entries[0].name = p.BinDir + "/" + bin
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	name := fmt.Sprintf("%s_%s_%s_%s", p.Name, version, goos, goarch)
	var data []byte
	if goos == "windows" {
		name += ".zip"
		data, err = zipArchive(entries, date)
	} else {
		name += ".tar.gz"
		data, err = tarGz(entries, date)
	}
	if err != nil {
		return Artifact{}, err
	}
	if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
		return Artifact{}, err
	}
	sum := sha256.Sum256(data)
	return Artifact{Plugin: p.Krew, OS: goos, Arch: goarch, File: name, Bin: bin,
		URI: downloadBase + "/" + version + "/" + name, SHA256: hex.EncodeToString(sum[:])}, nil
}

type entry struct {
	name, src string
	mode      int64
}

func tarGz(entries []entry, date time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // no name, zero ModTime: reproducible
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	for _, e := range entries {
		if d := filepath.Dir(e.name); d != "." {
			for _, p := range parents(d) {
				if !dirs[p] {
					dirs[p] = true
					if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: date, Format: tar.FormatPAX}); err != nil {
						return nil, err
					}
				}
			}
		}
		b, err := os.ReadFile(e.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: e.mode, Size: int64(len(b)), ModTime: date, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parents returns "a", "a/b" for "a/b".
func parents(dir string) []string {
	var out []string
	parts := strings.Split(dir, "/")
	for i := range parts {
		out = append(out, strings.Join(parts[:i+1], "/"))
	}
	return out
}

func zipArchive(entries []entry, date time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return nil, err
		}
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: date}
		h.SetMode(os.FileMode(e.mode))
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeSums(path string, arts []Artifact) error {
	sorted := append([]Artifact(nil), arts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].File < sorted[j].File })
	var b strings.Builder
	for _, a := range sorted {
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256, a.File)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func writeManifests(dir, version string, arts []Artifact) error {
	byPlugin := map[string][]Artifact{}
	for _, a := range arts {
		if a.Plugin != "" {
			byPlugin[a.Plugin] = append(byPlugin[a.Plugin], a)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for name, list := range byPlugin {
		tpl, err := template.ParseFiles(filepath.Join("hack", "dist", "krew", name+".yaml.tmpl"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var b bytes.Buffer
		if err := tpl.Execute(&b, map[string]any{"Version": version, "Platforms": list}); err != nil {
			errs = append(errs, fmt.Errorf("rendering the %s manifest: %w", name, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), b.Bytes(), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
