package cmd

import (
	"context"
	"errors"
	"fmt"
	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/kube"
	"github.com/aks-mlops/mlplugins/pkg/shared/printers"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/sources"
)

// Exit codes; documented in --help and docs/mlhealth.md.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitFindings = 2
	ExitTimeout  = 3
)

// EnvLogAnalyticsEndpoint overrides the Log Analytics query endpoint (tests, sovereign clouds).
const EnvLogAnalyticsEndpoint = "MLHEALTH_LOGANALYTICS_ENDPOINT"

var (
	healthShort = "One health verdict for an ML app: live Kubernetes state joined with Prometheus and Log Analytics"
	healthLong  = `Report the health of an ML app's Deployments: replicas, restarts and OOM kills in the window,
the kubectl mlrollout canary in progress, request rate, error ratio, p95 latency, CPU, memory and
GPU use (when a Prometheus-compatible source is given), and findings with a severity, a stable
reason, the object, a message and a hint.

APP selects Deployments by Helm release (app.kubernetes.io/instance), app name
(app.kubernetes.io/name) or Deployment name; without APP every Deployment in scope is reported.

Sources: Kubernetes (always; one LIST per kind, in parallel), Prometheus with --prometheus-url
(a plain Prometheus, or an Azure Monitor workspace with an Entra token), Log Analytics with
--log-analytics-workspace (Container Insights' KubePodInventory and KubeEvents). Each source is
reported with its status; a failing one never hides the others.

Exit codes:
  0  nothing at or above --fail-on
  1  error: bad input, API or auth failure, or a requested source failed (the report is still printed)
  2  findings at or above --fail-on (takes precedence over a failed source)
  3  --wait-healthy timed out`

	healthExample = `  # The app released as "sentiment" in namespace ml
  kubectl mlhealth sentiment -n ml

  # Every Deployment in all namespaces, as JSON
  kubectl mlhealth -A -o json

  # With metrics from an Azure Monitor workspace and history from Log Analytics
  kubectl mlhealth sentiment -n ml --prometheus-url https://ws-abcd.eastus.prometheus.monitor.azure.com \
      --log-analytics-workspace 00000000-0000-0000-0000-000000000000

  # In a release script: wait until healthy, at most 10 minutes
  kubectl mlhealth sentiment -n ml --wait-healthy --timeout 10m`
)

// HealthOptions holds the inputs of `kubectl mlhealth`.
type HealthOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	AllNamespaces         bool
	Selector              string
	Since                 string
	Output                string
	Watch                 bool
	Interval              time.Duration
	FailOn                string
	WaitHealthy           bool
	Timeout               time.Duration
	PrometheusURL         string
	PrometheusAuth        string
	MetricsProfile        string
	LogAnalyticsWorkspace string
	LogAnalyticsEndpoint  string
	AzureCredential       string
	NoColor               bool

	intervalOrTimeoutSet bool      // --interval or --timeout given: they need -w or --wait-healthy
	troubleSince         time.Time // with --wait-healthy: when the wait began

	// Filled by Complete; tests set the sources and the clock before Run.
	App       string
	Namespace string
	since     time.Duration
	selector  labels.Selector
	Kube      KubeSource
	Metrics   MetricsSource
	Logs      LogsSource
	Now       func() time.Time
}

// KubeSource reads the live state.
type KubeSource interface {
	Collect(ctx context.Context, namespace string, checkNamespace bool) (health.Kube, health.Source, error)
}

// MetricsSource reads per-pod samples from a Prometheus-compatible API.
type MetricsSource interface {
	Collect(ctx context.Context, q sources.MetricsQuery) (health.Samples, health.Source)
}

// LogsSource reads restart, OOM and event history from Log Analytics.
type LogsSource interface {
	Collect(ctx context.Context, namespace string, since time.Duration) (*health.History, health.Source)
}

