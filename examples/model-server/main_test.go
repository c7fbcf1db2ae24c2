package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	env := map[string]string{"MODEL_NAME": "iris", "MODEL_PATH": "/m", "PORT": "9000", "METRICS_PATH": "/prom"}
	c, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{ModelName: "iris", ModelPath: "/m", Host: "127.0.0.1", Port: 9000, MetricsPath: "/prom", DrainTimeout: 25 * time.Second}
	if c != want {
		t.Errorf("from env: %+v, want %+v", c, want)
	}
	c, err = parseConfig([]string{"-port", "0", "-model-name", "x", "-drain-timeout", "1s"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.Port != 0 || c.ModelName != "x" || c.DrainTimeout != time.Second {
		t.Errorf("flags over env: %+v %v", c, err)
	}
	c, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil || c.ModelName != "mlapp" || c.Port != 8080 || c.ModelPath != "/models" || c.MetricsPath != "/metrics" {
		t.Errorf("defaults: %+v %v", c, err)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"PORT": "http"}, `invalid PORT "http"`},
		{nil, map[string]string{"DRAIN_TIMEOUT": "soon"}, `invalid DRAIN_TIMEOUT "soon"`},
		{[]string{"-port", "70000"}, nil, "port 70000 is out of range"},
		{[]string{"-metrics-path", "metrics"}, nil, `metrics path "metrics" must start with /`},
		{[]string{"extra"}, nil, `unexpected arguments ["extra"]`},
		{[]string{"-model-name", ""}, nil, "model name is empty"},
	} {
		_, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v %v: error %v, want %q", tt.args, tt.env, err, tt.want)
		}
	}
}

// TestRunDrainsInFlightRequests starts the server, begins a predict request whose body is still being
// sent, cancels the context (as SIGTERM does), and checks that the in-flight request still completes,
// that run then returns cleanly, and that the port is closed.
func TestRunDrainsInFlightRequests(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := config{ModelName: "mlapp", ModelPath: modelPath("v1"), Host: "127.0.0.1", Port: 0, MetricsPath: "/metrics", DrainTimeout: 10 * time.Second}
	var logs syncBuffer
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), addr) }()
	base := "http://" + <-addr
	waitFor(t, func() bool { return status(base+"/readyz") == 200 })

	pr, pw := io.Pipe()
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/v1/models/mlapp:predict", "application/json", pr)
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte(`{"instances": `)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the request is now in the handler, reading its body
	cancel()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "draining") })
	if _, err := pw.Write([]byte(`[[5.1, 3.5, 1.4, 0.2]]}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-inflight; code != 200 {
		t.Errorf("in-flight request ended with %d", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the drain")
	}
	if status(base+"/healthz") != -1 {
		t.Error("server still accepts connections after the drain")
	}
}

func TestRunFailsOnABadModel(t *testing.T) {
	cfg := config{ModelName: "mlapp", ModelPath: "/nonexistent/model.json", Host: "127.0.0.1", MetricsPath: "/metrics", DrainTimeout: time.Second}
	err := run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "reading model") {
		t.Errorf("error %v", err)
	}
}

// syncBuffer is a bytes.Buffer the server goroutine writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
