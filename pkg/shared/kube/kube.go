// Package kube turns the standard kubectl configuration flags (--kubeconfig, --context, -n, --as, ...)
// into Kubernetes clients.
package kube

import (
	"fmt"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// ContentTypeProtobuf is the wire format the typed client uses for built-in types.
	ContentTypeProtobuf = "application/vnd.kubernetes.protobuf"
	// acceptProtobufOrJSON lets the server fall back to JSON for types without a protobuf form.
	acceptProtobufOrJSON = ContentTypeProtobuf + ",application/json"
)

// Clients holds the clients a command needs, built once in Complete. Tests fill the fields with
// fakes (for example k8s.io/client-go/kubernetes/fake) instead of calling NewClients.
type Clients struct {
	// Config is the REST config resolved from the flags, in JSON; copy it before changing it.
	Config *rest.Config
	// Kube is the typed client for built-in types; it speaks protobuf.
	Kube kubernetes.Interface
	// Dynamic is the client for custom resources and other unstructured objects.
	Dynamic dynamic.Interface
	// Namespace is the namespace from -n, else from the kubeconfig context, else "default".
	Namespace string
	// ExplicitNamespace is true when the namespace was given with -n/--namespace.
	ExplicitNamespace bool
}

// NewClients resolves the REST config and namespace from getter (usually *genericclioptions.ConfigFlags)
// and builds the typed and dynamic clients.
func NewClients(getter genericclioptions.RESTClientGetter) (*Clients, error) {
	config, err := getter.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	ns, explicit, err := getter.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("resolving namespace: %w", err)
	}
	if ns == "" {
		ns = "default"
	}

	typedConfig := rest.CopyConfig(config)
	typedConfig.ContentType = ContentTypeProtobuf
	typedConfig.AcceptContentTypes = acceptProtobufOrJSON
	kube, err := kubernetes.NewForConfig(typedConfig)
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client: %w", err)
	}
	return &Clients{
		Config:            config,
		Kube:              kube,
		Dynamic:           dyn,
		Namespace:         ns,
		ExplicitNamespace: explicit,
	}, nil
}