// NewHealthOptions returns options with the defaults.
func NewHealthOptions(f *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *HealthOptions {
	return &HealthOptions{
		ConfigFlags:    f,
		IOStreams:      streams,
		Since:          "1h",
		Interval:       5 * time.Second,
		FailOn:         "critical",
		MetricsProfile: sources.ProfileAzure,
		Now:            time.Now,
	}
}

// AddFlags binds the flags to o.
func (o *HealthOptions) AddFlags(cmd *cobra.Command) {
	o.ConfigFlags.AddFlags(cmd.PersistentFlags())
	f := cmd.Flags()
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "Report on Deployments in all namespaces")
	f.StringVarP(&o.Selector, "selector", "l", o.Selector, "Label selector for Deployments (=, ==, !=, in, notin, exists)")
	f.StringVar(&o.Since, "since", o.Since, "Look-back window for restarts, OOM kills, events and history (e.g. 30m, 2h, 1d)")
	f.StringVarP(&o.Output, "output", "o", o.Output, "Output format: table, wide, json or yaml")
	f.BoolVarP(&o.Watch, "watch", "w", o.Watch, "Refresh every --interval: redraw in place on a terminal, append on a pipe")
	f.DurationVar(&o.Interval, "interval", o.Interval, "Time between refreshes with --watch and --wait-healthy")
	f.StringVar(&o.FailOn, "fail-on", o.FailOn, "Exit 2 when a finding is at or above this severity: critical, warning or never")
	f.BoolVar(&o.WaitHealthy, "wait-healthy", o.WaitHealthy, "Wait until the app is Healthy (exit 3 on --timeout)")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "Give up --wait-healthy or --watch after this long (0 waits forever)")
	f.StringVar(&o.PrometheusURL, "prometheus-url", o.PrometheusURL, "Prometheus-compatible query endpoint (Azure Monitor workspace or a plain Prometheus)")
	f.StringVar(&o.PrometheusAuth, "prometheus-auth", o.PrometheusAuth, "Authentication to Prometheus: none or azure (default: azure for *.prometheus.monitor.azure.com, else none)")
	f.StringVar(&o.MetricsProfile, "metrics-profile", o.MetricsProfile, "Label conventions of the metrics: azure (AKS managed Prometheus) or kube-prometheus")
	f.StringVar(&o.LogAnalyticsWorkspace, "log-analytics-workspace", o.LogAnalyticsWorkspace, "Log Analytics workspace ID (GUID) with Container Insights data")
	f.StringVar(&o.LogAnalyticsEndpoint, "log-analytics-endpoint", o.LogAnalyticsEndpoint, "Log Analytics query endpoint (default https://api.loganalytics.io/v1, or $"+EnvLogAnalyticsEndpoint+")")
	_ = f.MarkHidden("log-analytics-endpoint")
	azure.AddCredentialFlag(f, &o.AzureCredential)
	f.BoolVar(&o.NoColor, "no-color", o.NoColor, "Never colour the table")
}

// Complete resolves the app, namespace, window and sources.
func (o *HealthOptions) Complete(cmd *cobra.Command, args []string) error {
	if len(args) == 1 {
		o.App = args[0]
	}
	o.intervalOrTimeoutSet = cmd.Flags().Changed("interval") || cmd.Flags().Changed("timeout")
	if o.LogAnalyticsEndpoint == "" {
		o.LogAnalyticsEndpoint = os.Getenv(EnvLogAnalyticsEndpoint)
	}
	if o.Kube != nil {
		if o.Namespace == "" && !o.AllNamespaces {
			o.Namespace = "default"
		}
		return nil
	}
	counter := &sources.Counter{}
	o.ConfigFlags.WrapConfigFn = counter.WrapConfig
	clients, err := kube.NewClients(o.ConfigFlags)
	if err != nil {
		return err
	}
	o.Namespace = clients.Namespace
	o.Kube = &sources.Kubernetes{Client: clients.Kube, Counter: counter}
	return nil
}

