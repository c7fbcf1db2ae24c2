package rollout

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// maxBody bounds how much of a pod's answer a check reads.
const maxBody = 4 << 20

// PortForwardHTTP returns a PodHTTPFunc that reaches a pod's port the way `kubectl port-forward`
// does (websocket tunnel, falling back to SPDY), sends one request and closes the forward.
func PortForwardHTTP(cfg *rest.Config) (PodHTTPFunc, error) {
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, namespace, pod string, port int, req *http.Request) (*HTTPResponse, error) {
		u := core.RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
		transport, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			return nil, err
		}
		dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
		tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, cfg)
		if err != nil {
			return nil, err
		}
		dialer = portforward.NewFallbackDialerForStreaming(tunnel, dialer, func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		})
		stop := make(chan struct{})
		ready := make(chan struct{})
		fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			return nil, err
		}
		errc := make(chan error, 1)
		go func() { errc <- fw.ForwardPorts() }()
		defer close(stop)
		select {
		case <-ready:
		case err := <-errc:
			return nil, fmt.Errorf("port-forward to pod %s: %w", pod, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ports, err := fw.GetPorts()
		if err != nil || len(ports) == 0 {
			return nil, fmt.Errorf("port-forward to pod %s: no local port", pod)
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))))
		if err != nil {
			return nil, err
		}
		defer func() { _ = conn.Close() }()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		req.Close = true
		start := time.Now()
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		return &HTTPResponse{Status: resp.StatusCode, Body: body, Latency: time.Since(start)}, nil
	}, nil
}
