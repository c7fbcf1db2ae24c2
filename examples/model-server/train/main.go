// Command train fits the example's Iris classifiers and writes the three model files the image builder
// ships: v1 (a quick fit), v2 (a better fit that agrees with v1 on the smoke request within 0.01), and
// v3 (deliberately broken: its class rows are rotated, so its labels are wrong, and its faultRate makes
// the server answer half of the predict requests with 500).
//
// Training is deterministic, so rerunning it reproduces the committed files byte for byte:
//
//	go run ./examples/model-server/train -out examples/model-server/models
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	out := flag.String("out", "examples/model-server/models", "Directory the model files are written to")
	flag.Parse()
	if err := run(*out, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, log io.Writer) error {
	models, err := Models()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, m := range models {
		b, err := Encode(m)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, m.Version+".json")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", m.Version, err)
		}
		t := m.Training
		fmt.Fprintf(log, "%s: %s test accuracy %.3f, test log-loss %.4f, fault rate %.2f\n",
			m.Version, path, t.TestAccuracy, t.TestLogLoss, m.FaultRate)
	}
	return nil
}