// workspaceID matches a Log Analytics workspace ID (a GUID).
var workspaceID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ParseSince parses a --since value: a Go duration or a whole number of days ("1d").
func ParseSince(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("invalid --since %q: want a positive duration such as 30m, 2h or 1d", s)
	}
	return v, nil
}

// Validate checks the flags without I/O. It also builds the metrics and log sources, which needs no I/O.
func (o *HealthOptions) Validate() error {
	if err := printers.ValidateOutput(o.Output, "table", "wide", "json", "yaml"); err != nil {
		return err
	}
	d, err := ParseSince(o.Since)
	if err != nil {
		return err
	}
	o.since = d
	if o.Selector != "" {
		sel, err := labels.Parse(o.Selector)
		if err != nil {
			return fmt.Errorf("invalid selector %q: %w", o.Selector, err)
		}
		o.selector = sel
	}
	switch o.FailOn {
	case "critical", "warning", "never":
	default:
		return fmt.Errorf("invalid --fail-on %q (want one of: critical, warning, never)", o.FailOn)
	}
	if o.Interval <= 0 {
		return fmt.Errorf("invalid --interval %s: want a positive duration", o.Interval)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("invalid --timeout %s: want 0 (no limit) or a positive duration", o.Timeout)
	}
	if o.intervalOrTimeoutSet && !o.Watch && !o.WaitHealthy {
		return errors.New("--interval and --timeout apply only with -w or --wait-healthy")
	}
	switch o.MetricsProfile {
	case sources.ProfileAzure, sources.ProfileKubePrometheus:
	default:
		return fmt.Errorf("invalid --metrics-profile %q (want one of: azure, kube-prometheus)", o.MetricsProfile)
	}
	switch o.PrometheusAuth {
	case "", "none", "azure":
	default:
		return fmt.Errorf("invalid --prometheus-auth %q (want one of: none, azure)", o.PrometheusAuth)
	}
	if err := azure.ValidateCredentialKind(o.AzureCredential); err != nil {
		return err
	}
	if o.PrometheusAuth != "" && o.PrometheusURL == "" {
		return errors.New("--prometheus-auth needs --prometheus-url")
	}
	if o.Metrics == nil && o.PrometheusURL != "" {
		m, err := sources.NewPrometheus(o.PrometheusURL, o.PrometheusAuth, o.MetricsProfile, o.AzureCredential)
		if err != nil {
			return err
		}
		o.Metrics = m
	}
	if o.LogAnalyticsWorkspace != "" && !workspaceID.MatchString(o.LogAnalyticsWorkspace) {
		return fmt.Errorf("invalid --log-analytics-workspace %q: want the workspace ID, a GUID", o.LogAnalyticsWorkspace)
	}
	if o.Logs == nil && o.LogAnalyticsWorkspace != "" {
		l, err := sources.NewLogAnalytics(o.LogAnalyticsWorkspace, o.LogAnalyticsEndpoint, o.AzureCredential)
		if err != nil {
			return err
		}
		o.Logs = l
	}
	if o.LogAnalyticsWorkspace == "" && o.LogAnalyticsEndpoint != "" && os.Getenv(EnvLogAnalyticsEndpoint) == "" {
		return errors.New("--log-analytics-endpoint needs --log-analytics-workspace")
	}
	return nil
}

