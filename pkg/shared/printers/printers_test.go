package printers

import (
	"bytes"
	"os"
	"testing"
)

func TestValidateOutput(t *testing.T) {
	tests := []struct {
		name    string
		format  string
		allowed []string
		wantErr string
	}{
		{name: "default", format: "", allowed: []string{"json", "yaml"}},
		{name: "json", format: "json", allowed: []string{"json", "yaml"}},
		{name: "wide", format: "wide", allowed: []string{"json", "yaml", "wide"}},
		{name: "unknown", format: "xml", allowed: []string{"json", "yaml"}, wantErr: `unknown output format "xml" (want one of: json, yaml)`},
		{name: "case matters", format: "JSON", allowed: []string{"json"}, wantErr: `unknown output format "JSON" (want one of: json)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateOutput(tt.format, tt.allowed...)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("ValidateOutput(%q) = %q, want %q", tt.format, got, tt.wantErr)
			}
		})
	}
}

type view struct {
	Name    string   `json:"name"`
	Ready   int      `json:"ready"`
	Images  []string `json:"images,omitempty"`
	Message string   `json:"message,omitempty"`
}

func TestPrintJSONAndYAML(t *testing.T) {
	v := view{Name: "web", Ready: 2, Images: []string{"a<b>"}}
	var j, y bytes.Buffer
	if err := PrintJSON(&j, v); err != nil {
		t.Fatal(err)
	}
	wantJSON := "{\n  \"name\": \"web\",\n  \"ready\": 2,\n  \"images\": [\n    \"a<b>\"\n  ]\n}\n"
	if j.String() != wantJSON {
		t.Errorf("PrintJSON = %q, want %q", j.String(), wantJSON)
	}
	if err := PrintYAML(&y, v); err != nil {
		t.Fatal(err)
	}
	wantYAML := "images:\n- a<b>\nname: web\nready: 2\n"
	if y.String() != wantYAML {
		t.Errorf("PrintYAML = %q, want %q", y.String(), wantYAML)
	}
	if err := PrintJSON(&j, map[string]any{"c": make(chan int)}); err == nil {
		t.Error("PrintJSON of a channel: want error")
	}
}

func TestNewTable(t *testing.T) {
	var b bytes.Buffer
	tw := NewTable(&b)
	tw.Write([]byte("NAME\tREADY\n"))
	tw.Write([]byte("web-canary\t1/2\n"))
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "NAME        READY\nweb-canary  1/2\n"
	if b.String() != want {
		t.Errorf("table = %q, want %q", b.String(), want)
	}
}

func TestColorEnabled(t *testing.T) {
	orig := isTerminalFd
	t.Cleanup(func() { isTerminalFd = orig })
	isTerminalFd = func(uintptr) bool { return true }

	tty := os.Stdout // any *os.File; the fake decides it is a terminal
	tests := []struct {
		name    string
		w       any
		noColor bool
		env     map[string]string
		want    bool
	}{
		{name: "terminal", w: tty, env: map[string]string{"TERM": "xterm-256color"}, want: true},
		{name: "terminal without TERM", w: tty, want: true},
		{name: "--no-color", w: tty, noColor: true, want: false},
		{name: "NO_COLOR", w: tty, env: map[string]string{"NO_COLOR": "1"}, want: false},
		{name: "NO_COLOR empty is unset", w: tty, env: map[string]string{"NO_COLOR": ""}, want: true},
		{name: "TERM=dumb", w: tty, env: map[string]string{"TERM": "dumb"}, want: false},
		{name: "buffer is not a terminal", w: &bytes.Buffer{}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", "")
			t.Setenv("TERM", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			w := tt.w.(interface{ Write([]byte) (int, error) })
			if got := ColorEnabled(w, tt.noColor); got != tt.want {
				t.Errorf("ColorEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIsTerminalRealFiles(t *testing.T) {
	// A pipe and a regular file are never terminals.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if IsTerminal(w) {
		t.Error("IsTerminal(pipe) = true")
	}
	f, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if IsTerminal(f) {
		t.Error("IsTerminal(regular file) = true")
	}
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	if ColorEnabled(f, false) {
		t.Error("ColorEnabled(regular file) = true")
	}
	var nilFile *os.File
	if IsTerminal(nilFile) {
		t.Error("IsTerminal(nil *os.File) = true")
	}
}

func TestColorize(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		c       Color
		s       string
		want    string
	}{
		{name: "red", enabled: true, c: Red, s: "Degraded", want: "\x1b[31mDegraded\x1b[0m"},
		{name: "green", enabled: true, c: Green, s: "Healthy", want: "\x1b[32mHealthy\x1b[0m"},
		{name: "yellow", enabled: true, c: Yellow, s: "Paused", want: "\x1b[33mPaused\x1b[0m"},
		{name: "bold", enabled: true, c: Bold, s: "NAME", want: "\x1b[1mNAME\x1b[0m"},
		{name: "disabled", enabled: false, c: Red, s: "Degraded", want: "Degraded"},
		{name: "empty", enabled: true, c: Red, s: "", want: ""},
		{name: "unknown colour", enabled: true, c: Color(99), s: "x", want: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Colorize(tt.enabled, tt.c, tt.s); got != tt.want {
				t.Errorf("Colorize = %q, want %q", got, tt.want)
			}
		})
	}
}
