// Command model-server is the reference inference server of the examples: it loads an Iris classifier
// from a JSON model file and serves it over the KServe v1 protocol, with Prometheus metrics, liveness and
// readiness endpoints, and a graceful drain on SIGTERM.
//
// Configuration comes from flags, each defaulting to an environment variable (the names the mlapp chart
// sets):
//
//	-model-name    MODEL_NAME     model name in the URLs (default mlapp)
//	-model-path    MODEL_PATH     model file, or a directory holding model.json (default /models)
//	-host          HOST           address to listen on (default 127.0.0.1; the image sets 0.0.0.0)
//	-port          PORT           port to listen on (default 8080)
//	-metrics-path  METRICS_PATH   path of the Prometheus metrics (default /metrics)
//	-drain-timeout DRAIN_TIMEOUT  how long in-flight requests may take after SIGTERM (default 25s)
//
// The model's version (the version label of model_info) is the one written in the model file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

// config is the server's configuration.
type config struct {
	ModelName    string
	ModelPath    string
	Host         string
	Port         int
	MetricsPath  string
	DrainTimeout time.Duration
}

// parseConfig reads flags, each defaulting to its environment variable.
func parseConfig(args []string, getenv func(string) string, errOut io.Writer) (config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("model-server", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var c config
	fs.StringVar(&c.ModelName, "model-name", env("MODEL_NAME", "mlapp"), "Model name served at /v1/models/<name> (env MODEL_NAME)")
	fs.StringVar(&c.ModelPath, "model-path", env("MODEL_PATH", "/models"), "Model file, or a directory holding model.json (env MODEL_PATH)")
	fs.StringVar(&c.Host, "host", env("HOST", "127.0.0.1"), "Address to listen on (env HOST)")
	port, err := strconv.Atoi(env("PORT", "8080"))
	if err != nil {
		return c, fmt.Errorf("invalid PORT %q: %w", getenv("PORT"), err)
	}
	fs.IntVar(&c.Port, "port", port, "Port to listen on (env PORT)")
	fs.StringVar(&c.MetricsPath, "metrics-path", env("METRICS_PATH", "/metrics"), "Path of the Prometheus metrics (env METRICS_PATH)")
	drain, err := time.ParseDuration(env("DRAIN_TIMEOUT", "25s"))
	if err != nil {
		return c, fmt.Errorf("invalid DRAIN_TIMEOUT %q: %w", getenv("DRAIN_TIMEOUT"), err)
	}
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", drain, "How long in-flight requests may take after SIGTERM (env DRAIN_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.ModelName == "":
		return c, errors.New("model name is empty")
	case c.Port < 0 || c.Port > 65535:
		return c, fmt.Errorf("port %d is out of range", c.Port)
	case c.MetricsPath == "" || c.MetricsPath[0] != '/':
		return c, fmt.Errorf("metrics path %q must start with /", c.MetricsPath)
	}
	return c, nil
}

// run serves until ctx is cancelled, then drains: readiness turns 503 at once, new connections are
// refused, and in-flight requests get cfg.DrainTimeout to finish. If ready is not nil it receives the
// listening address once the listener is open.
func run(ctx context.Context, cfg config, log *slog.Logger, ready chan<- string) error {
	s := NewServer(cfg.ModelName, cfg.MetricsPath)
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "model", cfg.ModelName, "pod", os.Getenv("POD_NAME"))
	if ready != nil {
		ready <- ln.Addr().String()
	}

	// The model loads after the listener opens, so liveness answers while readiness waits for the model.
	loaded := make(chan error, 1)
	go func() {
		m, err := s.LoadFile(cfg.ModelPath)
		if err == nil {
			log.Info("model loaded", "path", cfg.ModelPath, "version", m.Version, "faultRate", m.FaultRate)
		}
		loaded <- err
	}()

	select {
	case err := <-loaded:
		if err != nil {
			_ = srv.Close()
			return err
		}
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}

	log.Info("draining", "timeout", cfg.DrainTimeout.String())
	s.SetDraining()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("draining: %w", err)
	}
	log.Info("stopped")
	return nil
}
