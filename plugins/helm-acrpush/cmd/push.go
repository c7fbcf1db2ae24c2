package cmd

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/aks-mlops/mlplugins/pkg/shared/azure"
	"github.com/aks-mlops/mlplugins/pkg/shared/printers"
	"github.com/aks-mlops/mlplugins/pkg/shared/version"
	"github.com/aks-mlops/mlplugins/plugins/helm-acrpush/internal/acrpush"
)

// Values of --auth.
const (
	AuthAuto      = "auto"
	AuthAzure     = "azure"
	AuthDocker    = "docker"
	AuthAnonymous = "anonymous"
)

var pushLong = `Push a Helm chart and every container image it uses to Azure Container Registry (or any OCI
registry), signed in through Microsoft Entra ID.

The chart (a directory or a packaged .tgz) is rendered with the given values through Helm's engine;
the images of every pod spec (containers, init and ephemeral containers of Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and Pods), of the artifacthub.io/images
annotation and of --image are copied to REGISTRY/PREFIX/<repository path> with their tag, by
digest. Everything is checked before anything is written, and the chart is pushed last, only when
every image arrived. Images and charts already there with the same digest are skipped; a tag that
points at another digest is an error unless --force. With --referrers, the signatures, SBOMs and
attestations that refer to each image (OCI referrers, through the Referrers API or its tag schema,
and cosign's sha256-<hex>.sig/.att/.sbom tags) travel with it, before its tag is written. With
--lock, the run's tags (images' and chart's) are locked in Azure Container Registry once
everything is there (writeEnabled and deleteEnabled false, as 'az acr repository update' sets
them): a release can no longer be moved or deleted.

REGISTRY is a login server (myacr.azurecr.io) or a bare ACR name (myacr).

Exit status: 0 on success, 1 on any error (nothing half-pushed: never a chart without its images).`

var pushExample = `  # Push a chart directory and its images to myacr.azurecr.io under the "prod" prefix
  %[1]s ./charts/mlapp myacr/prod -f values-prod.yaml

  # Show what would be pushed, as JSON
  %[1]s mlapp-1.2.0.tgz myacr.azurecr.io --dry-run -o json

  # Copy the images' Notation or cosign signatures and SBOMs along with them
  %[1]s ./charts/mlapp myacr/prod --referrers

  # A release: lock the chart's and the images' tags once they are all there
  %[1]s ./charts/mlapp myacr/prod --version 1.4.0 --lock

  # Only amd64 and arm64, and write a values overlay that pins the copies by digest
  %[1]s ./charts/mlapp myacr --platform linux/amd64,linux/arm64 --values-out pinned.yaml`

// PushOptions holds the inputs of 'helm acrpush'.
type PushOptions struct {
	genericiooptions.IOStreams

	// flag values
	Version        string
	ValueFiles     []string
	SetValues      []string
	ChartOnly      bool
	ImagesOnly     bool
	Referrers      bool
	Lock           bool
	Images         []string
	Exclude        string
	Platforms      []string
	Jobs           int
	DryRun         bool
	Force          bool
	Output         string
	ValuesOut      string
	Auth           string
	AzureCred      string // --azure-credential: one Entra credential kind instead of the default chain
	PlainHTTP      bool
	Insecure       bool
	Timeout        time.Duration
	Debug          bool
	RegistryConfig string

	// filled by Complete
	ChartPath   string
	Destination acrpush.Destination
	platforms   []v1.Platform
	exclude     *regexp.Regexp
	helmBin     string
	targetAuth  authn.Authenticator

	// NewCredential builds the Entra credential (tests replace it).
	NewCredential func() (azcore.TokenCredential, error)
	// Transport is the base HTTP transport (tests replace it).
	Transport http.RoundTripper
	// IsTerminal decides whether a progress bar is drawn on ErrOut.
	IsTerminal func(io.Writer) bool
	// Retry tunes request retries (tests shorten it).
	Retry acrpush.RetryPolicy
}

