package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoadgenSpreadsRequestsAndCountsCodes(t *testing.T) {
	var a, b atomic.Int64
	mk := func(n *atomic.Int64, code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/v1/models/mlapp:predict" {
				t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			}
			n.Add(1)
			w.WriteHeader(code)
		}))
		t.Cleanup(s.Close)
		return s
	}
	sa, sb := mk(&a, 200), mk(&b, 500)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-url", sa.URL, "-url", sb.URL + "/", "-rps", "100", "-duration", "500ms"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if s.Requests < 20 || s.Requests != s.ByCode["200"]+s.ByCode["500"] {
		t.Errorf("summary %+v", s)
	}
	if d := a.Load() - b.Load(); d < -1 || d > 1 {
		t.Errorf("round robin uneven: %d vs %d", a.Load(), b.Load())
	}
	if s.P95Millis < s.P50Millis || s.Seconds < 0.5 {
		t.Errorf("summary %+v", s)
	}
}

func TestLoadgenStopsOnCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	s := Generate(ctx, Options{URLs: []string{srv.URL}, Model: "mlapp", RPS: 50, Timeout: time.Second})
	if s.Requests == 0 || s.Seconds > 2 {
		t.Errorf("summary %+v", s)
	}
}

func TestLoadgenFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "no -url given"},
		{[]string{"-url", "http://x", "-rps", "0"}, "-rps must be positive"},
		{[]string{"-url", "http://x", "extra"}, `unexpected arguments ["extra"]`},
	} {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}
