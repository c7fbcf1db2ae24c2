// Package prom is a small client for the Prometheus HTTP API (instant and range queries). The same
// client queries a plain Prometheus and an Azure Monitor workspace, which implements that API
// behind Entra bearer tokens.
//
// It depends on the standard library and pkg/shared/azure only.
package prom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
)

// Authentication modes accepted by NewForURL.
const (
	AuthNone  = "none"
	AuthAzure = "azure"
)

// azureMonitorSuffix ends the host name of every Azure Monitor workspace query endpoint.
const azureMonitorSuffix = ".prometheus.monitor.azure.com"

// maxErrorBody bounds how much of an error response is read for its message.
const maxErrorBody = 64 << 10

// Sample is one value of an instant vector (or a scalar, which has no labels).
type Sample struct {
	Metric map[string]string `json:"metric"`
	Value  float64           `json:"value"`
	Time   time.Time         `json:"time"`
}

// Vector is the result of an instant query.
type Vector []Sample

// Point is one value of a range-vector series.
type Point struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

// Series is one labelled series of a range query.
type Series struct {
	Metric map[string]string `json:"metric"`
	Points []Point           `json:"points"`
}

// Matrix is the result of a range query.
type Matrix []Series

// Warnings are the non-fatal messages Prometheus returned with a result.
type Warnings []string

// APIError is a query the server rejected: an error envelope ("bad_data", "execution", "timeout",
// ...) or, when the body is not an envelope, "client_error" for 4xx and "server_error" for 5xx.
type APIError struct {
	Type       string
	Msg        string
	StatusCode int
}

// Error returns a one-line description.
func (e *APIError) Error() string {
	return fmt.Sprintf("prometheus %s (HTTP %d): %s", e.Type, e.StatusCode, e.Msg)
}

// Client queries one Prometheus HTTP API endpoint. It is safe for concurrent use.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// New returns a client for the Prometheus API at baseURL (for example "http://127.0.0.1:9090" or a
// URL with a path prefix), sending requests through rt (nil means http.DefaultTransport).
func New(baseURL string, rt http.RoundTripper) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q must be an absolute http or https URL", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &Client{base: u, hc: &http.Client{Transport: rt}}, nil
}

// NewForURL returns a client for baseURL with the given authentication: "none", "azure" (an Entra
// bearer token for the Azure Monitor Prometheus scope, from cred or, when cred is nil, from
// azure.NewCredential("")), or "" to choose azure for *.prometheus.monitor.azure.com and none otherwise.
func NewForURL(baseURL, auth string, cred azcore.TokenCredential) (*Client, error) {
	return newForURL(baseURL, auth, cred, nil)
}

// ResolveAuth is the authentication NewForURL uses for baseURL: auth itself, or for "" azure on
// *.prometheus.monitor.azure.com and none elsewhere.
func ResolveAuth(baseURL, auth string) string {
	if auth != "" {
		return auth
	}
	if u, err := url.Parse(baseURL); err == nil && strings.HasSuffix(strings.ToLower(u.Hostname()), azureMonitorSuffix) {
		return AuthAzure
	}
	return AuthNone
}

func newForURL(baseURL, auth string, cred azcore.TokenCredential, base http.RoundTripper) (*Client, error) {
	switch auth = ResolveAuth(baseURL, auth); auth {
	case AuthNone:
		return New(baseURL, base)
	case AuthAzure:
		if cred == nil {
			var err error
			if cred, err = azure.NewCredential(""); err != nil {
				return nil, err
			}
		}
		return New(baseURL, azure.NewBearerTransport(base, cred, azure.ScopePrometheus))
	default:
		return nil, fmt.Errorf("unknown prometheus auth %q (want one of: %s, %s)", auth, AuthNone, AuthAzure)
	}
}

// Query runs an instant query evaluated at at (the server's current time when at is zero). A scalar
// result is returned as a Vector with one unlabelled Sample.
func (c *Client) Query(ctx context.Context, q string, at time.Time) (Vector, Warnings, error) {
	form := url.Values{"query": {q}}
	if !at.IsZero() {
		form.Set("time", formatTime(at))
	}
	data, warnings, err := c.do(ctx, "/api/v1/query", form)
	if err != nil {
		return nil, warnings, err
	}
	switch data.ResultType {
	case "vector":
		var raw []struct {
			Metric    map[string]string `json:"metric"`
			Value     *samplePair       `json:"value"`
			Histogram json.RawMessage   `json:"histogram"`
		}
		if err := json.Unmarshal(data.Result, &raw); err != nil {
			return nil, warnings, fmt.Errorf("decoding prometheus vector: %w", err)
		}
		vec := make(Vector, 0, len(raw))
		skipped := 0
		for _, s := range raw {
			if s.Value == nil {
				skipped++
				continue
			}
			vec = append(vec, Sample{Metric: labels(s.Metric), Value: s.Value.v, Time: s.Value.t})
		}
		if skipped > 0 {
			warnings = append(warnings, fmt.Sprintf("skipped %d native histogram samples", skipped))
		}
		return vec, warnings, nil
	case "scalar":
		var p samplePair
		if err := json.Unmarshal(data.Result, &p); err != nil {
			return nil, warnings, fmt.Errorf("decoding prometheus scalar: %w", err)
		}
		return Vector{{Metric: map[string]string{}, Value: p.v, Time: p.t}}, warnings, nil
	default:
		return nil, warnings, fmt.Errorf("prometheus returned a %s for an instant query, want a vector or scalar", data.ResultType)
	}
}

