// Package printers renders a command's view model as a table, JSON or YAML, and decides when
// colour may be used.
//
// It depends on the standard library, sigs.k8s.io/yaml and golang.org/x/term only.
package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"
	"sigs.k8s.io/yaml"
)

// ValidateOutput checks an -o/--output value. The empty string (the default table) is always
// accepted; anything else must be one of allowed.
func ValidateOutput(format string, allowed ...string) error {
	if format == "" {
		return nil
	}
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q (want one of: %s)", format, strings.Join(allowed, ", "))
}

// PrintJSON writes v to w as indented JSON followed by a newline. HTML characters are not escaped.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing json: %w", err)
	}
	return nil
}

// PrintYAML writes v to w as YAML. Field names follow the json tags, so the YAML and JSON shapes match.
func PrintYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding yaml: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing yaml: %w", err)
	}
	return nil
}

// NewTable returns a tabwriter with the house settings (minwidth 0, tabwidth 0, padding 2, spaces).
// Callers write UPPERCASE headers, tab-separated cells, and call Flush when done.
func NewTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// fder is implemented by *os.File and by other writers backed by a file descriptor.
type fder interface{ Fd() uintptr }

// isTerminalFd reports whether fd is a terminal; tests replace it.
var isTerminalFd = func(fd uintptr) bool { return term.IsTerminal(int(fd)) }

// IsTerminal reports whether w is a terminal. Writers without a file descriptor (buffers, pipes
// wrapped in other writers) are not terminals.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(fder)
	if !ok {
		return false
	}
	if file, isFile := w.(*os.File); isFile && file == nil {
		return false
	}
	return isTerminalFd(f.Fd())
}

// ColorEnabled reports whether colour may be written to w: not when noColor (--no-color) is set,
// not when NO_COLOR is set to a non-empty value (https://no-color.org), not when TERM is "dumb",
// and only when w is a terminal.
func ColorEnabled(w io.Writer, noColor bool) bool {
	if noColor || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return IsTerminal(w)
}

// Color is an ANSI SGR attribute.
type Color int

// Colours and attributes understood by Colorize.
const (
	Bold Color = iota + 1
	Faint
	Red
	Green
	Yellow
	Blue
	Cyan
)

var sgr = map[Color]string{
	Bold:   "1",
	Faint:  "2",
	Red:    "31",
	Green:  "32",
	Yellow: "33",
	Blue:   "34",
	Cyan:   "36",
}

// Colorize wraps s in the escape sequence for c when enabled; otherwise, or for an unknown colour,
// it returns s unchanged. Colour whole table cells after computing their text, since escapes
// count towards tabwriter widths.
func Colorize(enabled bool, c Color, s string) string {
	code, ok := sgr[c]
	if !enabled || !ok || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}
