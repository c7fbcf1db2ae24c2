// Package model holds the example's classifier: a multinomial logistic regression over standardised
// features, its JSON file format, training and prediction.
package model

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
)

// File is the JSON model file the server loads. One server binary serves every version: what differs
// between versions is only this file.
type File struct {
	// Name describes the algorithm, e.g. "iris-logistic-regression".
	Name string `json:"name"`
	// Version is the model version, exported as the version label of model_info.
	Version string `json:"version"`
	// Classes names the output classes, in the order of the probabilities in a prediction.
	Classes []string `json:"classes"`
	// Features names the inputs, in the order an instance lists them.
	Features []string `json:"features"`
	// Mean and Scale standardise each feature: z = (x - Mean) / Scale.
	Mean  []float64 `json:"mean"`
	Scale []float64 `json:"scale"`
	// Weights has one row per class and one column per feature; Bias one entry per class.
	Weights [][]float64 `json:"weights"`
	Bias    []float64   `json:"bias"`
	// FaultRate is the fraction of predict requests the server answers with 500 (0 for a healthy model).
	FaultRate float64 `json:"faultRate,omitempty"`
	// Training records how the model was produced and how well it did.
	Training *Training `json:"training,omitempty"`
}

// Training records the hyper-parameters and the evaluation of a trained model.
type Training struct {
	Epochs        int     `json:"epochs"`
	LearningRate  float64 `json:"learningRate"`
	L2            float64 `json:"l2"`
	TrainAccuracy float64 `json:"trainAccuracy"`
	TestAccuracy  float64 `json:"testAccuracy"`
	TestLogLoss   float64 `json:"testLogLoss"`
	TrainRows     int     `json:"trainRows"`
	TestRows      int     `json:"testRows"`
	Note          string  `json:"note,omitempty"`
}

// Load reads and validates a model file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading model: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", path, err)
	}
	return m, nil
}

// Parse decodes a model file strictly and validates its shape.
func Parse(b []byte) (*File, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m File
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks that the dimensions of the model agree.
func (m *File) Validate() error {
	nc, nf := len(m.Classes), len(m.Features)
	switch {
	case m.Version == "":
		return errors.New("model has no version")
	case nc < 2:
		return fmt.Errorf("model needs at least 2 classes, has %d", nc)
	case nf == 0:
		return errors.New("model has no features")
	case len(m.Mean) != nf || len(m.Scale) != nf:
		return fmt.Errorf("mean and scale need %d entries, have %d and %d", nf, len(m.Mean), len(m.Scale))
	case len(m.Weights) != nc || len(m.Bias) != nc:
		return fmt.Errorf("weights and bias need %d rows, have %d and %d", nc, len(m.Weights), len(m.Bias))
	case m.FaultRate < 0 || m.FaultRate > 1:
		return fmt.Errorf("faultRate %v is outside [0, 1]", m.FaultRate)
	}
	for i, w := range m.Weights {
		if len(w) != nf {
			return fmt.Errorf("weights row %d needs %d entries, has %d", i, nf, len(w))
		}
	}
	for i, s := range m.Scale {
		if s == 0 {
			return fmt.Errorf("scale of feature %q is zero", m.Features[i])
		}
	}
	return nil
}

// Predict returns the class probabilities of one instance.
func (m *File) Predict(x []float64) ([]float64, error) {
	if len(x) != len(m.Features) {
		return nil, fmt.Errorf("instance has %d values, the model takes %d (%v)", len(x), len(m.Features), m.Features)
	}
	z := make([]float64, len(x))
	for j, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("value %d is not a finite number", j)
		}
		z[j] = (v - m.Mean[j]) / m.Scale[j]
	}
	return softmax(logits(m.Weights, m.Bias, z)), nil
}

// Label returns the most probable class of probabilities p.
func (m *File) Label(p []float64) string {
	return m.Classes[argmax(p)]
}

func logits(w [][]float64, b, z []float64) []float64 {
	out := make([]float64, len(w))
	for k := range w {
		s := b[k]
		for j, v := range z {
			s += w[k][j] * v
		}
		out[k] = s
	}
	return out
}

func softmax(l []float64) []float64 {
	mx := math.Inf(-1)
	for _, v := range l {
		mx = math.Max(mx, v)
	}
	var sum float64
	p := make([]float64, len(l))
	for k, v := range l {
		p[k] = math.Exp(v - mx)
		sum += p[k]
	}
	for k := range p {
		p[k] /= sum
	}
	return p
}

func argmax(p []float64) int {
	best := 0
	for k := range p {
		if p[k] > p[best] {
			best = k
		}
	}
	return best
}

// Dataset is a labelled table of feature rows.
type Dataset struct {
	Features []string
	Classes  []string
	X        [][]float64
	Y        []int
}