// NewPushOptions returns PushOptions with defaults, reading the environment Helm sets for plugins.
func NewPushOptions(streams genericiooptions.IOStreams) *PushOptions {
	o := &PushOptions{
		IOStreams:      streams,
		Jobs:           4,
		Output:         "table",
		Auth:           AuthAuto,
		Debug:          truthy(os.Getenv("HELM_DEBUG")),
		RegistryConfig: os.Getenv("HELM_REGISTRY_CONFIG"),
		helmBin:        os.Getenv("HELM_BIN"),
		IsTerminal:     printers.IsTerminal,
	}
	o.NewCredential = func() (azcore.TokenCredential, error) { return azure.NewCredential(o.AzureCred) }
	return o
}

func truthy(s string) bool {
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

// AddFlags binds the options to fs.
func (o *PushOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Version, "version", o.Version, "Set the chart version before pushing (like helm package --version)")
	f.StringArrayVarP(&o.ValueFiles, "values", "f", o.ValueFiles, "Values file used to render the chart (can be repeated)")
	f.StringArrayVar(&o.SetValues, "set", o.SetValues, "Set values used to render the chart (key=value, can be repeated)")
	f.BoolVar(&o.ChartOnly, "chart-only", o.ChartOnly, "Push the chart only, no images")
	f.BoolVar(&o.ImagesOnly, "images-only", o.ImagesOnly, "Push the images only, not the chart")
	f.StringArrayVar(&o.Images, "image", o.Images, "Also push this image (can be repeated)")
	f.BoolVar(&o.Referrers, "referrers", o.Referrers, "Also copy what refers to each image (signatures, SBOMs, attestations: OCI referrers and cosign's .sig/.att/.sbom tags)")
	f.BoolVar(&o.Lock, "lock", o.Lock, "Lock the pushed tags in Azure Container Registry once everything is there (no later write or delete; like 'az acr repository update --write-enabled false --delete-enabled false')")
	f.StringVar(&o.Exclude, "exclude", o.Exclude, "Skip images whose source reference matches this regular expression")
	f.StringSliceVar(&o.Platforms, "platform", o.Platforms, "Copy only these platforms of multi-platform images (os/arch[/variant], comma-separated; default all)")
	f.IntVar(&o.Jobs, "jobs", o.Jobs, "Number of blobs over 1 MB transferred in parallel (smaller ones, such as configs, go alongside)")
	f.BoolVar(&o.DryRun, "dry-run", o.DryRun, "Check everything and print the plan without writing anything")
	f.BoolVar(&o.Force, "force", o.Force, "Replace tags that point at a different digest")
	f.StringVarP(&o.Output, "output", "o", o.Output, "Output format: table or json")
	f.StringVar(&o.ValuesOut, "values-out", o.ValuesOut, "Write a values overlay pointing the chart's image fields at the pushed images by digest")
	f.StringVar(&o.Auth, "auth", o.Auth, "Sign-in to REGISTRY: auto (Entra ID for *.azurecr.io, else Docker/Helm credentials), azure, docker or anonymous")
	azure.AddCredentialFlag(f, &o.AzureCred)
	f.BoolVar(&o.PlainHTTP, "plain-http", o.PlainHTTP, "Allow plain-http registries")
	f.BoolVar(&o.Insecure, "insecure-skip-tls-verify", o.Insecure, "Skip TLS certificate verification of registries")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "Give up after this long (0 means no limit)")
	f.BoolVar(&o.Debug, "debug", o.Debug, "Log each step and registry request on stderr (also HELM_DEBUG); secrets are never logged")
	f.StringVar(&o.RegistryConfig, "registry-config", o.RegistryConfig, "Registry credentials file (default $HELM_REGISTRY_CONFIG, then Helm's registry/config.json), read before ~/.docker/config.json")
}

// NewCmdPush returns the push command; it is the plugin's root command.
func NewCmdPush(o *PushOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "acrpush CHART REGISTRY[/PREFIX]",
		Short:   "Push a Helm chart and every image it uses to Azure Container Registry",
		Long:    pushLong,
		Example: fmt.Sprintf(pushExample, "helm acrpush"),
		Args:    cobra.ExactArgs(2),
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
}