// QueryRange runs a range query from start to end at the given resolution step.
func (c *Client) QueryRange(ctx context.Context, q string, start, end time.Time, step time.Duration) (Matrix, Warnings, error) {
	if step <= 0 {
		return nil, nil, fmt.Errorf("range query step must be positive, got %s", step)
	}
	if end.Before(start) {
		return nil, nil, errors.New("range query end is before its start")
	}
	form := url.Values{
		"query": {q},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	data, warnings, err := c.do(ctx, "/api/v1/query_range", form)
	if err != nil {
		return nil, warnings, err
	}
	if data.ResultType != "matrix" {
		return nil, warnings, fmt.Errorf("prometheus returned a %s for a range query, want a matrix", data.ResultType)
	}
	var raw []struct {
		Metric map[string]string `json:"metric"`
		Values []samplePair      `json:"values"`
	}
	if err := json.Unmarshal(data.Result, &raw); err != nil {
		return nil, warnings, fmt.Errorf("decoding prometheus matrix: %w", err)
	}
	m := make(Matrix, 0, len(raw))
	for _, s := range raw {
		pts := make([]Point, 0, len(s.Values))
		for _, p := range s.Values {
			pts = append(pts, Point{Time: p.t, Value: p.v})
		}
		m = append(m, Series{Metric: labels(s.Metric), Points: pts})
	}
	return m, warnings, nil
}

// envelope is the JSON body of every Prometheus API response.
type envelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// do POSTs the form-encoded query and falls back to GET when the server does not allow POST, as
// the Prometheus Go client does.
func (c *Client) do(ctx context.Context, path string, form url.Values) (*queryData, Warnings, error) {
	resp, err := c.send(ctx, http.MethodPost, path, form)
	if err == nil && (resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		drain(resp)
		resp, err = c.send(ctx, http.MethodGet, path, form)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("querying prometheus: %w", err)
	}
	defer drain(resp)

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading prometheus response: %w", err)
	}
	var env envelope
	jsonErr := json.Unmarshal(body, &env)
	if jsonErr != nil || env.Status == "" {
		if resp.StatusCode/100 != 2 {
			return nil, nil, httpError(resp.StatusCode, body)
		}
		if jsonErr == nil {
			jsonErr = errors.New("no status field")
		}
		return nil, nil, fmt.Errorf("decoding prometheus response: %w", jsonErr)
	}
	warnings := Warnings(env.Warnings)
	if env.Status != "success" {
		msg := env.Error
		if msg == "" {
			msg = "status " + env.Status
		}
		typ := env.ErrorType
		if typ == "" {
			typ = errorTypeFor(resp.StatusCode)
		}
		return nil, warnings, &APIError{Type: typ, Msg: oneLine(msg), StatusCode: resp.StatusCode}
	}
	if resp.StatusCode/100 != 2 {
		return nil, warnings, httpError(resp.StatusCode, body)
	}
	var data queryData
	if err := json.Unmarshal(env.Data, &data); err != nil {
		return nil, warnings, fmt.Errorf("decoding prometheus result: %w", err)
	}
	return &data, warnings, nil
}

func (c *Client) send(ctx context.Context, method, path string, form url.Values) (*http.Response, error) {
	u := *c.base
	u.Path += path
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	return c.hc.Do(req)
}

// drain reads what is left of a response so the connection can be reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}

// httpError describes a non-envelope error response, such as a proxy's HTML page.
func httpError(status int, body []byte) *APIError {
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	msg := oneLine(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &APIError{Type: errorTypeFor(status), Msg: msg, StatusCode: status}
}

func errorTypeFor(status int) string {
	if status >= 500 {
		return "server_error"
	}
	return "client_error"
}

// oneLine collapses whitespace, including newlines, into single spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func labels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// formatTime renders t as Unix seconds with up to nanosecond precision, as the API expects.
func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.Unix())+float64(t.Nanosecond())/1e9, 'f', -1, 64)
}

// samplePair decodes Prometheus's [<unix seconds>, "<value>"] pairs; values may be "NaN", "+Inf" or "-Inf".
type samplePair struct {
	t time.Time
	v float64
}

func (p *samplePair) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("sample %s: %w", b, err)
	}
	var ts float64
	if err := json.Unmarshal(raw[0], &ts); err != nil {
		return fmt.Errorf("sample time %s: %w", raw[0], err)
	}
	var s string
	if err := json.Unmarshal(raw[1], &s); err != nil {
		return fmt.Errorf("sample value %s: %w", raw[1], err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("sample value %q: %w", s, err)
	}
	p.t = time.UnixMilli(int64(math.Round(ts * 1000))).UTC()
	p.v = v
	return nil
}