// ReadCSV reads a CSV with a header row, numeric feature columns and the class name in the last column.
// Classes are numbered in order of first appearance.
func ReadCSV(r io.Reader) (*Dataset, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading csv: %w", err)
	}
	if len(rows) < 2 {
		return nil, errors.New("csv has no data rows")
	}
	header := rows[0]
	ds := &Dataset{Features: header[:len(header)-1]}
	index := map[string]int{}
	for i, row := range rows[1:] {
		x := make([]float64, len(ds.Features))
		for j := range x {
			v, err := strconv.ParseFloat(row[j], 64)
			if err != nil {
				return nil, fmt.Errorf("row %d column %q: %w", i+2, header[j], err)
			}
			x[j] = v
		}
		label := row[len(row)-1]
		k, ok := index[label]
		if !ok {
			k = len(ds.Classes)
			index[label] = k
			ds.Classes = append(ds.Classes, label)
		}
		ds.X = append(ds.X, x)
		ds.Y = append(ds.Y, k)
	}
	return ds, nil
}

// Split puts every n-th row (offset 0) into the test set and the rest into the training set.
// Iris is ordered by class, so the split is stratified.
func (d *Dataset) Split(n int) (train, test *Dataset) {
	train = &Dataset{Features: d.Features, Classes: d.Classes}
	test = &Dataset{Features: d.Features, Classes: d.Classes}
	for i := range d.X {
		dst := train
		if i%n == 0 {
			dst = test
		}
		dst.X = append(dst.X, d.X[i])
		dst.Y = append(dst.Y, d.Y[i])
	}
	return train, test
}

// TrainOptions are the hyper-parameters of full-batch gradient descent.
type TrainOptions struct {
	Version      string
	Epochs       int
	LearningRate float64
	L2           float64
}

// Train fits a multinomial logistic regression on train by full-batch gradient descent from zero
// weights (deterministic: the same data and options give the same model bit for bit), and evaluates it
// on test.
func Train(train, test *Dataset, o TrainOptions) *File {
	nf, nc, n := len(train.Features), len(train.Classes), float64(len(train.X))
	mean, scale := make([]float64, nf), make([]float64, nf)
	for j := range nf {
		for _, x := range train.X {
			mean[j] += x[j]
		}
		mean[j] /= n
		for _, x := range train.X {
			scale[j] += (x[j] - mean[j]) * (x[j] - mean[j])
		}
		scale[j] = math.Sqrt(scale[j] / n)
	}
	z := make([][]float64, len(train.X))
	for i, x := range train.X {
		z[i] = make([]float64, nf)
		for j := range nf {
			z[i][j] = (x[j] - mean[j]) / scale[j]
		}
	}
	w := make([][]float64, nc)
	for k := range w {
		w[k] = make([]float64, nf)
	}
	b := make([]float64, nc)
	for range o.Epochs {
		gw := make([][]float64, nc)
		for k := range gw {
			gw[k] = make([]float64, nf)
		}
		gb := make([]float64, nc)
		for i, zi := range z {
			p := softmax(logits(w, b, zi))
			for k := range nc {
				d := p[k]
				if train.Y[i] == k {
					d--
				}
				gb[k] += d
				for j := range nf {
					gw[k][j] += d * zi[j]
				}
			}
		}
		for k := range nc {
			b[k] -= o.LearningRate * gb[k] / n
			for j := range nf {
				w[k][j] -= o.LearningRate * (gw[k][j]/n + o.L2*w[k][j])
			}
		}
	}
	m := &File{
		Name:     "iris-logistic-regression",
		Version:  o.Version,
		Classes:  train.Classes,
		Features: train.Features,
		Mean:     mean,
		Scale:    scale,
		Weights:  w,
		Bias:     b,
	}
	m.Training = &Training{
		Epochs:        o.Epochs,
		LearningRate:  o.LearningRate,
		L2:            o.L2,
		TrainAccuracy: m.Accuracy(train),
		TestAccuracy:  m.Accuracy(test),
		TestLogLoss:   m.LogLoss(test),
		TrainRows:     len(train.X),
		TestRows:      len(test.X),
	}
	return m
}

// Accuracy is the fraction of rows of d the model labels correctly.
func (m *File) Accuracy(d *Dataset) float64 {
	var ok int
	for i, x := range d.X {
		p, err := m.Predict(x)
		if err == nil && argmax(p) == d.Y[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(d.X))
}

// LogLoss is the mean negative log-likelihood of the true classes of d.
func (m *File) LogLoss(d *Dataset) float64 {
	var s float64
	for i, x := range d.X {
		p, err := m.Predict(x)
		if err != nil {
			return math.Inf(1)
		}
		s -= math.Log(math.Max(p[d.Y[i]], 1e-15))
	}
	return s / float64(len(d.X))
}