// Complete parses the arguments and the flags that need parsing.
func (o *PushOptions) Complete(args []string) error {
	o.ChartPath = args[0]
	d, err := acrpush.ParseDestination(args[1])
	if err != nil {
		return err
	}
	o.Destination = d
	o.platforms = nil
	for _, p := range o.Platforms {
		p = strings.TrimSpace(p)
		if p == "" || p == "all" {
			continue
		}
		pl, err := v1.ParsePlatform(p)
		if err != nil || pl.OS == "" || pl.Architecture == "" {
			return fmt.Errorf("invalid --platform %q (want os/arch[/variant], such as linux/amd64)", p)
		}
		o.platforms = append(o.platforms, *pl)
	}
	if o.Exclude != "" {
		if o.exclude, err = regexp.Compile(o.Exclude); err != nil {
			return fmt.Errorf("invalid --exclude: %w", err)
		}
	}
	if o.RegistryConfig == "" {
		o.RegistryConfig = acrpush.DefaultHelmRegistryConfig()
	}
	o.Auth = strings.ToLower(strings.TrimSpace(o.Auth))
	if o.Auth == AuthAuto {
		o.Auth = AuthDocker
		if acrpush.IsACR(o.Destination.Registry) {
			o.Auth = AuthAzure
		}
	}
	return nil
}

// Validate checks flag combinations; it does no I/O.
func (o *PushOptions) Validate() error {
	if err := printers.ValidateOutput(o.Output, "table", "json"); err != nil {
		return err
	}
	switch o.Auth {
	case AuthAzure, AuthDocker, AuthAnonymous:
	default:
		return fmt.Errorf("unknown --auth %q (want one of: auto, azure, docker, anonymous)", o.Auth)
	}
	if err := azure.ValidateCredentialKind(o.AzureCred); err != nil {
		return err
	}
	if o.ChartOnly && o.ImagesOnly {
		return errors.New("--chart-only and --images-only cannot be used together")
	}
	if o.ChartOnly && (len(o.Images) > 0 || len(o.platforms) > 0 || o.Exclude != "" || o.Referrers) {
		return errors.New("--chart-only pushes no image: --image, --platform, --exclude and --referrers do not apply")
	}
	if o.Jobs < 1 {
		return fmt.Errorf("--jobs must be at least 1, not %d", o.Jobs)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("--timeout must not be negative")
	}
	if o.ValuesOut != "" && o.ChartOnly {
		return errors.New("--values-out needs the images: it cannot be used with --chart-only")
	}
	if o.Version != "" && o.ImagesOnly {
		return errors.New("--version sets the chart's version: it does not apply with --images-only")
	}
	if o.Lock && o.Auth != AuthAzure && !acrpush.IsACR(o.Destination.Registry) {
		return fmt.Errorf("--lock sets tag attributes through Azure Container Registry's API: %s is not an ACR login server (use --auth azure for one behind another name)", o.Destination.Registry)
	}
	if o.AzureCred != "" && o.Auth != AuthAzure {
		return fmt.Errorf("--azure-credential applies to Entra ID sign-in; the registry's sign-in is %q (use --auth azure)", o.Auth)
	}
	return nil
}

