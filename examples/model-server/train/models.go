package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/aks-mlops/mlplugins/examples/model-server/data"
	"github.com/aks-mlops/mlplugins/examples/model-server/internal/model"
)

// SmokeInstance is the request every rollout check sends: the first row of the dataset (a setosa).
var SmokeInstance = []float64{5.1, 3.5, 1.4, 0.2}

// Tolerance is how far v1's and v2's probabilities on SmokeInstance may differ.
const Tolerance = 0.01

// Models trains v1 and v2 on four fifths of Iris (every fifth row held out) and derives v3 from v2.
func Models() ([]*model.File, error) {
	ds, err := model.ReadCSV(bytes.NewReader(data.IrisCSV))
	if err != nil {
		return nil, err
	}
	train, test := ds.Split(5)
	v1 := model.Train(train, test, model.TrainOptions{Version: "v1", Epochs: 300, LearningRate: 0.5, L2: 0.003})
	v1.Training.Note = "quick fit: stopped after 300 epochs"
	v2 := model.Train(train, test, model.TrainOptions{Version: "v2", Epochs: 3000, LearningRate: 0.5, L2: 0.003})
	v2.Training.Note = "better fit: trained to convergence (3000 epochs)"
	if v2.Training.TestLogLoss >= v1.Training.TestLogLoss {
		return nil, fmt.Errorf("v2 test log-loss %.4f is not better than v1's %.4f", v2.Training.TestLogLoss, v1.Training.TestLogLoss)
	}
	if d, err := MaxDiff(v1, v2, SmokeInstance); err != nil || d > Tolerance {
		return nil, fmt.Errorf("v1 and v2 disagree on the smoke instance by %v (tolerance %v): %v", d, Tolerance, err)
	}
	v3 := Broken(v2)
	return []*model.File{v1, v2, v3}, nil
}

// Broken returns a copy of m whose class rows are rotated by one (each class scored as the next one),
// so it labels setosa as virginica, and whose server fails half of the predict requests.
func Broken(m *model.File) *model.File {
	b := *m
	n := len(m.Classes)
	b.Version = "v3"
	b.Weights = make([][]float64, n)
	b.Bias = make([]float64, n)
	for k := range n {
		b.Weights[k] = append([]float64(nil), m.Weights[(k+1)%n]...)
		b.Bias[k] = m.Bias[(k+1)%n]
	}
	b.FaultRate = 0.5
	t := *m.Training
	b.Training = &t
	ds, _ := model.ReadCSV(bytes.NewReader(data.IrisCSV))
	_, test := ds.Split(5)
	b.Training.TestAccuracy = b.Accuracy(test)
	b.Training.TestLogLoss = b.LogLoss(test)
	b.Training.Note = "broken on purpose: v2 with class rows rotated, half of the predict requests fail"
	return &b
}

// MaxDiff is the largest difference between the probabilities a and b give x.
func MaxDiff(a, b *model.File, x []float64) (float64, error) {
	pa, err := a.Predict(x)
	if err != nil {
		return 0, err
	}
	pb, err := b.Predict(x)
	if err != nil {
		return 0, err
	}
	var d float64
	for k := range pa {
		d = math.Max(d, math.Abs(pa[k]-pb[k]))
	}
	return d, nil
}

// Encode renders a model file as indented JSON with a trailing newline.
func Encode(m *model.File) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding model %s: %w", m.Version, err)
	}
	return append(b, '\n'), nil
}
