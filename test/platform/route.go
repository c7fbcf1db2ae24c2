package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// routeReadyLine is printed on stderr once the first pod list succeeded; the e2e framework waits for it.
const routeReadyLine = "route ready"

type forward struct {
	Ports  []int32 `json:"ports,omitempty"`
	Target struct {
		Address string `json:"address"`
		Port    int32  `json:"port"`
	} `json:"target"`
}

type portForward struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Forwards []forward `json:"forwards"`
	} `json:"spec"`
}

type routeOptions struct {
	dir       string
	namespace string
	selector  string
	podPort   int
	target    string
	scrape    bool
	image     string

	imageRE    *regexp.Regexp
	targetHost string
	targetPort int
}

func runRoute(ctx context.Context, args []string, _, stderr io.Writer) error {
	o := &routeOptions{}
	fs := newFlagSet("route", stderr)
	fs.StringVar(&o.dir, "dir", "", "state directory (default $PLATFORM_DIR or <repo>/.platform)")
	fs.StringVar(&o.namespace, "n", "", "namespace of the pods")
	fs.StringVar(&o.selector, "l", "", "label selector of the pods")
	fs.IntVar(&o.podPort, "port", 0, "pod port that kubectl port-forward targets")
	fs.StringVar(&o.target, "target", "", "local address (127.0.0.1:PORT) that answers for the pods")
	fs.BoolVar(&o.scrape, "scrape", false, "also add each pod as a Prometheus target scraping TARGET/metrics")
	fs.StringVar(&o.image, "image", "", "only pods with a container image matching this regular expression (a pod answers as the version it runs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	dir, err := resolveDir(o.dir)
	if err != nil {
		return err
	}
	st, err := loadState(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errNotUp
		}
		return err
	}
	kc, err := newKubeClient(st.APIServer, st.Token, st.CAFile)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "run", fmt.Sprintf("route-%d.pid", os.Getpid()))
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer func() { _ = os.Remove(pidFile) }()
	r := &router{o: o, kc: kc, stderr: stderr, routed: map[string]podInfo{},
		sdFile: filepath.Join(dir, "prometheus", "targets", fmt.Sprintf("route-%s-%d.json", o.namespace, os.Getpid()))}
	return r.run(ctx)
}

func (o *routeOptions) validate() error {
	if o.namespace == "" || o.selector == "" {
		return errors.New("route needs -n NAMESPACE and -l SELECTOR")
	}
	if o.podPort < 1 || o.podPort > 65535 {
		return fmt.Errorf("--port %d: want a port from 1 to 65535", o.podPort)
	}
	host, port, err := net.SplitHostPort(o.target)
	if err != nil {
		return fmt.Errorf("--target %q: want HOST:PORT: %w", o.target, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("--target %q: bad port", o.target)
	}
	o.targetHost, o.targetPort = host, p
	if o.image != "" {
		re, err := regexp.Compile(o.image)
		if err != nil {
			return fmt.Errorf("--image %q: %w", o.image, err)
		}
		o.imageRE = re
	}
	return nil
}

type podInfo struct {
	labels map[string]string
}

type router struct {
	o      *routeOptions
	kc     *kubeClient
	stderr io.Writer
	routed map[string]podInfo
	sdFile string
	sdLast string
}

func (r *router) run(ctx context.Context) error {
	defer r.cleanup()
	ready := false
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	// A watch wakes the loop as soon as a pod appears, so its forward exists before kwok marks it Ready
	// (a canary check may port-forward to a pod the moment it is Ready); the ticker is the fallback.
	kick := make(chan struct{}, 1)
	go r.watch(ctx, kick)
	for {
		listed, err := r.sync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(r.stderr, "route: %v\n", err)
		}
		if listed && !ready {
			ready = true
			fmt.Fprintf(r.stderr, "%s: pods in %s matching %q, port %d -> %s\n", routeReadyLine, r.o.namespace, r.o.selector, r.o.podPort, r.o.target)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-kick:
		}
	}
}