// Run pushes and prints the result on Out; talk goes to ErrOut.
func (o *PushOptions) Run(ctx context.Context) (err error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	// Helm's chart libraries report warnings through the standard logger: show them after a
	// success (or with --debug), not as extra lines around a failure.
	var warnings bytes.Buffer
	log.SetFlags(0)
	log.SetOutput(&warnings)
	defer func() {
		log.SetOutput(os.Stderr) // first: no write reaches warnings after this
		if warnings.Len() > 0 && (o.Debug || err == nil) {
			_, _ = o.ErrOut.Write(warnings.Bytes())
		}
	}()

	base := o.Transport
	if base == nil {
		base = acrpush.NewTransport(o.Insecure)
		// The first TLS handshake (Entra ID's, or the registry's) loads and parses the system's
		// root certificates, about 10 ms of CPU; have them ready by then instead of waiting for
		// them after the chart has rendered and the sources resolved.
		go func() { _, _ = x509.SystemCertPool() }()
	}
	opts := []acrpush.Option{
		acrpush.WithValueFiles(o.ValueFiles...),
		acrpush.WithSetValues(o.SetValues...),
		acrpush.WithVersion(o.Version),
		acrpush.WithImages(o.Images...),
		acrpush.WithPlatforms(o.platforms...),
		acrpush.WithJobs(o.Jobs),
		acrpush.WithTransport(base),
		acrpush.WithRetry(o.Retry),
		acrpush.WithUserAgent("helm-acrpush/" + version.Get().Version),
		acrpush.WithKeychain(authn.NewMultiKeychain(acrpush.ConfigKeychain{Path: o.RegistryConfig}, authn.DefaultKeychain)),
	}
	if o.exclude != nil {
		opts = append(opts, acrpush.WithExclude(o.exclude))
	}
	for flag, opt := range map[*bool]acrpush.Option{&o.DryRun: acrpush.DryRun, &o.Force: acrpush.Force, &o.ChartOnly: acrpush.ChartOnly, &o.ImagesOnly: acrpush.ImagesOnly, &o.PlainHTTP: acrpush.PlainHTTP, &o.Referrers: acrpush.Referrers, &o.Lock: acrpush.Lock} {
		if *flag {
			opts = append(opts, opt)
		}
	}
	// The push's request log and the sign-in's step log write from several goroutines: one lock.
	debugOut := &lockedWriter{w: o.ErrOut}
	if o.Debug {
		opts = append(opts, acrpush.WithLog(debugOut))
	}
	if o.IsTerminal != nil && o.IsTerminal(o.ErrOut) && !o.Debug {
		opts = append(opts, acrpush.WithProgress(o.ErrOut))
	}
	switch o.Auth {
	case AuthAnonymous:
		opts = append(opts, acrpush.WithTargetAuth(authn.Anonymous))
	case AuthAzure:
		cred, err := o.NewCredential()
		if err != nil {
			return fmt.Errorf("signing in to %s failed at the %s step: %w", o.Destination.Registry, acrpush.StepEntraToken, err)
		}
		o.targetAuth = &acrpush.EntraAuth{
			Registry:   o.Destination.Registry,
			Credential: cred,
			Scopes:     []string{azure.ScopeACR, azure.ScopeARM},
			PlainHTTP:  o.PlainHTTP,
		}
		opts = append(opts, acrpush.WithTargetAuth(o.targetAuth))
	}
	if ea, ok := o.targetAuth.(*acrpush.EntraAuth); ok && o.Debug {
		ea.Log = debugOut
	}
	if o.Debug {
		fmt.Fprintf(o.ErrOut, "pushing %s to %s (auth %s, registry config %s)\n", o.ChartPath, o.Destination, o.Auth, o.RegistryConfig)
	}

	start := time.Now()
	res, err := acrpush.Push(ctx, o.ChartPath, o.Destination, opts...)
	var ce *acrpush.CopyError
	var le *acrpush.LockError
	if err != nil && !errors.As(err, &ce) && !errors.As(err, &le) {
		return o.oneLine(err)
	}
	if perr := o.print(res); perr != nil {
		return perr
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(o.ErrOut, "warning: %s\n", w)
	}
	if ce != nil {
		return o.oneLine(err)
	}
	// Past here everything is in the registry; a lock that failed (le) is reported last.
	if o.ValuesOut != "" && !o.DryRun {
		if err := o.writeOverlay(res); err != nil {
			return err
		}
	}
	for _, s := range res.Superseded {
		fmt.Fprintf(o.ErrOut, "note: %s from the chart's %s annotation left out: the values give container %s %s\n",
			s.Image, acrpush.ArtifactHubImagesAnnotation, s.Container, strings.Join(s.Rendered, ", "))
	}
	o.summary(res, time.Since(start))
	if le != nil {
		return o.oneLine(err)
	}
	return nil
}

