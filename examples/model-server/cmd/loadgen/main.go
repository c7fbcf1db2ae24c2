// Command loadgen sends a steady stream of predict requests to one or more model-server URLs, round
// robin, so that their metrics have traffic to show (make demo, benchmarks). It prints a JSON summary on
// stdout: requests sent, answers by status code, and latency percentiles.
//
//	go run ./examples/model-server/cmd/loadgen -url http://127.0.0.1:18081 -url http://127.0.0.1:18082 -rps 20 -duration 1m
//
// With -duration 0 it runs until interrupted (SIGINT or SIGTERM), then prints the summary.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, strings.TrimSuffix(s, "/")); return nil }

// Options say where and how fast to send.
type Options struct {
	URLs     []string
	Model    string
	Body     string
	RPS      float64
	Duration time.Duration
	Timeout  time.Duration
}

// Summary is what loadgen prints.
type Summary struct {
	Requests  int            `json:"requests"`
	ByCode    map[string]int `json:"byCode"` // "200", "500", or "error" for transport failures
	P50Millis float64        `json:"p50Millis"`
	P95Millis float64        `json:"p95Millis"`
	Seconds   float64        `json:"seconds"`
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var o Options
	var targets urls
	fs.Var(&targets, "url", "Base URL of a model server (repeatable; requests go round robin)")
	fs.StringVar(&o.Model, "model", "mlapp", "Model name in the predict path")
	fs.StringVar(&o.Body, "body", `{"instances": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5], [5.7, 2.8, 4.1, 1.3]]}`, "Predict request body")
	fs.Float64Var(&o.RPS, "rps", 10, "Requests per second, over all URLs")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "How long to send (0 until interrupted)")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "Timeout of each request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.URLs = targets
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case len(o.URLs) == 0:
		return errors.New("no -url given")
	case o.RPS <= 0 || math.IsInf(o.RPS, 0) || math.IsNaN(o.RPS):
		return fmt.Errorf("-rps must be positive, got %v", o.RPS)
	}
	s := Generate(ctx, o)
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// Generate sends requests at o.RPS until o.Duration passes or ctx ends, and summarises the answers.
func Generate(ctx context.Context, o Options) Summary {
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	client := &http.Client{Timeout: o.Timeout}
	var (
		mu        sync.Mutex
		wg        sync.WaitGroup
		latencies []float64
		s         = Summary{ByCode: map[string]int{}}
	)
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.RPS))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			s.Seconds = time.Since(start).Seconds()
			slices.Sort(latencies)
			s.P50Millis, s.P95Millis = percentile(latencies, 0.5), percentile(latencies, 0.95)
			return s
		case <-tick.C:
		}
		url := o.URLs[i%len(o.URLs)] + "/v1/models/" + o.Model + ":predict"
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			code := "error"
			// Not tied to ctx: a request in flight when the run ends still completes and is counted.
			resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(o.Body)))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				code = strconv.Itoa(resp.StatusCode)
			}
			ms := float64(time.Since(t0).Microseconds()) / 1000
			mu.Lock()
			defer mu.Unlock()
			s.Requests++
			s.ByCode[code]++
			latencies = append(latencies, ms)
		}()
	}
}

// percentile of sorted values (nearest rank); 0 for none.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}
