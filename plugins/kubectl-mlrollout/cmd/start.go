package cmd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/pkg/shared/prom"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/plan"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/internal/rollout"
)

var startExample = `  # Canary the model container to v2 with the default steps 10,50,100
  kubectl mlrollout start mlapp --image model=registry.example.com/mlapp:v2

  # Bake each step for 2 minutes, pause before going to 100%
  kubectl mlrollout start mlapp --image model=mlapp:v2 --steps 10,50,pause,100 --bake 2m

  # Steps and checks from a plan file, with an Azure Monitor workspace
  kubectl mlrollout start mlapp --image model=mlapp:v2 --plan rollout.yaml \
    --prometheus-url https://myws.eastus.prometheus.monitor.azure.com

  # Only validate (the server validates the canary Deployment too)
  kubectl mlrollout start mlapp --image model=mlapp:v2 --dry-run=server`

// StartOptions holds the inputs of 'kubectl mlrollout start'.
type StartOptions struct {
	f *Factory
	planFlags

	ImageFlags     []string
	OnFailure      string
	PrometheusURL  string
	PrometheusAuth string
	Timeout        time.Duration
	Output         string
	DryRun         string
	Takeover       bool

	// filled by Complete
	Namespace string
	Name      string
	Images    map[string]string
}

// NewStartOptions returns StartOptions with defaults.
func NewStartOptions(f *Factory) *StartOptions {
	return &StartOptions{f: f, OnFailure: "rollback", Timeout: 30 * time.Minute, DryRun: "none"}
}

// NewCmdStart returns the 'start' subcommand.
func NewCmdStart(f *Factory) *cobra.Command {
	o := NewStartOptions(f)
	cmd := &cobra.Command{
		Use:               "start DEPLOYMENT --image CONTAINER=IMAGE [--image ...]",
		Short:             "Start a canary rollout and drive it to the end",
		Long:              "Start a canary rollout of DEPLOYMENT and drive it until it is promoted, rolled back, paused at a manual step, or timed out.\n\n" + ExitCodes,
		Example:           startExample,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringArrayVar(&o.ImageFlags, "image", o.ImageFlags, "New image of a container, CONTAINER=IMAGE (repeatable)")
	o.planFlags.add(cmd)
	cmd.Flags().StringVar(&o.OnFailure, "on-failure", o.OnFailure, "What a failed check does: rollback or pause")
	cmd.Flags().StringVar(&o.PrometheusURL, "prometheus-url", o.PrometheusURL, "Prometheus (or Azure Monitor workspace) query URL for prometheus checks")
	cmd.Flags().StringVar(&o.PrometheusAuth, "prometheus-auth", o.PrometheusAuth, "Prometheus auth: none or azure (default: azure for *.prometheus.monitor.azure.com, else none)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "Give up driving after this long (exit 3, the rollout stays resumable); 0 waits forever")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format of the final result: json")
	cmd.Flags().StringVar(&o.DryRun, "dry-run", o.DryRun, "Only validate: client, or server (the API server validates the canary Deployment)")
	cmd.Flags().Lookup("dry-run").NoOptDefVal = "client"
	cmd.Flags().BoolVar(&o.Takeover, "takeover", o.Takeover, "Take over a rollout in progress whose owner's heartbeat is stale")
	return cmd
}

// Complete resolves the namespace, the deployment name and the images.
func (o *StartOptions) Complete(args []string) error {
	var err error
	o.Namespace, o.Name, err = o.f.target(args)
	return err
}

// Validate checks the flags without touching the network.
func (o *StartOptions) Validate() error {
	var err error
	if o.Images, err = parseImages(o.ImageFlags); err != nil {
		return err
	}
	if err := o.planFlags.validate(); err != nil {
		return err
	}
	switch {
	case o.OnFailure != "rollback" && o.OnFailure != "pause":
		return fmt.Errorf("unknown --on-failure %q (want rollback or pause)", o.OnFailure)
	case o.PrometheusAuth != "" && o.PrometheusAuth != "none" && o.PrometheusAuth != "azure":
		return fmt.Errorf("unknown --prometheus-auth %q (want none or azure)", o.PrometheusAuth)
	case o.PrometheusAuth != "" && o.PrometheusURL == "":
		return errors.New("--prometheus-auth needs --prometheus-url")
	case o.f.AzureCredential != "" && (o.PrometheusURL == "" || prom.ResolveAuth(o.PrometheusURL, o.PrometheusAuth) != prom.AuthAzure):
		return fmt.Errorf("--%s is for Prometheus checks against Azure Monitor: use it with an Azure Monitor --prometheus-url or --prometheus-auth azure", azure.CredentialFlag)
	case o.DryRun != "none" && o.DryRun != "client" && o.DryRun != "server":
		return fmt.Errorf("unknown --dry-run %q (want client or server)", o.DryRun)
	case o.Timeout < 0:
		return errors.New("--timeout must not be negative")
	case urlHasPassword(o.PrometheusURL):
		// The URL is recorded in the rollout state on the Deployment and shown in errors.
		return errors.New("--prometheus-url must not contain a password: it is recorded on the Deployment (use --prometheus-auth azure, or a URL without credentials)")
	}
	return printers.ValidateOutput(o.Output, "json")
}

// prepare validates everything against the cluster and Prometheus before anything is changed.
func urlHasPassword(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return false
	}
	_, set := u.User.Password()
	return set
}

