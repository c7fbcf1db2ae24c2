package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aks-mlops/mlplugins/test/platform/azemu"
)

func runDown(_ context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("down", stderr)
	dirFlag := fs.String("dir", "", "state directory (default $PLATFORM_DIR or <repo>/.platform)")
	keep := fs.Bool("keep", false, "keep .platform (logs, data) after stopping")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := resolveDir(*dirFlag)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "platform is not up; nothing to stop")
		return nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	comps := pidFileComponents(dir)
	if st, err := loadState(dir); err == nil {
		comps = append(st.Components, comps...)
	}
	started := time.Now()
	if left := stopAll(comps, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("processes still running after SIGKILL: %s", strings.Join(left, ", "))
	}
	for _, c := range comps {
		if c.alive() {
			return fmt.Errorf("%s (pid %d) is still running", c.Name, c.PID)
		}
	}
	// Route processes started by tests register here too; stop any that outlived their test.
	if *keep {
		_ = os.Remove(statePath(dir))
		fmt.Fprintf(stderr, "platform stopped in %.1fs; state kept in %s\n", time.Since(started).Seconds(), dir)
		return nil
	}
	if err := wipe(dir); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, ".lock"))
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(stderr, "platform stopped in %.1fs; removed %s\n", time.Since(started).Seconds(), dir)
	return nil
}

// pidFileComponents reads dir/run/*.pid, so that down also stops processes of an up that failed half-way
// or route processes a test left behind.
func pidFileComponents(dir string) []Component {
	files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	var out []Component
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
			continue
		}
		start, ok := procStart(pid)
		if !ok || !ownedBy(pid, dir) {
			continue
		}
		out = append(out, Component{Name: strings.TrimSuffix(filepath.Base(f), ".pid"), PID: pid, Start: start})
	}
	return out
}

// ownedBy reports whether pid's command line or working directory mentions dir, a guard against pid reuse
// for processes found only through pid files.
func ownedBy(pid int, dir string) bool {
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && strings.HasPrefix(cwd, dir) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), dir)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	dirFlag := fs.String("dir", "", "state directory (default $PLATFORM_DIR or <repo>/.platform)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := resolveDir(*dirFlag)
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
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tSTATE\tPID\tRSS\tADDRESS")
	var total int64
	for _, c := range st.Components {
		state, rss := "down", "-"
		if c.alive() {
			state = "up"
			b := rssBytes(c.PID)
			total += b
			rss = fmt.Sprintf("%d MiB", b>>20)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", c.Name, state, c.PID, rss, c.Addr)
	}
	fmt.Fprintf(tw, "TOTAL\t\t\t%d MiB\t\n", total>>20)
	if st.RegistryStorage != "" {
		where, _ := filepath.EvalSymlinks(filepath.Join(dir, "registry"))
		fmt.Fprintf(tw, "registry storage\t%s\t\t\t%s\n", st.RegistryStorage, where)
	}
	for _, c := range pidFileComponents(dir) {
		if !strings.HasPrefix(c.Name, "route-") {
			continue
		}
		args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.PID))
		desc := strings.Join(strings.Split(strings.TrimRight(string(args), "\x00"), "\x00")[1:], " ")
		fmt.Fprintf(tw, "route\tup\t%d\t%d MiB\t%s\n", c.PID, rssBytes(c.PID)>>20, desc)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	problems := checkHealth(ctx, dir, st)
	if len(problems) > 0 {
		return fmt.Errorf("platform unhealthy: %s", strings.Join(problems, "; "))
	}
	fmt.Fprintf(stderr, "platform healthy (up took %.1fs); env: %s\n", st.ReadySeconds, filepath.Join(dir, "env"))
	return nil
}

func runEnv(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("env", stderr)
	dirFlag := fs.String("dir", "", "state directory (default $PLATFORM_DIR or <repo>/.platform)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := resolveDir(*dirFlag)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errNotUp
		}
		return err
	}
	// The client secret stays in the file: source the file rather than this output.
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.HasPrefix(line, "export AZURE_CLIENT_SECRET=") {
			line = "export AZURE_CLIENT_SECRET='***' # hidden; source " + filepath.Join(dir, "env") + "\n"
		}
		if _, err := io.WriteString(stdout, line); err != nil {
			return err
		}
	}
	return nil
}

// checkHealth returns one line per problem; none means the platform is usable.
func checkHealth(ctx context.Context, dir string, st *State) []string {
	var problems []string
	for _, c := range st.Components {
		if !c.alive() {
			problems = append(problems, c.Name+" is not running")
		}
	}
	if len(problems) > 0 {
		return problems
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kc, err := newKubeClient(st.APIServer, st.Token, st.CAFile)
	if err != nil {
		return []string{err.Error()}
	}
	if err := kc.do(ctx, "GET", "/readyz", "", nil, nil); err != nil {
		problems = append(problems, "kube-apiserver: "+err.Error())
	} else if err := nodesReady(ctx, kc, st.Nodes); err != nil {
		problems = append(problems, err.Error())
	}
	if err := httpOK(ctx, nil, "http://"+st.Source+"/v2/", nil); err != nil {
		problems = append(problems, "source registry: "+err.Error())
	}
	if err := httpOK(ctx, nil, st.Prometheus+"/-/ready", nil); err != nil {
		problems = append(problems, "prometheus: "+err.Error())
	}
	if hc, err := tlsClient(filepath.Join(dir, "pki", "ca-bundle.crt")); err != nil {
		problems = append(problems, err.Error())
	} else if err := httpOK(ctx, hc, "https://"+st.ACR+"/v2/", []int{http.StatusUnauthorized}); err != nil {
		problems = append(problems, "ACR: "+err.Error())
	}
	return problems
}

// tlsClient returns an HTTP client that trusts the certificates in bundle.
func tlsClient(bundle string) (*http.Client, error) {
	pemData, err := os.ReadFile(bundle)
	if err != nil {
		return nil, fmt.Errorf("read ca bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("no certificate in %s", bundle)
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}, nil
}

// runServeAzure runs the Entra ID and ACR emulators until SIGTERM. The client secret comes from
// AZURE_CLIENT_SECRET so that it never appears on a command line.
func runServeAzure(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("serve-azure", stderr)
	var cfg azemu.Config
	fs.StringVar(&cfg.Dir, "dir", "", "directory prepared by azemu.PrepareCerts")
	fs.StringVar(&cfg.EntraAddr, "entra-addr", "", "host:port for the Entra ID emulator")
	fs.StringVar(&cfg.ACRAddr, "acr-addr", "", "host:port for the ACR front (the login server)")
	fs.StringVar(&cfg.RegistryURL, "registry-url", "", "URL of the token-auth registry behind the ACR front")
	fs.StringVar(&cfg.TenantID, "tenant", "", "tenant id")
	fs.StringVar(&cfg.ClientID, "client-id", "", "client id of the service principal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.ClientSecret = os.Getenv("AZURE_CLIENT_SECRET")
	if cfg.Dir == "" || cfg.EntraAddr == "" || cfg.ACRAddr == "" || cfg.RegistryURL == "" || cfg.TenantID == "" || cfg.ClientID == "" || cfg.ClientSecret == "" {
		return errors.New("serve-azure needs --dir, --entra-addr, --acr-addr, --registry-url, --tenant, --client-id and AZURE_CLIENT_SECRET")
	}
	cfg.Logf = func(format string, a ...any) {
		fmt.Fprintf(stderr, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", a...)
	}
	return azemu.Serve(ctx, cfg)
}
