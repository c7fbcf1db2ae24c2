package kube

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes/scheme"
)

// apiServer is a fake API server that answers a Pod GET in protobuf and a custom resource GET in
// JSON, recording the request headers it saw.
type apiServer struct {
	*httptest.Server
	mu      sync.Mutex
	headers map[string]http.Header // path -> headers
}

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	s := &apiServer{headers: map[string]http.Header{}}
	pb := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	enc := scheme.Codecs.EncoderForVersion(pb, corev1.SchemeGroupVersion)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.headers[r.URL.Path] = r.Header.Clone()
		s.mu.Unlock()
		switch r.URL.Path {
		case "/api/v1/namespaces/team-a/pods/web-0":
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "team-a"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
			var b strings.Builder
			if err := enc.Encode(pod, &b); err != nil {
				t.Errorf("encoding pod: %v", err)
			}
			w.Header().Set("Content-Type", ContentTypeProtobuf)
			w.Write([]byte(b.String()))
		case "/apis/example.io/v1/namespaces/team-a/widgets/w1":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"apiVersion":"example.io/v1","kind":"Widget","metadata":{"name":"w1","namespace":"team-a"},"spec":{"size":3}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) header(path string) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers[path]
}

func writeKubeconfig(t *testing.T, srv *apiServer) string {
	t.Helper()
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ` + srv.URL + `
    certificate-authority-data: ` + ca + `
users:
- name: dev
  user:
    token: not-a-real-token
contexts:
- name: dev
  context: {cluster: local, user: dev, namespace: team-a}
- name: nonamespace
  context: {cluster: local, user: dev}
current-context: dev
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func configFlags(kubeconfig, context, namespace string) *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(false)
	f.KubeConfig = &kubeconfig
	if context != "" {
		f.Context = &context
	}
	if namespace != "" {
		f.Namespace = &namespace
	}
	return f
}

func TestNewClientsNamespace(t *testing.T) {
	srv := newAPIServer(t)
	kubeconfig := writeKubeconfig(t, srv)
	tests := []struct {
		name         string
		context      string
		namespace    string
		wantNS       string
		wantExplicit bool
	}{
		{name: "from context", wantNS: "team-a"},
		{name: "from flag", namespace: "team-b", wantNS: "team-b", wantExplicit: true},
		{name: "context without namespace", context: "nonamespace", wantNS: "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClients(configFlags(kubeconfig, tt.context, tt.namespace))
			if err != nil {
				t.Fatal(err)
			}
			if c.Namespace != tt.wantNS || c.ExplicitNamespace != tt.wantExplicit {
				t.Errorf("namespace = %q explicit = %v, want %q %v", c.Namespace, c.ExplicitNamespace, tt.wantNS, tt.wantExplicit)
			}
			if c.Config.Host != srv.URL {
				t.Errorf("Config.Host = %q, want %q", c.Config.Host, srv.URL)
			}
			if c.Config.ContentType != "" {
				t.Errorf("Config.ContentType = %q, want the JSON default (the shared config must stay unchanged)", c.Config.ContentType)
			}
		})
	}
}

func TestNewClientsProtobufAndDynamic(t *testing.T) {
	srv := newAPIServer(t)
	c, err := NewClients(configFlags(writeKubeconfig(t, srv), "", ""))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	pod, err := c.Kube.CoreV1().Pods(c.Namespace).Get(ctx, "web-0", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("typed get: %v", err)
	}
	if pod.Name != "web-0" || pod.Status.Phase != corev1.PodRunning {
		t.Errorf("pod = %s %s, want web-0 Running", pod.Name, pod.Status.Phase)
	}
	h := srv.header("/api/v1/namespaces/team-a/pods/web-0")
	if got := h.Get("Accept"); got != "application/vnd.kubernetes.protobuf,application/json" {
		t.Errorf("typed Accept = %q, want protobuf,json", got)
	}
	if got := h.Get("Authorization"); got != "Bearer not-a-real-token" {
		t.Errorf("typed Authorization = %q, want the kubeconfig token", got)
	}

	gvr := schema.GroupVersionResource{Group: "example.io", Version: "v1", Resource: "widgets"}
	u, err := c.Dynamic.Resource(gvr).Namespace(c.Namespace).Get(ctx, "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("dynamic get: %v", err)
	}
	if u.GetName() != "w1" || u.GetKind() != "Widget" {
		t.Errorf("dynamic object = %s %s", u.GetKind(), u.GetName())
	}
	if got := srv.header("/apis/example.io/v1/namespaces/team-a/widgets/w1").Get("Accept"); strings.Contains(got, "protobuf") {
		t.Errorf("dynamic Accept = %q, want JSON only", got)
	}
}

func TestNewClientsErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := NewClients(configFlags(missing, "", ""))
	if err == nil || !strings.HasPrefix(err.Error(), "loading kubeconfig: ") {
		t.Errorf("missing kubeconfig: err = %v, want a 'loading kubeconfig: ' error", err)
	}
	srv := newAPIServer(t)
	_, err = NewClients(configFlags(writeKubeconfig(t, srv), "nosuchcontext", ""))
	if err == nil || !strings.Contains(err.Error(), "nosuchcontext") {
		t.Errorf("unknown context: err = %v, want it named", err)
	}
}