func (o *StartOptions) prepare(ctx context.Context) (*appsv1.Deployment, rollout.StartSpec, error) {
	spec := rollout.StartSpec{Images: o.Images, OnFailure: o.OnFailure, PrometheusURL: o.PrometheusURL, PrometheusAuth: o.PrometheusAuth, Takeover: o.Takeover}
	p, err := o.planFlags.load()
	if err != nil {
		return nil, spec, err
	}
	spec.Plan, spec.Mode = p, o.planFlags.mode()
	c, err := o.f.clients()
	if err != nil {
		return nil, spec, err
	}
	d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return nil, spec, rollout.NotFoundHint(err, o.Namespace, o.Name)
	}
	if err := rollout.ValidateImages(d, o.Images); err != nil {
		return nil, spec, err
	}
	st, err := rollout.ReadState(d)
	if err != nil {
		return nil, spec, err
	}
	now := o.f.Now()
	if st != nil && (!o.Takeover || !st.Stale(now)) {
		return nil, spec, rollout.InProgressError(o.Name, st, now)
	}
	if st == nil {
		if reflect.DeepEqual(prevImages(d, o.Images), o.Images) {
			return nil, spec, fmt.Errorf("deployment %q already runs %s", o.Name, rollout.ImagesString(o.Images))
		}
		if d.Spec.Paused {
			return nil, spec, fmt.Errorf("deployment %q is paused (spec.paused); resume it with `kubectl rollout resume` first", o.Name)
		}
		if d.Spec.Replicas != nil && *d.Spec.Replicas == 0 {
			return nil, spec, fmt.Errorf("deployment %q is scaled to 0 replicas; there is no traffic to canary", o.Name)
		}
		_, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, rollout.CanaryName(o.Name), metav1.GetOptions{})
		if err == nil {
			return nil, spec, fmt.Errorf("deployment %q already exists but no rollout is in progress; delete it first", rollout.CanaryName(o.Name))
		}
		if !apierrors.IsNotFound(err) {
			return nil, spec, fmt.Errorf("getting deployment %q: %w", rollout.CanaryName(o.Name), err)
		}
	}
	hpas, err := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, spec, fmt.Errorf("listing horizontalpodautoscalers: %w", err)
	}
	if rollout.HPAFor(hpas.Items, o.Name) != nil {
		spec.Mode = plan.HPA
	}
	probe := rollout.NewState(d, spec, o.f.Owner, now)
	if err := o.f.checkAccess(ctx, o.Namespace, driveAccess(probe)); err != nil {
		return nil, spec, err
	}
	if err := o.probePrometheus(ctx, p); err != nil {
		return nil, spec, err
	}
	return d, spec, nil
}

func prevImages(d *appsv1.Deployment, images map[string]string) map[string]string {
	have := rollout.Images(&d.Spec.Template)
	out := map[string]string{}
	for c := range images {
		out[c] = have[c]
	}
	return out
}

// probePrometheus runs every Prometheus query once, so that an unreachable server or a query the
// server rejects fails before the rollout starts. Empty results are fine here: no canary pod exists yet.
func (o *StartOptions) probePrometheus(ctx context.Context, p *plan.Plan) error {
	var query rollout.QueryFunc
	for _, c := range p.Checks {
		if c.Prometheus == nil {
			continue
		}
		if o.PrometheusURL == "" {
			return fmt.Errorf("check %q is a prometheus check: --prometheus-url is required", c.Name)
		}
		if query == nil {
			var err error
			if query, err = o.f.NewQuery(o.PrometheusURL, o.PrometheusAuth); err != nil {
				return err
			}
		}
		vars := plan.Vars{Namespace: o.Namespace, Deployment: o.Name, CanaryDeployment: rollout.CanaryName(o.Name),
			CanaryPods: plan.PodRegex(nil), StablePods: plan.PodRegex(nil)}
		for _, q := range []string{c.Prometheus.Query, c.Prometheus.BaselineQuery} {
			if q == "" {
				continue
			}
			rendered, err := plan.Render(q, vars)
			if err != nil {
				return fmt.Errorf("check %q: %w", c.Name, err)
			}
			qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err = query(qctx, rendered)
			cancel()
			if err != nil {
				return fmt.Errorf("check %q: prometheus at %s: %w", c.Name, o.PrometheusURL, err)
			}
		}
	}
	return nil
}

