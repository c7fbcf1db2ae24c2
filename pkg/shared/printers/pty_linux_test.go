package printers

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the replica side of a new pseudo-terminal, a real terminal for IsTerminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	primary, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { primary.Close() })
	fd := int(primary.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("getting pty number: %v", err)
	}
	replica, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening pty replica: %v", err)
	}
	t.Cleanup(func() { replica.Close() })
	return replica
}

func TestColorEnabledOnRealTerminal(t *testing.T) {
	tty := openPTY(t)
	if !IsTerminal(tty) {
		t.Fatal("IsTerminal(pty) = false")
	}
	tests := []struct {
		name    string
		noColor bool
		env     map[string]string
		want    bool
	}{
		{name: "terminal", env: map[string]string{"TERM": "xterm"}, want: true},
		{name: "NO_COLOR", env: map[string]string{"TERM": "xterm", "NO_COLOR": "1"}, want: false},
		{name: "TERM=dumb", env: map[string]string{"TERM": "dumb"}, want: false},
		{name: "--no-color", noColor: true, env: map[string]string{"TERM": "xterm"}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if got := ColorEnabled(tty, tt.noColor); got != tt.want {
				t.Errorf("ColorEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}
