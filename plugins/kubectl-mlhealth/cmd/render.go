package cmd

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/aks-mlops/mlplugins/pkg/shared/printers"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

// MaxTableWidth is the width the default table is fitted into.
const MaxTableWidth = 120

// column is one table column; shrinkable columns are truncated (with an ellipsis) to fit.
type column struct {
	header     string
	shrinkable bool
	min        int
	// wrap continues a too-long cell of the last column on the following lines instead of truncating it.
	wrap bool
}

// cell is a cell's text and the colour of the whole (padded) cell.
type cell struct {
	text  string
	color printers.Color
}

type row struct {
	cells []cell
	// after is a line printed under the row (a finding's hint), truncated to the table width.
	after string
}

// table is a small aligned table whose cells are coloured after padding, so escapes never
// disturb the alignment.
type table struct {
	cols  []column
	rows  []row
	max   int // 0: no limit
	color bool
}

func (t *table) add(r row) { t.rows = append(t.rows, r) }

func width(s string) int { return utf8.RuneCountInString(s) }

func truncate(s string, n int) string {
	if width(s) <= n {
		return s
	}
	if n <= 1 {
		return string([]rune(s)[:n])
	}
	return string([]rune(s)[:n-1]) + "…"
}

// wrapText breaks s into lines of at most n runes, at spaces where it can.
func wrapText(s string, n int) []string {
	if n < 8 {
		n = 8
	}
	var lines []string
	for width(s) > n {
		r := []rune(s)
		cut := n
		for i := n; i > n/2; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		lines = append(lines, strings.TrimRight(string(r[:cut]), " "))
		s = strings.TrimLeft(string(r[cut:]), " ")
	}
	return append(lines, s)
}

func (t *table) widths() []int {
	ws := make([]int, len(t.cols))
	for i, c := range t.cols {
		ws[i] = width(c.header)
	}
	for _, r := range t.rows {
		for i, c := range r.cells {
			if w := width(c.text); w > ws[i] {
				ws[i] = w
			}
		}
	}
	if t.max <= 0 {
		return ws
	}
	total := func() int {
		n := 2 * (len(ws) - 1)
		for _, w := range ws {
			n += w
		}
		return n
	}
	// Shrink the last shrinkable column first, one character at a time, down to its minimum.
	for i := len(t.cols) - 1; i >= 0 && total() > t.max; i-- {
		if !t.cols[i].shrinkable {
			continue
		}
		min := max(t.cols[i].min, width(t.cols[i].header))
		over := total() - t.max
		ws[i] = max(min, ws[i]-over)
	}
	return ws
}