// startResult is the -o json shape of start, resume, promote and abort.
type startResult struct {
	*rollout.RunResult
	Namespace          string  `json:"namespace"`
	Deployment         string  `json:"deployment"`
	APIRequests        int64   `json:"apiRequests"`
	APIRequestsPerStep float64 `json:"apiRequestsPerStep,omitempty"`
}

// Run validates against the cluster, then claims the rollout and drives it.
func (o *StartOptions) Run(ctx context.Context) error {
	d, spec, err := o.prepare(ctx)
	if err != nil {
		return err
	}
	if o.DryRun != "none" {
		return o.dryRun(ctx, d, spec)
	}
	c, _ := o.f.clients()
	st, err := rollout.Claim(ctx, c.Kube, o.Namespace, o.Name, o.f.Owner, spec, o.f.Now())
	if err != nil {
		return err
	}
	if st.Step == 0 && st.ReadyAt == nil {
		_ = rollout.Emit(ctx, c.Kube, d, "Normal", "CanaryStarted",
			fmt.Sprintf("rollout %s started by %s: %s, %d steps", st.ID, o.f.Owner, rollout.ImagesString(st.Images), len(st.Plan.Steps)), o.f.Now())
	}
	fmt.Fprintf(o.f.ErrOut, "rollout %s of %s/%s: %s -> %s (%s)\n", st.ID, o.Namespace, o.Name,
		rollout.ImagesString(st.PreviousImages), rollout.ImagesString(st.Images), st.Mode)
	renderTargets(o.f.ErrOut, plan.Targets(&st.Plan, st.Replicas, st.Mode))
	before := o.f.Requests()
	res, err := o.f.drive(ctx, o.Namespace, o.Name, st, o.Timeout)
	if err != nil {
		return err
	}
	return finish(o.f, o.Output, o.Namespace, o.Name, res, o.f.Requests()-before)
}

// finish prints a run's result (JSON on stdout with -o json) and maps it to the exit code.
func finish(f *Factory, output, ns, name string, res *rollout.RunResult, requests int64) error {
	r := startResult{RunResult: res, Namespace: ns, Deployment: name, APIRequests: requests}
	if res.StepsRun > 0 {
		r.APIRequestsPerStep = float64(int(float64(requests)*10/float64(res.StepsRun))) / 10
		fmt.Fprintf(f.ErrOut, "%d API requests for %d steps (%.1f per step)\n", requests, res.StepsRun, r.APIRequestsPerStep)
	}
	if output == "json" {
		if err := printers.PrintJSON(f.Out, r); err != nil {
			return err
		}
	}
	return outcomeError(res)
}

// dryRun prints the canary Deployment that would be created; server mode has it validated by the API server.
func (o *StartOptions) dryRun(ctx context.Context, d *appsv1.Deployment, spec rollout.StartSpec) error {
	st := rollout.NewState(d, spec, o.f.Owner, o.f.Now())
	targets := plan.Targets(spec.Plan, st.Replicas, spec.Mode)
	canary := rollout.NewCanary(d, spec.Images, targets[0].Target.Canary, st.ID)
	if o.DryRun == "server" {
		c, _ := o.f.clients()
		created, err := c.Kube.AppsV1().Deployments(o.Namespace).Create(ctx, canary, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: rollout.FieldManager})
		if err != nil {
			return fmt.Errorf("server dry run of canary deployment %q: %w", canary.Name, err)
		}
		canary = created
	}
	canary.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	fmt.Fprintf(o.f.ErrOut, "dry run (%s): nothing changed; rollout of %s/%s to %s would run:\n", o.DryRun, o.Namespace, o.Name, rollout.ImagesString(spec.Images))
	renderTargets(o.f.ErrOut, targets)
	if o.Output == "json" {
		return printers.PrintJSON(o.f.Out, canary)
	}
	return printers.PrintYAML(o.f.Out, canary)
}