// Run collects, renders and maps the outcome to an exit code.
func (o *HealthOptions) Run(ctx context.Context) error {
	if o.Timeout > 0 && (o.WaitHealthy || o.Watch) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	if !o.Watch && !o.WaitHealthy {
		r, err := o.collect(ctx)
		if err != nil {
			return err
		}
		if err := o.noMatch(r); err != nil {
			return err
		}
		if err := o.render(o.Out, r); err != nil {
			return err
		}
		return o.outcome(r)
	}
	if o.WaitHealthy {
		// Trouble from before the wait (Warning events, restarts, OOM kills within --since) does
		// not hold it: the question is whether the app is healthy now, as after a rollout.
		o.troubleSince = o.Now()
	}
	var last *health.Report
	lastSummary := ""
	terminal := printers.IsTerminal(o.Out)
	for first := true; ; first = false {
		r, err := o.collect(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			last = &r
			if o.Watch {
				if err := o.redraw(r, first, terminal); err != nil {
					return err
				}
			}
			if o.WaitHealthy {
				if healthy(r) && len(r.Workloads) > 0 {
					if !o.Watch {
						if err := o.render(o.Out, r); err != nil {
							return err
						}
					}
					return nil
				}
				if s := summary(r); s != lastSummary {
					fmt.Fprintf(o.ErrOut, "waiting for %s: %s\n", o.target(), s)
					lastSummary = s
				}
			}
		}
		select {
		case <-ctx.Done():
			return o.stopped(ctx, last)
		case <-time.After(o.Interval):
		}
	}
}

// stopped ends a watch or wait: on --timeout or Ctrl-C.
func (o *HealthOptions) stopped(ctx context.Context, last *health.Report) error {
	if o.WaitHealthy {
		if last != nil && !o.Watch {
			if err := o.render(o.Out, *last); err != nil {
				return err
			}
		}
		status := "no report"
		if last != nil {
			status = summary(*last)
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return cliutil.Exit(ExitError, fmt.Errorf("interrupted waiting for %s to be healthy: %s", o.target(), status))
		}
		return cliutil.Exit(ExitTimeout, fmt.Errorf("timed out after %s waiting for %s to be healthy: %s", o.Timeout, o.target(), status))
	}
	if last == nil {
		return cliutil.Exit(ExitError, errors.New("stopped before the first report"))
	}
	return o.outcome(*last)
}

func (o *HealthOptions) target() string {
	what := "all Deployments"
	if o.App != "" {
		what = "app " + strconv.Quote(o.App)
	}
	if o.AllNamespaces {
		return what + " in all namespaces"
	}
	return what + " in namespace " + strconv.Quote(o.Namespace)
}

func healthy(r health.Report) bool {
	if r.Status != health.StatusHealthy {
		return false
	}
	for _, s := range r.Sources {
		if s.Status == health.SourceError {
			return false
		}
	}
	return true
}

// summary is a one-line account of a report for progress messages.
func summary(r health.Report) string {
	if len(r.Workloads) == 0 {
		return "no matching Deployment yet"
	}
	counts := map[health.Severity]int{}
	reasons := map[string]bool{}
	for _, f := range r.Findings {
		counts[f.Severity]++
		if f.Severity != health.SeverityInfo {
			reasons[f.Reason] = true
		}
	}
	names := make([]string, 0, len(reasons))
	for n := range reasons {
		names = append(names, n)
	}
	sort.Strings(names)
	s := fmt.Sprintf("%s (%d critical, %d warning", r.Status, counts[health.SeverityCritical], counts[health.SeverityWarning])
	if len(names) > 0 {
		s += ": " + strings.Join(names, ", ")
	}
	s += ")"
	for _, src := range r.Sources {
		if src.Status == health.SourceError {
			s += "; " + src.Name + " failed"
		}
	}
	return s
}

func (o *HealthOptions) noMatch(r health.Report) error {
	if o.App == "" || len(r.Workloads) > 0 {
		return nil
	}
	for _, s := range r.Sources {
		if s.Name == "kubernetes" && s.Status != health.SourceOK {
			return nil
		}
	}
	return fmt.Errorf("no Deployment matches %q by %s, %s or name in %s", o.App, health.LabelInstance, health.LabelName, strings.TrimPrefix(o.target(), "app "+strconv.Quote(o.App)+" in "))
}

