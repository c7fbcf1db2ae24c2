// Command platform runs the project's local platform: a real Kubernetes control plane with kwok nodes,
// two OCI registries (one behind ACR-style token auth), emulated Entra ID and ACR token endpoints, and
// Prometheus, all as background processes on loopback ports with state and logs in .platform/.
//
// Usage:
//
//	platform up            start (or reuse) the platform and write .platform/env
//	platform down [--keep] stop every process it started; remove .platform unless --keep
//	platform status        print each component with its address, pid and memory
//	platform env           print the sourceable env file
//	platform route -n NS -l SELECTOR --port P --target 127.0.0.1:T [--scrape] [--image REGEX]
//	                       send port-forwards to matching pods' port P to T (long-running)
//	platform serve-azure   run the Entra ID and ACR emulators in the foreground (used by up)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

const usage = `platform runs the local platform that the tests and the demo use.

Usage:
  platform up [--dir DIR]
  platform down [--dir DIR] [--keep]
  platform status [--dir DIR]
  platform env [--dir DIR]
  platform route -n NAMESPACE -l SELECTOR --port POD_PORT --target 127.0.0.1:PORT [--scrape] [--image REGEX]
  platform serve-azure (started by up)

Environment:
  PLATFORM_DIR    state directory (default: <repository root>/.platform)
  PLATFORM_NODES  number of kwok nodes created by up (default 3, at most 50)
  PLATFORM_REGISTRY_STORAGE
                  where the registries keep blobs: memory (tmpfs under /dev/shm) or disk
                  (default: memory when /dev/shm has 6 GiB free, else disk)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return runUp(ctx, rest, stdout, stderr)
	case "down":
		return runDown(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "env":
		return runEnv(rest, stdout, stderr)
	case "route":
		return runRoute(ctx, rest, stdout, stderr)
	case "serve-azure":
		return runServeAzure(ctx, rest, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