func (t *table) write(w io.Writer) error {
	ws := t.widths()
	var b strings.Builder
	line := func(cells []cell) {
		var more []string
		indent := 0
		for i := 0; i < len(cells)-1; i++ {
			indent += ws[i] + 2
		}
		for i, c := range cells {
			text := c.text
			if i == len(cells)-1 && t.cols[i].wrap && width(text) > ws[i] {
				lines := wrapText(text, ws[i])
				text, more = lines[0], lines[1:]
			}
			text = truncate(text, ws[i])
			if i < len(cells)-1 {
				text += strings.Repeat(" ", ws[i]-width(text))
			}
			b.WriteString(printers.Colorize(t.color && c.color != 0, c.color, text))
			if i < len(cells)-1 {
				b.WriteString("  ")
			}
		}
		b.WriteString("\n")
		for _, m := range more {
			b.WriteString(strings.Repeat(" ", indent) + m + "\n")
		}
	}
	headers := make([]cell, len(t.cols))
	for i, c := range t.cols {
		headers[i] = cell{text: c.header}
	}
	line(headers)
	for _, r := range t.rows {
		line(r.cells)
		if r.after != "" {
			lines := []string{r.after}
			if t.max > 0 {
				lines = wrapText(r.after, t.max-4)
			}
			for i, l := range lines {
				if i > 0 {
					l = "    " + l
				}
				b.WriteString(printers.Colorize(t.color, printers.Faint, l) + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func statusColor(s health.Status) printers.Color {
	switch s {
	case health.StatusCritical:
		return printers.Red
	case health.StatusWarning:
		return printers.Yellow
	case health.StatusHealthy:
		return printers.Green
	}
	return 0
}

func severityColor(s health.Severity) printers.Color {
	switch s {
	case health.SeverityCritical:
		return printers.Red
	case health.SeverityWarning:
		return printers.Yellow
	}
	return printers.Blue
}

func sourceColor(s string) printers.Color {
	switch s {
	case health.SourceError:
		return printers.Red
	case health.SourceOK:
		return printers.Green
	}
	return printers.Faint
}

// renderTable writes the report as the default (wide=false) or wide table.
func renderTable(w io.Writer, r *health.Report, wide, color bool) error {
	limit := MaxTableWidth
	if wide {
		limit = 0
	}
	scope := "namespace " + r.Scope.Namespace
	if r.Scope.AllNamespaces {
		scope = "all namespaces"
	}
	if r.Scope.App != "" {
		scope += ", app " + r.Scope.App
	}
	if r.Scope.Selector != "" {
		scope += ", selector " + r.Scope.Selector
	}
	rest := fmt.Sprintf("  %s, window %s, at %s", scope, strings.TrimSuffix(strings.TrimSuffix(r.Scope.Since, "0s"), "0m"),
		r.GeneratedAt.Format("2006-01-02T15:04:05Z07:00"))
	if limit > 0 {
		rest = truncate(rest, limit-width(string(r.Status)))
	}
	head := printers.Colorize(color, statusColor(r.Status), string(r.Status)) + rest
	if _, err := fmt.Fprintln(w, head+"\n"); err != nil {
		return err
	}
	if len(r.Workloads) == 0 {
		if _, err := fmt.Fprintln(w, "No workloads found."); err != nil {
			return err
		}
	} else if err := workloadTable(r, wide, limit, color).write(w); err != nil {
		return err
	}
	var canaries []string
	for _, wl := range r.Workloads {
		if wl.Canary != nil {
			canaries = append(canaries, canaryLine(wl))
		}
	}
	if len(canaries) > 0 {
		fmt.Fprintln(w)
		for _, c := range canaries {
			if limit > 0 {
				c = truncate(c, limit)
			}
			fmt.Fprintln(w, c)
		}
	}
	fmt.Fprintln(w)
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "No findings.")
	} else if err := findingsTable(r, wide, limit, color).write(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return sourcesTable(r, limit, color).write(w)
}

func hasMetrics(r *health.Report) bool {
	for _, s := range r.Sources {
		if s.Name == "prometheus" && s.Status != health.SourceDisabled {
			return true
		}
	}
	return false
}

func workloadTable(r *health.Report, wide bool, limit int, color bool) *table {
	t := &table{max: limit, color: color}
	ns := r.Scope.AllNamespaces || wide
	if ns {
		t.cols = append(t.cols, column{header: "NAMESPACE", shrinkable: true, min: 8})
	}
	t.cols = append(t.cols, column{header: "WORKLOAD", shrinkable: true, min: 12},
		column{header: "STATUS"}, column{header: "READY"}, column{header: "UP-TO-DATE"}, column{header: "AVAILABLE"},
		column{header: "RESTARTS"}, column{header: "OOM"})
	metrics := hasMetrics(r)
	if metrics {
		t.cols = append(t.cols, column{header: "RPS"}, column{header: "ERR"}, column{header: "P95"},
			column{header: "CPU/REQ"}, column{header: "MEM/LIM"}, column{header: "GPU"})
	}
	if wide {
		t.cols = append(t.cols, column{header: "CPU"}, column{header: "MEMORY"}, column{header: "IMAGES"})
	}
	line := func(namespace, name string, st health.Status, rep health.Replicas, restarts, ooms string, m *health.Metrics, res *health.Resources, images []string) {
		var cells []cell
		if ns {
			cells = append(cells, cell{text: namespace})
		}
		cells = append(cells, cell{text: name}, cell{text: string(st), color: statusColor(st)},
			cell{text: fmt.Sprintf("%d/%d", rep.Ready, rep.Desired)}, cell{text: fmt.Sprint(rep.UpToDate)},
			cell{text: fmt.Sprint(rep.Available)}, cell{text: restarts}, cell{text: ooms})
		if metrics {
			cells = append(cells, metricCells(m, res)...)
		}
		if wide {
			cpu, mem := "-", "-"
			if m != nil && m.CPUCores != nil {
				cpu = fmt.Sprintf("%.3g", *m.CPUCores)
			}
			if m != nil && m.MemoryBytes != nil {
				mem = bytesString(*m.MemoryBytes)
			}
			cells = append(cells, cell{text: cpu}, cell{text: mem}, cell{text: strings.Join(images, ",")})
		}
		t.add(row{cells: cells})
	}
	for _, wl := range r.Workloads {
		res := wl.Resources
		line(wl.Namespace, wl.Name, wl.Status, wl.Replicas, fmt.Sprint(wl.Restarts), fmt.Sprint(wl.OOMKills), wl.Metrics, &res, wl.Images)
		if c := wl.Canary; c != nil {
			line("", "└ "+c.Name, c.Status, c.Replicas, "", "", c.Metrics, nil, nil)
		}
	}
	return t
}

func metricCells(m *health.Metrics, res *health.Resources) []cell {
	dash := cell{text: "-"}
	if m == nil {
		return []cell{dash, dash, dash, dash, dash, dash}
	}
	out := make([]cell, 0, 6)
	opt := func(v *float64, f func(float64) string) cell {
		if v == nil {
			return dash
		}
		return cell{text: f(*v)}
	}
	out = append(out, opt(m.RequestRate, func(v float64) string { return compact(v) }),
		opt(m.ErrorRatio, func(v float64) string { return percent(v * 100) }),
		opt(m.LatencyP95Seconds, func(v float64) string {
			if v < 1 {
				return fmt.Sprintf("%.0fms", v*1000)
			}
			return fmt.Sprintf("%.2fs", v)
		}))
	// CPU against requests and memory against limits, when the pods state them (the canary row has no
	// resources of its own in the table, so it shows absolute values).
	out = append(out, opt(m.CPUCores, func(v float64) string {
		if res != nil && res.CPURequestCores > 0 {
			return percent(v / res.CPURequestCores * 100)
		}
		return compact(v)
	}), opt(m.MemoryBytes, func(v float64) string {
		if res != nil && res.MemoryLimitBytes > 0 {
			return percent(v / res.MemoryLimitBytes * 100)
		}
		return bytesString(v)
	}), opt(m.GPUUtilization, func(v float64) string { return percent(v) }))
	return out
}

func percent(v float64) string {
	if v != 0 && math.Abs(v) < 10 {
		return fmt.Sprintf("%.1f%%", v)
	}
	return fmt.Sprintf("%.0f%%", v)
}

func compact(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func bytesString(v float64) string {
	units := []string{"B", "Ki", "Mi", "Gi", "Ti"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f%s", v, units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

func canaryLine(wl health.Workload) string {
	c := wl.Canary
	parts := []string{}
	if c.Step != nil {
		s := fmt.Sprintf("step %d", *c.Step)
		if c.Steps != nil {
			s += fmt.Sprintf("/%d", *c.Steps)
		}
		parts = append(parts, s)
	}
	if c.Weight != nil {
		parts = append(parts, fmt.Sprintf("weight %g%%", *c.Weight))
	}
	if c.Phase != "" {
		parts = append(parts, c.Phase)
	}
	if c.LastCheck != "" {
		parts = append(parts, "last check: "+c.LastCheck)
	}
	if len(parts) == 0 {
		parts = append(parts, "no rollout state on the stable Deployment")
	}
	return fmt.Sprintf("Canary %s/%s of %s: %s", wl.Namespace, c.Name, wl.Name, strings.Join(parts, ", "))
}

func findingsTable(r *health.Report, wide bool, limit int, color bool) *table {
	t := &table{max: limit, color: color, cols: []column{{header: "SEVERITY"}, {header: "REASON"},
		{header: "OBJECT", shrinkable: true, min: 16}, {header: "MESSAGE", shrinkable: true, min: 24, wrap: true}}}
	if r.Scope.AllNamespaces || wide {
		t.cols = append([]column{{header: "NAMESPACE", shrinkable: true, min: 8}}, t.cols...)
	}
	if wide {
		t.cols = append(t.cols, column{header: "HINT"})
	}
	for _, f := range r.Findings {
		var cells []cell
		if r.Scope.AllNamespaces || wide {
			cells = append(cells, cell{text: f.Namespace})
		}
		cells = append(cells, cell{text: string(f.Severity), color: severityColor(f.Severity)}, cell{text: f.Reason},
			cell{text: f.Object}, cell{text: f.Message})
		rw := row{cells: cells}
		if wide {
			rw.cells = append(rw.cells, cell{text: f.Hint})
		} else {
			rw.after = "  hint: " + f.Hint
		}
		t.add(rw)
	}
	return t
}

func sourcesTable(r *health.Report, limit int, color bool) *table {
	t := &table{max: limit, color: color, cols: []column{{header: "SOURCE"}, {header: "STATUS"}, {header: "REQUESTS"},
		{header: "DETAIL", shrinkable: true, min: 20, wrap: true}}}
	for _, s := range r.Sources {
		detail := s.Detail
		if s.Error != "" {
			detail = s.Error
		}
		req := "-"
		if s.Requests > 0 {
			req = fmt.Sprint(s.Requests)
		}
		t.add(row{cells: []cell{{text: s.Name}, {text: s.Status, color: sourceColor(s.Status)}, {text: req}, {text: detail}}})
	}
	return t
}
