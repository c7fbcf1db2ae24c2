package cmd

import (
	"context"
	"errors"
	"fmt"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/pkg/shared/kube"
	"github.com/aks-mlops/mlplugins/pkg/shared/prom"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

// Factory holds what every command shares: the kubectl flags, the streams, lazily built clients
// (tests preset Clients with fakes), the clock and this process's owner name.
type Factory struct {
	genericiooptions.IOStreams
	ConfigFlags *genericclioptions.ConfigFlags

	// Clients is built on first use from ConfigFlags; tests preset it.
	Clients *kube.Clients
	// Now is the clock; tests pin it.
	Now func() time.Time
	// Owner names this process in the rollout state (user@host (pid N)).
	Owner string
	// AzureCredential is --azure-credential: the Entra credential kind for Azure Monitor ("" for the default chain).
	AzureCredential string
	// NewQuery builds the Prometheus query function for a URL and auth mode; tests replace it.
	NewQuery func(url, auth string) (rollout.QueryFunc, error)
	// NewPodHTTP builds the port-forwarding HTTP client; tests replace it.
	NewPodHTTP func(cfg *rest.Config) (rollout.PodHTTPFunc, error)

	// requests counts the API requests this process sent.
	requests atomic.Int64
}

// NewFactory returns a Factory reading the real kubeconfig.
func NewFactory(streams genericiooptions.IOStreams) *Factory {
	f := &Factory{
		IOStreams:   streams,
		ConfigFlags: newConfigFlags(),
		Now:         time.Now,
		Owner:       rollout.OwnerID(),
		NewPodHTTP:  rollout.PortForwardHTTP,
	}
	f.NewQuery = func(url, auth string) (rollout.QueryFunc, error) { return newPromQuery(url, auth, f.AzureCredential) }
	return f
}

// countingGetter wraps the REST config so that every API request is counted.
type countingGetter struct {
	genericclioptions.RESTClientGetter
	n *atomic.Int64
}

func (g countingGetter) ToRESTConfig() (*rest.Config, error) {
	c, err := g.RESTClientGetter.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	c = rest.CopyConfig(c)
	// client-go's default 5 QPS would delay a step's writes by its token bucket; a rollout sends a
	// handful of requests per step, in bursts.
	if c.QPS == 0 {
		c.QPS, c.Burst = 50, 100
	}
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingRT{rt: rt, n: g.n} })
	return c, nil
}

type countingRT struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// Requests returns how many API requests this process has sent so far.
func (f *Factory) Requests() int64 { return f.requests.Load() }

// clients returns the Kubernetes clients, building them on first use.
func (f *Factory) clients() (*kube.Clients, error) {
	if f.Clients != nil {
		return f.Clients, nil
	}
	c, err := kube.NewClients(countingGetter{RESTClientGetter: f.ConfigFlags, n: &f.requests})
	if err != nil {
		return nil, err
	}
	f.Clients = c
	return c, nil
}

// namespaceAndName completes a command's namespace and deployment argument.
func (f *Factory) namespaceAndName(args []string) (*kube.Clients, string, error) {
	c, err := f.clients()
	if err != nil {
		return nil, "", err
	}
	if len(args) != 1 || args[0] == "" {
		return nil, "", errors.New("exactly one DEPLOYMENT argument is required")
	}
	return c, args[0], nil
}

// target resolves the namespace and the DEPLOYMENT argument a command acts on.
func (f *Factory) target(args []string) (namespace, name string, err error) {
	c, name, err := f.namespaceAndName(args)
	if err != nil {
		return "", "", err
	}
	return c.Namespace, name, nil
}

func newPromQuery(url, auth, credentialKind string) (rollout.QueryFunc, error) {
	var cred azcore.TokenCredential
	if credentialKind != "" {
		c, err := azure.NewCredential(credentialKind)
		if err != nil {
			return nil, fmt.Errorf("prometheus credential: %w", err)
		}
		cred = c
	}
	c, err := prom.NewForURL(url, auth, cred)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, q string) ([]rollout.Sample, error) {
		v, _, err := c.Query(ctx, q, time.Time{})
		if err != nil {
			return nil, err
		}
		out := make([]rollout.Sample, len(v))
		for i, s := range v {
			out[i] = rollout.Sample{Metric: s.Metric, Value: s.Value}
		}
		return out, nil
	}, nil
}

// checker builds the check runner for a rollout's state.
func (f *Factory) checker(st *rollout.State) (*rollout.Checker, error) {
	c, err := f.clients()
	if err != nil {
		return nil, err
	}
	k := &rollout.Checker{}
	for _, ch := range st.Plan.Checks {
		if ch.Prometheus != nil && k.Query == nil {
			if st.PrometheusURL == "" {
				return nil, fmt.Errorf("check %q needs a Prometheus URL (--prometheus-url)", ch.Name)
			}
			if k.Query, err = f.NewQuery(st.PrometheusURL, st.PrometheusAuth); err != nil {
				return nil, err
			}
		}
		if ch.HTTP != nil && k.PodHTTP == nil {
			if k.PodHTTP, err = f.NewPodHTTP(c.Config); err != nil {
				return nil, err
			}
		}
	}
	return k, nil
}

