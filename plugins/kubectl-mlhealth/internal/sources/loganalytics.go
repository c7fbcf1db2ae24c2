package sources

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/monitor/query/azlogs"

	"github.com/aks-mlops/mlplugins/pkg/shared/azure"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

// DefaultLogAnalyticsEndpoint is the public-cloud query endpoint (the client appends /v1).
const DefaultLogAnalyticsEndpoint = "https://api.loganalytics.io"

// LogsQuerier is the part of *azlogs.Client the source uses.
type LogsQuerier interface {
	QueryWorkspace(ctx context.Context, workspaceID string, body azlogs.QueryBody, options *azlogs.QueryWorkspaceOptions) (azlogs.QueryWorkspaceResponse, error)
}

// LogAnalytics reads Container Insights history: KubePodInventory (restarts, last termination
// reasons such as OOMKilled, including pods that are gone) and KubeEvents (Warning events).
type LogAnalytics struct {
	Client    LogsQuerier
	Workspace string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewLogAnalytics returns the source for workspace (the workspace GUID), querying endpoint
// (DefaultLogAnalyticsEndpoint when empty) with the credential of that kind ("" for the default chain).
func NewLogAnalytics(workspace, endpoint, credentialKind string) (*LogAnalytics, error) {
	cred, err := azure.NewCredential(credentialKind)
	if err != nil {
		return nil, fmt.Errorf("log analytics credential: %w", err)
	}
	return NewLogAnalyticsWithCredential(workspace, endpoint, cred, nil)
}

// NewLogAnalyticsWithCredential is NewLogAnalytics with a given credential and, optionally, transport.
func NewLogAnalyticsWithCredential(workspace, endpoint string, cred azcore.TokenCredential, transport policy.Transporter) (*LogAnalytics, error) {
	if endpoint == "" {
		endpoint = DefaultLogAnalyticsEndpoint
	}
	endpoint = strings.TrimSuffix(strings.TrimSuffix(endpoint, "/"), "/v1")
	if !strings.HasPrefix(endpoint, "https://") {
		return nil, fmt.Errorf("invalid log analytics endpoint %q: want an https URL", endpoint)
	}
	opts := &azlogs.ClientOptions{ClientOptions: azcore.ClientOptions{
		Cloud: cloud.Configuration{Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
			azlogs.ServiceName: {Audience: "https://api.loganalytics.io", Endpoint: endpoint},
		}},
		Retry:     policy.RetryOptions{MaxRetries: 1, RetryDelay: 200 * time.Millisecond},
		Transport: transport,
	}}
	c, err := azlogs.NewClient(cred, opts)
	if err != nil {
		return nil, fmt.Errorf("log analytics client: %w", err)
	}
	return &LogAnalytics{Client: c, Workspace: workspace}, nil
}

// RestartsQuery returns the KQL for restart and last-termination history in namespace ("" for all).
func RestartsQuery(namespace string, since time.Duration) string {
	return fmt.Sprintf(`KubePodInventory
| where TimeGenerated > ago(%s)%s
| where ControllerKind == 'ReplicaSet'
| summarize Restarts = max(ContainerRestartCount) - min(ContainerRestartCount), arg_max(TimeGenerated, ContainerLastStatus) by Namespace, ControllerName, Name, ContainerName
| extend Last = parse_json(ContainerLastStatus)
| project Namespace, ControllerName, Pod = Name, Container = tostring(split(ContainerName, '/')[1]), Restarts, LastReason = tostring(Last.reason), LastFinished = todatetime(Last.finishedAt)
| where Restarts > 0 or LastReason == 'OOMKilled'`, kqlDuration(since), namespaceFilter(namespace))
}

// EventsQuery returns the KQL for Warning events in namespace ("" for all).
func EventsQuery(namespace string, since time.Duration) string {
	return fmt.Sprintf(`KubeEvents
| where TimeGenerated > ago(%s)%s
| where KubeEventType == 'Warning'
| summarize Count = sum(Count), arg_max(LastSeen, Message) by Namespace, ObjectKind, Name, Reason
| project Namespace, ObjectKind, Name, Reason, Message, Count, Last = LastSeen`, kqlDuration(since), namespaceFilter(namespace))
}

func kqlDuration(d time.Duration) string { return fmt.Sprintf("%ds", int64(d.Seconds())) }

