// Package sources reads what the health rules need from Kubernetes, a Prometheus-compatible API
// and Log Analytics. Each source reports its own status, so a failing one never hides the others.
package sources

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/internal/health"
)

// ErrNamespaceNotFound is returned when -n names a namespace that does not exist.
var ErrNamespaceNotFound = errors.New("namespace not found")

// Counter counts the HTTP requests made through a transport it wraps.
type Counter struct{ n atomic.Int64 }

// Wrap returns rt with counting; use it as rest.Config.WrapTransport.
func (c *Counter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		c.n.Add(1)
		return rt.RoundTrip(r)
	})
}

// WrapConfig adds counting to a REST config (for genericclioptions.ConfigFlags.WrapConfigFn).
func (c *Counter) WrapConfig(cfg *rest.Config) *rest.Config {
	cfg.Wrap(c.Wrap)
	return cfg
}

// Count returns the number of requests so far.
func (c *Counter) Count() int { return int(c.n.Load()) }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Kubernetes lists the kinds the rules read: one LIST per kind, all in parallel, so the number of
// requests does not depend on the number of pods.
type Kubernetes struct {
	Client kubernetes.Interface
	// Counter, when set, is read to report the requests made by one Collect.
	Counter *Counter
}

// Collect lists everything in namespace ns ("" for all namespaces). When checkNamespace is set, the
// namespace is read too, and a missing one is ErrNamespaceNotFound. The returned error is only for
// that bad input; API failures are reported in the Source.
func (s *Kubernetes) Collect(ctx context.Context, ns string, checkNamespace bool) (health.Kube, health.Source, error) {
	start := 0
	if s.Counter != nil {
		start = s.Counter.Count()
	}
	c := s.Client
	var k health.Kube
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed, skipped []string
	var nsMissing bool
	do := func(name string, required bool, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := fn()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
			case !required && (apierrors.IsForbidden(err) || apierrors.IsNotFound(err)):
				skipped = append(skipped, name+": "+reasonOf(err))
			default:
				failed = append(failed, fmt.Sprintf("listing %s: %v", name, err))
			}
		}()
	}
	opts := metav1.ListOptions{}
	do("deployments", true, func() error {
		l, err := c.AppsV1().Deployments(ns).List(ctx, opts)
		if err == nil {
			k.Deployments = l.Items
		}
		return err
	})
	do("replicasets", true, func() error {
		l, err := c.AppsV1().ReplicaSets(ns).List(ctx, opts)
		if err == nil {
			k.ReplicaSets = l.Items
		}
		return err
	})
	do("pods", true, func() error {
		l, err := c.CoreV1().Pods(ns).List(ctx, opts)
		if err == nil {
			k.Pods = l.Items
		}
		return err
	})
	do("horizontalpodautoscalers", false, func() error {
		l, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, opts)
		if err == nil {
			k.HPAs, k.HPAsRead = l.Items, true
		}
		return err
	})
	do("poddisruptionbudgets", false, func() error {
		l, err := c.PolicyV1().PodDisruptionBudgets(ns).List(ctx, opts)
		if err == nil {
			k.PDBs, k.PDBsRead = l.Items, true
		}
		return err
	})
	do("persistentvolumeclaims", false, func() error {
		l, err := c.CoreV1().PersistentVolumeClaims(ns).List(ctx, opts)
		if err == nil {
			k.PVCs, k.PVCsRead = l.Items, true
		}
		return err
	})
	do("events", false, func() error {
		l, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
		if err == nil {
			k.Events, k.EventsRead = l.Items, true
		}
		return err
	})
	do("nodes", false, func() error {
		l, err := c.CoreV1().Nodes().List(ctx, opts)
		if err == nil {
			k.Nodes, k.NodesRead = l.Items, true
		}
		return err
	})
	if checkNamespace && ns != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				mu.Lock()
				nsMissing = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	src := health.Source{Name: "kubernetes", Status: health.SourceOK}
	if s.Counter != nil {
		src.Requests = s.Counter.Count() - start
	}
	sort.Strings(failed)
	sort.Strings(skipped)
	if nsMissing {
		return k, src, fmt.Errorf("%w: %q", ErrNamespaceNotFound, ns)
	}
	if len(failed) > 0 {
		src.Status = health.SourceError
		src.Error = strings.Join(failed, "; ")
	}
	detail := fmt.Sprintf("%d deployments, %d pods", len(k.Deployments), len(k.Pods))
	if len(skipped) > 0 {
		detail += "; skipped " + strings.Join(skipped, ", ")
	}
	src.Detail = detail
	return k, src, nil
}

func reasonOf(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "forbidden"
	case apierrors.IsNotFound(err):
		return "not served"
	}
	return err.Error()
}