// watch streams pod events of the route's namespace and selector and signals kick on each one.
func (r *router) watch(ctx context.Context, kick chan<- struct{}) {
	path := "/api/v1/namespaces/" + url.PathEscape(r.o.namespace) + "/pods?watch=true&timeoutSeconds=25&labelSelector=" + url.QueryEscape(r.o.selector)
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.kc.base+path, nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+r.kc.token)
		resp, err := r.kc.hc.Do(req)
		if err == nil {
			dec := json.NewDecoder(resp.Body)
			for {
				var ev struct {
					Type string `json:"type"`
				}
				if dec.Decode(&ev) != nil {
					break
				}
				select {
				case kick <- struct{}{}:
				default:
				}
			}
			_ = resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sync routes the pods that match now and unroutes those that went away. listed reports whether the pod
// list succeeded (the route is then watching, even if some forwards failed and will be retried).
func (r *router) sync(ctx context.Context) (listed bool, err error) {
	var pl podList
	path := "/api/v1/namespaces/" + url.PathEscape(r.o.namespace) + "/pods?labelSelector=" + url.QueryEscape(r.o.selector)
	if err := r.kc.do(ctx, http.MethodGet, path, "", nil, &pl); err != nil {
		return false, err
	}
	seen := map[string]bool{}
	var errs []error
	for _, p := range pl.Items {
		if r.o.imageRE != nil && !anyImageMatches(r.o.imageRE, p.Spec.Containers) {
			continue
		}
		seen[p.Metadata.Name] = true
		if _, ok := r.routed[p.Metadata.Name]; ok {
			continue
		}
		if err := r.addForward(ctx, p.Metadata.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		r.routed[p.Metadata.Name] = podInfo{labels: p.Metadata.Labels}
		fmt.Fprintf(r.stderr, "route: %s/%s:%d -> %s\n", r.o.namespace, p.Metadata.Name, r.o.podPort, r.o.target)
	}
	for name := range r.routed {
		if seen[name] {
			continue
		}
		if err := r.removeForward(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.routed, name)
		fmt.Fprintf(r.stderr, "route: %s/%s gone\n", r.o.namespace, name)
	}
	if r.o.scrape {
		if err := r.writeTargets(); err != nil {
			errs = append(errs, err)
		}
	}
	return true, errors.Join(errs...)
}

func anyImageMatches(re *regexp.Regexp, containers []podContainer) bool {
	for _, c := range containers {
		if re.MatchString(c.Image) {
			return true
		}
	}
	return false
}

func (r *router) pfPath(name string) string {
	p := "/apis/kwok.x-k8s.io/v1alpha1/namespaces/" + url.PathEscape(r.o.namespace) + "/portforwards"
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// addForward creates the pod's PortForward, or adds this route's port to an existing one (another route
// may forward a different port of the same pod).
func (r *router) addForward(ctx context.Context, pod string) error {
	f := forward{Ports: []int32{int32(r.o.podPort)}}
	f.Target.Address, f.Target.Port = r.o.targetHost, int32(r.o.targetPort)
	for range 5 {
		var pf portForward
		err := r.kc.do(ctx, http.MethodGet, r.pfPath(pod), "", nil, &pf)
		if isNotFound(err) {
			pf = portForward{APIVersion: "kwok.x-k8s.io/v1alpha1", Kind: "PortForward", Metadata: objectMeta{Name: pod, Namespace: r.o.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "mlplugins-platform-route"}}}
			pf.Spec.Forwards = []forward{f}
			err = r.kc.do(ctx, http.MethodPost, r.pfPath(""), "", pf, nil)
		} else if err == nil {
			pf.Spec.Forwards = slices.DeleteFunc(pf.Spec.Forwards, func(x forward) bool { return slices.Contains(x.Ports, int32(r.o.podPort)) })
			pf.Spec.Forwards = append(pf.Spec.Forwards, f)
			err = r.kc.do(ctx, http.MethodPut, r.pfPath(pod), "", pf, nil)
		}
		if se, ok := err.(*statusError); ok && se.Code == http.StatusConflict {
			continue
		}
		if err != nil {
			return fmt.Errorf("route %s/%s: %w", r.o.namespace, pod, err)
		}
		return nil
	}
	return fmt.Errorf("route %s/%s: conflicting updates", r.o.namespace, pod)
}

// removeForward drops this route's port from the pod's PortForward, deleting the object when it is empty.
func (r *router) removeForward(ctx context.Context, pod string) error {
	for range 5 {
		var pf portForward
		err := r.kc.do(ctx, http.MethodGet, r.pfPath(pod), "", nil, &pf)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		pf.Spec.Forwards = slices.DeleteFunc(pf.Spec.Forwards, func(x forward) bool {
			return slices.Contains(x.Ports, int32(r.o.podPort)) && x.Target.Port == int32(r.o.targetPort) && x.Target.Address == r.o.targetHost
		})
		if len(pf.Spec.Forwards) == 0 {
			err = r.kc.do(ctx, http.MethodDelete, r.pfPath(pod), "", nil, nil)
			if isNotFound(err) {
				return nil
			}
		} else {
			err = r.kc.do(ctx, http.MethodPut, r.pfPath(pod), "", pf, nil)
		}
		if se, ok := err.(*statusError); ok && se.Code == http.StatusConflict {
			continue
		}
		return err
	}
	return fmt.Errorf("unroute %s/%s: conflicting updates", r.o.namespace, pod)
}

// writeTargets writes the Prometheus file_sd file: one target per routed pod, all scraping the route's target.
func (r *router) writeTargets() error {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	names := make([]string, 0, len(r.routed))
	for n := range r.routed {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		labels := map[string]string{"namespace": r.o.namespace, "pod": n}
		for k, v := range r.routed[n].labels {
			switch k {
			case "app.kubernetes.io/name", "app.kubernetes.io/version", "app", "track", "version":
				labels[promLabel(k)] = v
			}
		}
		groups = append(groups, group{Targets: []string{r.o.target}, Labels: labels})
	}
	b, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return err
	}
	if string(b) == r.sdLast {
		return nil
	}
	if err := writeFileAtomic(r.sdFile, b, 0o644); err != nil {
		return err
	}
	r.sdLast = string(b)
	return nil
}

// promLabel maps a Kubernetes label key to a Prometheus label name (app.kubernetes.io/name -> app_kubernetes_io_name).
func promLabel(k string) string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			return c
		}
		return '_'
	}, k)
}

func (r *router) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name := range r.routed {
		if err := r.removeForward(ctx, name); err != nil {
			fmt.Fprintf(r.stderr, "route: %v\n", err)
		}
	}
	if r.o.scrape {
		_ = os.Remove(r.sdFile)
	}
}
