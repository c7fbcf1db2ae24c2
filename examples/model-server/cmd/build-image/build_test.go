package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/aks-mlops/mlplugins/examples/model-server/models"
)

var twoPlatforms = []string{"linux/amd64", "linux/arm64"}

// fakeBinaries writes a small stand-in binary per platform.
func fakeBinaries(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for _, p := range twoPlatforms {
		f := filepath.Join(dir, strings.ReplaceAll(p, "/", "-"))
		if err := os.WriteFile(f, []byte("binary for "+p), 0o755); err != nil {
			t.Fatal(err)
		}
		out[p] = f
	}
	return out
}

func TestAssembleIsReproducibleAndShaped(t *testing.T) {
	bins := fakeBinaries(t)
	digests := map[string]v1.Hash{}
	binLayers := map[string]map[v1.Hash]bool{} // platform -> binary layer digests over versions
	for _, version := range models.Versions {
		a, err := Assemble(version, twoPlatforms, bins, time.Unix(0, 0).UTC())
		if err != nil {
			t.Fatal(err)
		}
		b, err := Assemble(version, twoPlatforms, bins, time.Unix(0, 0).UTC())
		if err != nil {
			t.Fatal(err)
		}
		da, _ := a.Digest()
		db, _ := b.Digest()
		if da != db {
			t.Fatalf("%s: two assemblies differ: %s %s", version, da, db)
		}
		digests[version] = da
		if mt, _ := a.MediaType(); mt != types.OCIImageIndex {
			t.Errorf("index media type %s", mt)
		}
		im, err := a.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var plats []string
		for _, d := range im.Manifests {
			plats = append(plats, d.Platform.String())
			if d.ArtifactType != "" || d.MediaType != types.OCIManifestSchema1 {
				t.Errorf("%s: index entry %s has media type %s, artifactType %q", version, d.Platform, d.MediaType, d.ArtifactType)
			}
			img, err := a.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, img, version, d.Platform.String())
			layers, _ := img.Layers()
			ld, _ := layers[0].Digest()
			if binLayers[d.Platform.String()] == nil {
				binLayers[d.Platform.String()] = map[v1.Hash]bool{}
			}
			binLayers[d.Platform.String()][ld] = true
		}
		if !slices.Equal(plats, twoPlatforms) {
			t.Errorf("platforms %v", plats)
		}
	}
	if digests["v1"] == digests["v2"] || digests["v2"] == digests["v3"] {
		t.Errorf("versions share a digest: %v", digests)
	}
	for p, ls := range binLayers {
		if len(ls) != 1 {
			t.Errorf("%s: the binary layer differs between versions (%d digests); it should be shared", p, len(ls))
		}
	}
	later, _ := Assemble("v1", twoPlatforms, bins, time.Unix(1700000000, 0).UTC())
	if d, _ := later.Digest(); d == digests["v1"] {
		t.Error("SOURCE_DATE_EPOCH does not reach the image")
	}
}

// checkImage checks the config and the files of one platform image.
func checkImage(t *testing.T, img v1.Image, version, platform string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.OS + "/" + cf.Architecture; got != platform {
		t.Errorf("config platform %s, want %s", got, platform)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/model-server"}) || c.User != "65532:65532" {
		t.Errorf("entrypoint %v user %q", c.Entrypoint, c.User)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	for _, e := range []string{"MODEL_PATH=/models", "HOST=0.0.0.0", "PORT=8080"} {
		if !slices.Contains(c.Env, e) {
			t.Errorf("env %v lacks %s", c.Env, e)
		}
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v", cf.Created)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	files := extract(t, img)
	want, _ := models.Read(version)
	if !bytes.Equal(files["models/model.json"].data, want) {
		t.Errorf("%s: models/model.json is not the %s model", platform, version)
	}
	if h := files["model-server"].hdr; h == nil || h.Mode != 0o555 || h.Uid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
		t.Errorf("model-server header %+v", h)
	}
}

type file struct {
	hdr  *tar.Header
	data []byte
}

func extract(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]file{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = file{hdr: h, data: b}
	}
}