// drive runs the engine on the rollout this process now owns and maps the outcome to an exit code.
func (f *Factory) drive(ctx context.Context, ns, name string, st *rollout.State, timeout time.Duration) (*rollout.RunResult, error) {
	c, err := f.clients()
	if err != nil {
		return nil, err
	}
	k, err := f.checker(st)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, rollout.ErrTimeout)
		defer cancel()
	}
	e := &rollout.Engine{Kube: c.Kube, Namespace: ns, Name: name, Owner: f.Owner, Checker: k, Out: f.ErrOut, Now: f.Now}
	return e.Run(ctx)
}

// outcomeError maps a run's outcome to the exit code table; the message was already printed.
func outcomeError(res *rollout.RunResult) error {
	switch res.Outcome {
	case rollout.OutcomeRolledBack:
		return &cliutil.ExitError{Code: 2}
	case rollout.OutcomeTimedOut:
		return &cliutil.ExitError{Code: 3}
	case rollout.OutcomePaused:
		return &cliutil.ExitError{Code: 4}
	}
	return nil
}

// parseImages reads repeated --image CONTAINER=IMAGE flags.
func parseImages(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, errors.New("at least one --image CONTAINER=IMAGE is required")
	}
	out := map[string]string{}
	for _, f := range flags {
		c, img, ok := strings.Cut(f, "=")
		if !ok || c == "" || img == "" {
			return nil, fmt.Errorf("malformed --image %q (want CONTAINER=IMAGE)", f)
		}
		if _, dup := out[c]; dup {
			return nil, fmt.Errorf("container %q given twice in --image", c)
		}
		out[c] = img
	}
	return out, nil
}

// planFlags are the flags that choose the steps, shared by start and plan.
type planFlags struct {
	PlanFile string
	Steps    string
	Bake     time.Duration
	Surge    bool
}

func (p *planFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.PlanFile, "plan", p.PlanFile, "RolloutPlan file with steps and checks")
	cmd.Flags().StringVar(&p.Steps, "steps", p.Steps, "Comma-separated weights and 'pause' steps, e.g. 10,50,pause,100 (default 10,50,100)")
	cmd.Flags().DurationVar(&p.Bake, "bake", p.Bake, "Bake time after each --steps weight below 100, during which checks repeat")
	cmd.Flags().BoolVar(&p.Surge, "surge", p.Surge, "Keep the stable replicas and add the canary on top, instead of constant capacity")
}

func (p *planFlags) validate() error {
	switch {
	case p.PlanFile != "" && p.Steps != "":
		return errors.New("--plan and --steps are mutually exclusive (put the steps in the plan file)")
	case p.PlanFile != "" && p.Bake != 0:
		return errors.New("--bake applies to --steps; put bake in the plan file's steps")
	case p.Bake < 0:
		return errors.New("--bake must not be negative")
	}
	if p.PlanFile == "" {
		steps := p.Steps
		if steps == "" {
			steps = "10,50,100"
		}
		if _, err := plan.ParseSteps(steps, p.Bake); err != nil {
			return err
		}
	}
	return nil
}

func (p *planFlags) load() (*plan.Plan, error) {
	if p.PlanFile != "" {
		return plan.ParseFile(p.PlanFile)
	}
	steps := p.Steps
	if steps == "" {
		steps = "10,50,100"
	}
	s, err := plan.ParseSteps(steps, p.Bake)
	if err != nil {
		return nil, err
	}
	return &plan.Plan{Steps: s}, nil
}

func (p *planFlags) mode() plan.Mode {
	if p.Surge {
		return plan.Surge
	}
	return plan.ConstantCapacity
}

// accessCheck is one permission a command needs.
type accessCheck struct {
	verb, group, resource, subresource string
}

// checkAccess asks the API server whether the caller (including --as) may do everything in
// checks, so that a missing permission fails before anything is changed.
func (f *Factory) checkAccess(ctx context.Context, ns string, checks []accessCheck) error {
	c, err := f.clients()
	if err != nil {
		return err
	}
	var missing []string
	for _, a := range checks {
		r, err := c.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking permissions: %w", err)
		}
		if !r.Status.Allowed {
			res := a.resource
			if a.subresource != "" {
				res += "/" + a.subresource
			}
			missing = append(missing, a.verb+" "+res)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing permission in namespace %q: cannot %s (see docs/rbac/mlrollout-operator.yaml)", ns, strings.Join(missing, ", "))
	}
	return nil
}

// driveAccess are the permissions needed to drive a rollout.
func driveAccess(st *rollout.State) []accessCheck {
	checks := []accessCheck{
		{"get", "apps", "deployments", ""}, {"update", "apps", "deployments", ""}, {"patch", "apps", "deployments", ""}, {"create", "apps", "deployments", ""},
		{"delete", "apps", "deployments", ""}, {"watch", "apps", "deployments", ""}, {"list", "apps", "deployments", ""},
		{"list", "", "pods", ""}, {"watch", "", "pods", ""}, {"create", "", "events", ""},
	}
	for _, c := range st.Plan.Checks {
		if c.HTTP != nil {
			return append(checks, accessCheck{"create", "", "pods", "portforward"})
		}
	}
	return checks
}
