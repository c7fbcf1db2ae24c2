package model

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/aks-mlops/mlplugins/examples/model-server/data"
)

func iris(t *testing.T) *Dataset {
	t.Helper()
	ds, err := ReadCSV(bytes.NewReader(data.IrisCSV))
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestIrisIsFishersData checks the shipped CSV against the published summary of the dataset (R's
// summary(iris) and sd()): 50 rows per species and the per-species means and standard deviations.
func TestIrisIsFishersData(t *testing.T) {
	ds := iris(t)
	if got := strings.Join(ds.Classes, ","); got != "setosa,versicolor,virginica" {
		t.Fatalf("classes = %s", got)
	}
	want := map[int]struct{ mean, sd [4]float64 }{
		0: {[4]float64{5.006, 3.428, 1.462, 0.246}, [4]float64{0.3524897, 0.3790644, 0.1736640, 0.1053856}},
		1: {[4]float64{5.936, 2.770, 4.260, 1.326}, [4]float64{0.5161711, 0.3137983, 0.4699110, 0.1977527}},
		2: {[4]float64{6.588, 2.974, 5.552, 2.026}, [4]float64{0.6358796, 0.3224966, 0.5518947, 0.2746501}},
	}
	for k, w := range want {
		var rows [][]float64
		for i, x := range ds.X {
			if ds.Y[i] == k {
				rows = append(rows, x)
			}
		}
		if len(rows) != 50 {
			t.Fatalf("class %d has %d rows", k, len(rows))
		}
		for j := range 4 {
			var mean, ss float64
			for _, x := range rows {
				mean += x[j]
			}
			mean /= 50
			for _, x := range rows {
				ss += (x[j] - mean) * (x[j] - mean)
			}
			sd := math.Sqrt(ss / 49)
			if math.Abs(mean-w.mean[j]) > 5e-4 || math.Abs(sd-w.sd[j]) > 5e-7 {
				t.Errorf("class %s feature %s: mean %.4f sd %.7f, want %.3f %.7f", ds.Classes[k], ds.Features[j], mean, sd, w.mean[j], w.sd[j])
			}
		}
	}
}

func TestTrainIsDeterministicAndLearns(t *testing.T) {
	train, test := iris(t).Split(5)
	if len(train.X) != 120 || len(test.X) != 30 {
		t.Fatalf("split %d/%d, want 120/30", len(train.X), len(test.X))
	}
	o := TrainOptions{Version: "t", Epochs: 200, LearningRate: 0.5, L2: 0.003}
	a, b := Train(train, test, o), Train(train, test, o)
	if a.Training.TestAccuracy < 0.9 {
		t.Errorf("test accuracy %.3f, want >= 0.9", a.Training.TestAccuracy)
	}
	for k := range a.Weights {
		for j := range a.Weights[k] {
			if a.Weights[k][j] != b.Weights[k][j] {
				t.Fatalf("two trainings differ at weight %d,%d", k, j)
			}
		}
	}
	p, err := a.Predict([]float64{5.1, 3.5, 1.4, 0.2})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, v := range p {
		sum += v
	}
	if math.Abs(sum-1) > 1e-12 || a.Label(p) != "setosa" {
		t.Errorf("probabilities %v (sum %v), label %s", p, sum, a.Label(p))
	}
}

func TestParseRejectsBadModels(t *testing.T) {
	good := `{"version":"v","classes":["a","b"],"features":["x"],"mean":[0],"scale":[1],"weights":[[1],[2]],"bias":[0,0]}`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good model: %v", err)
	}
	tests := []struct{ name, json, want string }{
		{"unknown field", strings.Replace(good, `"version"`, `"extra":1,"version"`, 1), `unknown field "extra"`},
		{"no version", strings.Replace(good, `"version":"v"`, `"version":""`, 1), "model has no version"},
		{"one class", strings.Replace(good, `["a","b"]`, `["a"]`, 1), "at least 2 classes"},
		{"short weights", strings.Replace(good, `[[1],[2]]`, `[[1],[]]`, 1), "weights row 1 needs 1 entries, has 0"},
		{"zero scale", strings.Replace(good, `"scale":[1]`, `"scale":[0]`, 1), `scale of feature "x" is zero`},
		{"fault rate", strings.Replace(good, `"bias"`, `"faultRate":1.5,"bias"`, 1), "faultRate 1.5 is outside [0, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	m, _ := Parse([]byte(good))
	if _, err := m.Predict([]float64{1, 2}); err == nil || !strings.Contains(err.Error(), "instance has 2 values, the model takes 1") {
		t.Errorf("wrong arity: %v", err)
	}
	if _, err := m.Predict([]float64{math.NaN()}); err == nil {
		t.Error("NaN accepted")
	}
}