// oneLine keeps a failure on one line of stderr, adding the helm binary to dependency hints.
func (o *PushOptions) oneLine(err error) error {
	msg := acrpush.RedactQueries(strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
	if o.helmBin != "" {
		msg = strings.ReplaceAll(msg, "run 'helm dependency build'", "run '"+o.helmBin+" dependency build "+o.ChartPath+"'")
	}
	return errors.New(msg)
}

func (o *PushOptions) print(res *acrpush.Result) error {
	if o.Output == "json" {
		return printers.PrintJSON(o.Out, res)
	}
	tw := printers.NewTable(o.Out)
	fmt.Fprintln(tw, "ARTIFACT\tSOURCE\tTARGET\tDIGEST\tACTION")
	for _, i := range res.Images {
		fmt.Fprintf(tw, "image\t%s\t%s\t%s\t%s\n", i.Source, i.Target, i.Digest, withLock(i.Action, i.Lock))
		for _, r := range i.Referrers {
			fmt.Fprintf(tw, "referrer\t%s\t%s\t%s\t%s\n", r.Source, r.Target, r.Digest, r.Action)
		}
	}
	if c := res.Chart; c != nil {
		fmt.Fprintf(tw, "chart\t%s\t%s\t%s\t%s\n", c.Source, c.Reference, c.Digest, withLock(c.Action, c.Lock))
	}
	return tw.Flush()
}

// withLock adds the lock state to an artifact's action in the table ("pushed, locked").
func withLock(action, lock string) string {
	switch lock {
	case "":
		return action
	case acrpush.LockFailed:
		return action + ", lock failed"
	}
	return action + ", " + lock
}

func (o *PushOptions) writeOverlay(res *acrpush.Result) error {
	data, err := yaml.Marshal(res.Overlay)
	if err != nil {
		return err
	}
	header := "# Values overlay written by helm acrpush: image fields point at " + res.Registry + " by digest.\n"
	if len(res.Unmapped) > 0 {
		header += "# No values field found for: " + strings.Join(res.Unmapped, ", ") + "\n"
	}
	if err := os.WriteFile(o.ValuesOut, append([]byte(header), data...), 0o644); err != nil {
		return fmt.Errorf("writing --values-out: %w", err)
	}
	if len(res.Unmapped) > 0 {
		fmt.Fprintf(o.ErrOut, "warning: --values-out has no field for %s (set through the artifacthub.io/images annotation or --image, or not a values field)\n", strings.Join(res.Unmapped, ", "))
	}
	return nil
}

func (o *PushOptions) summary(res *acrpush.Result, took time.Duration) {
	count, refs, locks := map[string]int{}, map[string]int{}, map[string]int{}
	seen := map[string]bool{} // two tags of one image share its referrers
	for _, i := range res.Images {
		count[i.Action]++
		locks[i.Lock]++
		for _, r := range i.Referrers {
			if !seen[r.Target] {
				seen[r.Target] = true
				refs[r.Action]++
			}
		}
	}
	chart := ""
	if res.Chart != nil {
		chart = ", chart " + res.Chart.Action
		locks[res.Chart.Lock]++
	}
	lock := ""
	if o.Lock {
		if res.DryRun {
			lock = fmt.Sprintf(", %d tags would be locked, %d already locked", locks[acrpush.LockWould], locks[acrpush.LockAlready])
		} else {
			lock = fmt.Sprintf(", %d tags locked, %d already locked", locks[acrpush.LockLocked], locks[acrpush.LockAlready])
		}
	}
	referrers := ""
	if o.Referrers {
		if res.DryRun {
			referrers = fmt.Sprintf(", %d referrers would be pushed, %d skipped", refs[acrpush.ActionWouldPush], refs[acrpush.ActionSkipped])
		} else {
			referrers = fmt.Sprintf(", %d referrers pushed, %d skipped", refs[acrpush.ActionPushed], refs[acrpush.ActionSkipped])
		}
	}
	if res.DryRun {
		fmt.Fprintf(o.ErrOut, "dry run: %d images would be pushed, %d skipped%s%s%s; nothing was written\n", count[acrpush.ActionWouldPush], count[acrpush.ActionSkipped], referrers, chart, lock)
		return
	}
	fmt.Fprintf(o.ErrOut, "%d images pushed, %d skipped%s%s%s; %d blobs uploaded (%d bytes), %d mounted, in %s\n",
		count[acrpush.ActionPushed], count[acrpush.ActionSkipped], referrers, chart, lock, res.Transfer.BlobUploads, res.Transfer.BytesPushed, res.Transfer.BlobMounts, took.Round(time.Millisecond))
}

// lockedWriter serializes writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
