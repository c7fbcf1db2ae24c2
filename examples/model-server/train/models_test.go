package main

import (
	"io"
	"math"
	"path/filepath"
	"testing"

	"github.com/aks-mlops/mlplugins/examples/model-server/internal/model"
	"github.com/aks-mlops/mlplugins/examples/model-server/models"
)

func shipped(t *testing.T, version string) *model.File {
	t.Helper()
	b, err := models.Read(version)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestShippedModelsAreUpToDate retrains and compares with the committed files. Weights are compared
// with a small tolerance rather than byte for byte: fused multiply-add on some architectures changes
// the last bits.
func TestShippedModelsAreUpToDate(t *testing.T) {
	fresh, err := Models()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fresh {
		s := shipped(t, f.Version)
		if s.FaultRate != f.FaultRate || len(s.Weights) != len(f.Weights) {
			t.Fatalf("%s: shipped file differs from training (rerun go run ./examples/model-server/train)", f.Version)
		}
		for k := range f.Weights {
			for j := range f.Weights[k] {
				if math.Abs(s.Weights[k][j]-f.Weights[k][j]) > 1e-9 {
					t.Fatalf("%s: weight %d,%d is %v, training gives %v (rerun go run ./examples/model-server/train)", f.Version, k, j, s.Weights[k][j], f.Weights[k][j])
				}
			}
		}
	}
}

func TestV2IsBetterAndAgreesWithV1(t *testing.T) {
	v1, v2 := shipped(t, "v1"), shipped(t, "v2")
	if v2.Training.TestLogLoss >= v1.Training.TestLogLoss {
		t.Errorf("v2 log-loss %.4f not below v1's %.4f", v2.Training.TestLogLoss, v1.Training.TestLogLoss)
	}
	if v2.Training.TestAccuracy < v1.Training.TestAccuracy {
		t.Errorf("v2 accuracy %.3f below v1's %.3f", v2.Training.TestAccuracy, v1.Training.TestAccuracy)
	}
	d, err := MaxDiff(v1, v2, SmokeInstance)
	if err != nil {
		t.Fatal(err)
	}
	if d > Tolerance {
		t.Errorf("v1 and v2 differ by %v on the smoke instance, tolerance %v", d, Tolerance)
	}
	t.Logf("smoke instance: v1/v2 max probability difference %.5f", d)
}

func TestV3IsBroken(t *testing.T) {
	v2, v3 := shipped(t, "v2"), shipped(t, "v3")
	d, err := MaxDiff(v2, v3, SmokeInstance)
	if err != nil {
		t.Fatal(err)
	}
	if d < 0.5 {
		t.Errorf("v3 differs from v2 by only %v on the smoke instance", d)
	}
	p, _ := v3.Predict(SmokeInstance)
	if v3.Label(p) == "setosa" {
		t.Errorf("v3 labels the smoke instance correctly")
	}
	if v3.FaultRate != 0.5 || v3.Training.TestAccuracy > 0.2 {
		t.Errorf("v3 fault rate %v, accuracy %v", v3.FaultRate, v3.Training.TestAccuracy)
	}
}

func TestRunWritesTheFiles(t *testing.T) {
	dir := t.TempDir()
	if err := run(filepath.Join(dir, "m"), io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, v := range models.Versions {
		if _, err := model.Load(filepath.Join(dir, "m", v+".json")); err != nil {
			t.Error(err)
		}
	}
}