// TestBuildPushesIndexesToARegistry cross-builds the real server for both platforms, pushes the three
// versions to go-containerregistry's in-memory registry, reads them back, and runs the server binary of
// the host platform from the pulled image with the pulled model to answer a prediction.
func TestBuildPushesIndexesToARegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	var out, progress bytes.Buffer
	env := map[string]string{"SOURCE_REGISTRY": host}
	start := time.Now()
	if err := run(context.Background(), nil, func(k string) string { return env[k] }, &out, &progress); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("build and push took %v\n%s", time.Since(start).Round(time.Millisecond), progress.String())
	t.Logf("stdout:\n%s", out.String())

	var res Result
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatal(err)
	}
	if res.Repository != host+"/mlapp/model-server" || len(res.Images) != 3 {
		t.Fatalf("result %+v", res)
	}
	for _, ir := range res.Images {
		ref, err := name.ParseReference(host + "/mlapp/model-server:" + ir.Tag)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		if d.String() != ir.Digest || ir.Reference != host+"/mlapp/model-server@"+ir.Digest {
			t.Errorf("%s: registry has %s, result says %s (%s)", ir.Tag, d, ir.Digest, ir.Reference)
		}
		im, _ := idx.IndexManifest()
		var plats []string
		for _, m := range im.Manifests {
			plats = append(plats, m.Platform.String())
		}
		if !slices.Equal(plats, twoPlatforms) || len(ir.Manifests) != 2 {
			t.Errorf("%s: platforms %v", ir.Tag, plats)
		}
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, img, ir.Tag, m.Platform.String())
			if m.Platform.Architecture == runtime.GOARCH && runtime.GOOS == "linux" {
				serveFromImage(t, img, ir.Tag)
			}
		}
	}
	// Pushing again is reproducible: the same sources give the same digests.
	var again bytes.Buffer
	if err := run(context.Background(), []string{"-versions", "v1", "-platforms", "linux/amd64,linux/arm64"}, func(k string) string { return env[k] }, &again, io.Discard); err != nil {
		t.Fatal(err)
	}
	var res2 Result
	if err := json.Unmarshal(again.Bytes(), &res2); err != nil {
		t.Fatal(err)
	}
	if res2.Images[0].Digest != res.Images[0].Digest {
		t.Errorf("rebuild of v1 gave %s, first build %s", res2.Images[0].Digest, res.Images[0].Digest)
	}
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// serveFromImage unpacks img, starts its /model-server on a free port with its /models, and checks the
// model version it reports.
func serveFromImage(t *testing.T, img v1.Image, version string) {
	t.Helper()
	root := t.TempDir()
	for n, f := range extract(t, img) {
		p := filepath.Join(root, n)
		if f.hdr.Typeflag == tar.TypeDir {
			_ = os.MkdirAll(p, 0o755)
			continue
		}
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.data, os.FileMode(f.hdr.Mode)|0o200); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(root, "model-server"), "-port", "0", "-model-path", filepath.Join(root, "models"))
	cmd.Env = []string{"HOST=127.0.0.1"}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	var addr string
	for addr == "" && sc.Scan() {
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Post("http://"+addr+"/v1/models/mlapp:predict", "application/json", strings.NewReader(`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if got := resp.Header.Get("X-Model-Version"); got != version {
					t.Errorf("image %s serves model %s", version, got)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server from the %s image never answered: %v", version, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestParseOptions(t *testing.T) {
	env := map[string]string{"SOURCE_REGISTRY": "127.0.0.1:5000", "SOURCE_DATE_EPOCH": "1700000000"}
	o, err := parseOptions(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Registry != "127.0.0.1:5000" || !slices.Equal(o.Versions, models.Versions) || !slices.Equal(o.Platforms, twoPlatforms) || o.Epoch.Unix() != 1700000000 {
		t.Errorf("options %+v", o)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "no registry: set --registry or SOURCE_REGISTRY"},
		{[]string{"-registry", "r", "-versions", "v9"}, nil, `no model file for version "v9"`},
		{[]string{"-registry", "r", "-platforms", "linux"}, nil, `invalid platform "linux"`},
		{[]string{"-registry", "r", "-versions", ""}, nil, "need at least one version and one platform"},
		{[]string{"-registry", "r"}, map[string]string{"SOURCE_DATE_EPOCH": "yesterday"}, `invalid SOURCE_DATE_EPOCH "yesterday"`},
		{[]string{"-registry", "r", "x"}, nil, `unexpected arguments ["x"]`},
	} {
		_, err := parseOptions(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}