func namespaceFilter(ns string) string {
	if ns == "" {
		return ""
	}
	// Namespace names are DNS labels, so they need no escaping inside single quotes.
	return "\n| where Namespace == '" + ns + "'"
}

// Collect runs the two queries in parallel. A partial error (HTTP 200 with an error next to the
// tables) marks the source as failed but keeps the rows that came back.
func (l *LogAnalytics) Collect(ctx context.Context, namespace string, since time.Duration) (*health.History, health.Source) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	end := now().UTC()
	span := azlogs.NewTimeInterval(end.Add(-since), end)
	var wg sync.WaitGroup
	var restarts, events []map[string]any
	var errs [2]error
	run := func(i int, q string, into *[]map[string]any) {
		defer wg.Done()
		resp, err := l.Client.QueryWorkspace(ctx, l.Workspace, azlogs.QueryBody{Query: &q, Timespan: &span}, nil)
		if err != nil {
			errs[i] = err
			return
		}
		*into = rowsOf(resp.QueryResults)
		if resp.Error != nil {
			errs[i] = fmt.Errorf("partial result: %s", partialMessage(resp.Error))
		}
	}
	wg.Add(2)
	go run(0, RestartsQuery(namespace, since), &restarts)
	go run(1, EventsQuery(namespace, since), &events)
	wg.Wait()

	h := &health.History{}
	for _, r := range restarts {
		h.Restarts = append(h.Restarts, health.HistoryRestart{
			Namespace: str(r["Namespace"]), Controller: str(r["ControllerName"]), Pod: str(r["Pod"]),
			Container: str(r["Container"]), Restarts: int(num(r["Restarts"])), LastReason: str(r["LastReason"]),
			LastFinished: tm(r["LastFinished"]),
		})
	}
	for _, r := range events {
		h.Events = append(h.Events, health.HistoryEvent{
			Namespace: str(r["Namespace"]), Kind: str(r["ObjectKind"]), Name: str(r["Name"]), Reason: str(r["Reason"]),
			Message: str(r["Message"]), Count: int(num(r["Count"])), Last: tm(r["Last"]),
		})
	}
	src := health.Source{Name: "log-analytics", Status: health.SourceOK, Requests: 2,
		Detail: fmt.Sprintf("workspace %s: %d container histories, %d event groups", l.Workspace, len(h.Restarts), len(h.Events))}
	var msgs []string
	for i, err := range errs {
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("%s query: %s", []string{"KubePodInventory", "KubeEvents"}[i], azure.Condense(err.Error())))
		}
	}
	if len(msgs) > 0 {
		src.Status = health.SourceError
		src.Error = strings.Join(msgs, "; ")
	}
	return h, src
}

// partialMessage extracts "code: message" from an ErrorInfo, whose Error() is the raw JSON.
func partialMessage(e *azlogs.ErrorInfo) string {
	raw := e.Error()
	var v struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Message    string `json:"message"`
			Innererror *struct {
				Message string `json:"message"`
			} `json:"innererror"`
		} `json:"details"`
		Innererror *struct {
			Message string `json:"message"`
		} `json:"innererror"`
	}
	if json.Unmarshal([]byte(raw), &v) != nil || v.Code == "" {
		return oneLine(raw)
	}
	msg := v.Code + ": " + v.Message
	switch {
	case v.Innererror != nil && v.Innererror.Message != "":
		msg += " (" + v.Innererror.Message + ")"
	case len(v.Details) > 0 && v.Details[0].Innererror != nil && v.Details[0].Innererror.Message != "":
		msg += " (" + v.Details[0].Innererror.Message + ")"
	case len(v.Details) > 0 && v.Details[0].Message != "":
		msg += " (" + v.Details[0].Message + ")"
	}
	return msg
}

// rowsOf turns the first table into rows keyed by column name.
func rowsOf(q azlogs.QueryResults) []map[string]any {
	if len(q.Tables) == 0 {
		return nil
	}
	t := q.Tables[0]
	out := make([]map[string]any, 0, len(t.Rows))
	for _, r := range t.Rows {
		m := map[string]any{}
		for i, c := range t.Columns {
			if c.Name != nil && i < len(r) {
				m[*c.Name] = r[i]
			}
		}
		out = append(out, m)
	}
	return out
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		var f float64
		_, _ = fmt.Sscan(x, &f) // not a number: 0, as an empty cell
		return f
	}
	return 0
}

func tm(v any) time.Time {
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// oneLine keeps error text to one line, so the table stays a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
