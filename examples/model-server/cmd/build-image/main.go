// Command build-image builds the model-server container images without a Docker engine and pushes them
// to a registry: for each model version it cross-compiles the server statically (CGO_ENABLED=0) for
// every platform, layers the binary and that version's model file onto an empty base, and pushes a
// multi-arch OCI index tagged with the version. Builds are reproducible: the same sources give the same
// digests (file times and the image creation time come from SOURCE_DATE_EPOCH, default 0).
//
// The digests are printed on stdout as JSON; progress goes to stderr. The Go toolchain used for the
// cross-builds is $GO, else go on the PATH.
//
//	go run ./examples/model-server/cmd/build-image --registry "$SOURCE_REGISTRY"
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aks-mlops/mlplugins/examples/model-server/models"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out, errOut io.Writer) error {
	o, err := parseOptions(args, getenv, errOut)
	if err != nil {
		return err
	}
	res, err := Build(ctx, o)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func parseOptions(args []string, getenv func(string) string, errOut io.Writer) (*Options, error) {
	fs := flag.NewFlagSet("build-image", flag.ContinueOnError)
	fs.SetOutput(errOut)
	o := &Options{Log: errOut}
	var versions, platforms string
	fs.StringVar(&o.Registry, "registry", getenv("SOURCE_REGISTRY"), "Registry host[:port][/prefix] to push to (env SOURCE_REGISTRY); an http:// prefix means plain HTTP")
	fs.StringVar(&o.Repository, "repository", "mlapp/model-server", "Repository inside the registry")
	fs.StringVar(&versions, "versions", strings.Join(models.Versions, ","), "Model versions to build, each pushed as a tag of the same name")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "Platforms of each multi-arch index")
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "Talk plain HTTP to the registry (automatic for localhost and 127.0.0.1)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Versions = splitList(versions)
	o.Platforms = splitList(platforms)
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		o.Epoch = time.Unix(sec, 0).UTC()
	}
	return o, o.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