// outcome maps a report to the exit code: findings at or above --fail-on first, then failed sources.
func (o *HealthOptions) outcome(r health.Report) error {
	threshold := map[string]int{"critical": 3, "warning": 2, "never": 99}[o.FailOn]
	n := 0
	for _, f := range r.Findings {
		if f.Severity.Rank() >= threshold {
			n++
		}
	}
	if n > 0 {
		return &cliutil.ExitError{Code: ExitFindings}
	}
	var failed []string
	for _, s := range r.Sources {
		if s.Status == health.SourceError {
			failed = append(failed, fmt.Sprintf("%s source failed: %s", s.Name, s.Error))
		}
	}
	if len(failed) > 0 {
		return cliutil.Exit(ExitError, errors.New(strings.Join(failed, "; ")))
	}
	return nil
}

// collect runs one round: Kubernetes and Log Analytics in parallel, then Prometheus (which needs
// the Deployments' request-metric annotations).
func (o *HealthOptions) collect(ctx context.Context) (health.Report, error) {
	ns := o.Namespace
	if o.AllNamespaces {
		ns = ""
	}
	at := o.Now()
	var wg sync.WaitGroup
	var history *health.History
	logSrc := health.Source{Name: "log-analytics", Status: health.SourceDisabled, Detail: "no --log-analytics-workspace"}
	if o.Logs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			history, logSrc = o.Logs.Collect(ctx, ns, o.since)
		}()
	}
	k, kubeSrc, err := o.Kube.Collect(ctx, ns, !o.AllNamespaces)
	if err != nil {
		wg.Wait()
		return health.Report{}, err
	}
	var samples health.Samples
	metricSrc := health.Source{Name: "prometheus", Status: health.SourceDisabled, Detail: "no --prometheus-url"}
	if o.Metrics != nil {
		samples, metricSrc = o.Metrics.Collect(ctx, sources.MetricsQuery{
			Namespace:      ns,
			Since:          o.since,
			RequestMetrics: requestMetrics(k, o.App, o.selector),
			At:             at,
		})
	}
	wg.Wait()
	opts := health.Options{App: o.App, Selector: o.selector, SelectorText: o.Selector, Namespace: ns,
		AllNamespaces: o.AllNamespaces, Since: o.since, Now: at, TroubleSince: o.troubleSince}
	return health.Build(health.Input{Kube: k, Samples: samples, History: history,
		Sources: []health.Source{kubeSrc, metricSrc, logSrc}}, opts), nil
}

// requestMetrics lists the request-duration histograms the selected Deployments name.
func requestMetrics(k health.Kube, app string, sel labels.Selector) []string {
	set := map[string]bool{}
	for i := range k.Deployments {
		d := &k.Deployments[i]
		if !health.Matches(d, app, sel) && !health.IsCanary(d) {
			continue
		}
		name := d.Annotations[health.AnnotationRequestMetric]
		if name == "" {
			name = sources.DefaultRequestMetric
		}
		set[name] = true
	}
	if len(set) == 0 {
		set[sources.DefaultRequestMetric] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (o *HealthOptions) render(w io.Writer, r health.Report) error {
	switch o.Output {
	case "json":
		return printers.PrintJSON(w, r)
	case "yaml":
		return printers.PrintYAML(w, r)
	}
	return renderTable(w, &r, o.Output == "wide", printers.ColorEnabled(o.Out, o.NoColor))
}

// redraw prints a watch round: in place on a terminal, appended (YAML documents separated) on a pipe.
func (o *HealthOptions) redraw(r health.Report, first, terminal bool) error {
	if terminal {
		if _, err := io.WriteString(o.Out, "\x1b[H\x1b[2J"); err != nil {
			return err
		}
	} else if !first {
		sep := "\n"
		if o.Output == "yaml" {
			sep = "---\n"
		} else if o.Output == "json" {
			sep = ""
		}
		if _, err := io.WriteString(o.Out, sep); err != nil {
			return err
		}
	}
	return o.render(o.Out, r)
}
