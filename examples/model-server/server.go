package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aks-mlops/mlplugins/examples/model-server/internal/model"
)

// maxBody bounds a predict request.
const maxBody = 1 << 20

// Server serves one model over the KServe v1 protocol.
type Server struct {
	name        string
	metricsPath string
	model       atomic.Pointer[model.File]
	draining    atomic.Bool
	predictN    atomic.Uint64
	metrics     *Metrics
	mux         *http.ServeMux
}

// NewServer returns a server for the model called name, not ready until a model is loaded.
func NewServer(name, metricsPath string) *Server {
	s := &Server{name: name, metricsPath: metricsPath, metrics: NewMetrics(), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET "+metricsPath, s.serveMetrics)
	s.mux.HandleFunc("GET /v1/models", s.list)
	s.mux.HandleFunc("/v1/models/{target}", s.modelEndpoint)
	return s
}

// LoadFile loads the model at path (a file, or a directory holding model.json) and makes the server ready.
func (s *Server) LoadFile(path string) (*model.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "model.json")
	}
	m, err := model.Load(path)
	if err != nil {
		return nil, err
	}
	s.SetModel(m)
	return m, nil
}

// SetModel makes m the served model.
func (s *Server) SetModel(m *model.File) {
	s.model.Store(m)
	s.metrics.SetModel(s.name, m.Version)
}

// SetDraining turns readiness off: the pod leaves the Service endpoints while in-flight requests finish.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Ready reports whether the server takes traffic: a model is loaded and it is not draining.
func (s *Server) Ready() bool { return s.model.Load() != nil && !s.draining.Load() }

// ServeHTTP routes the request and records its metrics (except for the metrics endpoint itself,
// which Prometheus scrapes every few seconds and would drown the request rate).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == s.metricsPath {
		s.mux.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	s.metrics.ObserveRequest(r.Method, s.pathLabel(r.URL.Path), rec.code, time.Since(start))
}

// pathLabel bounds the cardinality of the path label: known endpoints keep their path, anything else
// becomes "other".
func (s *Server) pathLabel(p string) string {
	switch p {
	case "/healthz", "/readyz", "/v1/models",
		"/v1/models/" + s.name, "/v1/models/" + s.name + ":predict":
		return p
	}
	return "other"
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.draining.Load():
		writeText(w, http.StatusServiceUnavailable, "draining\n")
	case s.model.Load() == nil:
		writeText(w, http.StatusServiceUnavailable, "model not loaded\n")
	default:
		writeText(w, http.StatusOK, "ok\n")
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", ContentType)
	_ = s.metrics.Write(w)
}

// list answers GET /v1/models with the served model names (KServe v1 "list models").
func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]string{"models": {s.name}})
}

// modelEndpoint answers GET /v1/models/<name> (model readiness) and POST /v1/models/<name>:predict.
func (s *Server) modelEndpoint(w http.ResponseWriter, r *http.Request) {
	target := r.PathValue("target")
	name, verb, hasVerb := strings.Cut(target, ":")
	if name != s.name {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found (this server serves %q)", name, s.name))
		return
	}
	switch {
	case !hasVerb:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		status := http.StatusOK
		if !s.Ready() {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, readyResponse{Name: s.name, Ready: s.Ready()})
	case verb == "predict":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.predict(w, r)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown verb %q (want predict)", verb))
	}
}

type readyResponse struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// PredictRequest is a KServe v1 predict request.
type PredictRequest struct {
	Instances [][]float64 `json:"instances"`
}

// PredictResponse is a KServe v1 predict response: one list of class probabilities per instance, in
// the order of the model's classes.
type PredictResponse struct {
	Predictions [][]float64 `json:"predictions"`
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	m := s.model.Load()
	if m == nil {
		writeError(w, http.StatusServiceUnavailable, "model not loaded")
		return
	}
	if fault(s.predictN.Add(1), m.FaultRate) {
		writeError(w, http.StatusInternalServerError, "inference failed")
		return
	}
	var req PredictRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("decoding request: %v", err))
		return
	}
	if len(req.Instances) == 0 {
		writeError(w, http.StatusBadRequest, `request has no "instances"`)
		return
	}
	resp := PredictResponse{Predictions: make([][]float64, len(req.Instances))}
	for i, x := range req.Instances {
		p, err := m.Predict(x)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("instance %d: %v", i, err))
			return
		}
		resp.Predictions[i] = p
	}
	for _, p := range resp.Predictions {
		s.metrics.ObservePrediction(s.name, m.Version, m.Label(p))
	}
	w.Header().Set("X-Model-Version", m.Version)
	writeJSON(w, http.StatusOK, resp)
}

// fault reports whether the n-th predict request (from 1) fails at the given rate. It is deterministic:
// of any run of requests, round(len*rate) fail, spread evenly (for 0.5, every second request).
func fault(n uint64, rate float64) bool {
	if rate <= 0 {
		return false
	}
	return math.Floor(float64(n)*rate) > math.Floor(float64(n-1)*rate)
}

type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func writeText(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, s)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}
