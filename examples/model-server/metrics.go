package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ContentType is the Prometheus text exposition format, version 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Buckets are the upper bounds of the request duration histogram, in seconds (Prometheus' defaults).
var Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics holds the server's metrics and writes them in the text exposition format.
type Metrics struct {
	mu          sync.Mutex
	requests    map[[3]string]uint64     // code, method, path
	durations   map[[3]string]*histogram // code, method, path
	predictions map[[3]string]uint64     // model, version, class
	info        [2]string                // model, version; empty until a model loads
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		requests:    map[[3]string]uint64{},
		durations:   map[[3]string]*histogram{},
		predictions: map[[3]string]uint64{},
	}
}

// ObserveRequest counts a finished request and its duration.
func (m *Metrics) ObserveRequest(method, path string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [3]string{strconv.Itoa(code), method, path}
	m.requests[k]++
	h := m.durations[k]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(Buckets))}
		m.durations[k] = h
	}
	sec := d.Seconds()
	if i, _ := slices.BinarySearch(Buckets, sec); i < len(Buckets) {
		h.counts[i]++
	}
	h.sum += sec
	h.count++
}

// ObservePrediction counts one prediction of class.
func (m *Metrics) ObservePrediction(model, version, class string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.predictions[[3]string{model, version, class}]++
}

// SetModel records the served model for model_info.
func (m *Metrics) SetModel(model, version string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.info = [2]string{model, version}
}

// Write renders every metric family, series sorted by labels so the output is stable.
func (m *Metrics) Write(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := bufio.NewWriter(w)

	header(b, "http_requests_total", "counter", "HTTP requests handled, by status code, method and path.")
	for _, k := range sortedKeys(m.requests) {
		series(b, "http_requests_total", labels("code", k[0], "method", k[1], "path", k[2]), float64(m.requests[k]))
	}

	header(b, "http_request_duration_seconds", "histogram", "HTTP request latency in seconds, by status code, method and path.")
	for _, k := range sortedKeys(m.durations) {
		h := m.durations[k]
		var cum uint64
		for i, ub := range Buckets {
			cum += h.counts[i]
			series(b, "http_request_duration_seconds_bucket", labels("code", k[0], "method", k[1], "path", k[2], "le", formatFloat(ub)), float64(cum))
		}
		series(b, "http_request_duration_seconds_bucket", labels("code", k[0], "method", k[1], "path", k[2], "le", "+Inf"), float64(h.count))
		series(b, "http_request_duration_seconds_sum", labels("code", k[0], "method", k[1], "path", k[2]), h.sum)
		series(b, "http_request_duration_seconds_count", labels("code", k[0], "method", k[1], "path", k[2]), float64(h.count))
	}

	header(b, "model_info", "gauge", "The served model: always 1, labelled with its name and version.")
	if m.info[0] != "" {
		series(b, "model_info", labels("model", m.info[0], "version", m.info[1]), 1)
	}

	header(b, "model_predictions_total", "counter", "Predictions made, by model, version and predicted class.")
	for _, k := range sortedKeys(m.predictions) {
		series(b, "model_predictions_total", labels("model", k[0], "version", k[1], "class", k[2]), float64(m.predictions[k]))
	}
	return b.Flush()
}

func header(w *bufio.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func series(w *bufio.Writer, name, labels string, v float64) {
	fmt.Fprintf(w, "%s{%s} %s\n", name, labels, formatFloat(v))
}

// labels renders name/value pairs as `a="x",b="y"`, escaping values as the format requires.
func labels(kv ...string) string {
	var sb strings.Builder
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(kv[i])
		sb.WriteString(`="`)
		sb.WriteString(labelEscaper.Replace(kv[i+1]))
		sb.WriteByte('"')
	}
	return sb.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func sortedKeys[V any](m map[[3]string]V) [][3]string {
	keys := make([][3]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [3]string) int {
		for i := range len(a) {
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	return keys
}
