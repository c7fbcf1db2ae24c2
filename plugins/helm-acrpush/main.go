// Command helm-acrpush is the `helm acrpush` plugin (and a standalone binary): it pushes a Helm
// chart and every container image it uses to Azure Container Registry, signed in through Entra ID.
package main

import (
	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"

	"github.com/aks-mlops/mlplugins/plugins/helm-acrpush/cmd"
)

func main() {
	cliutil.Main(cmd.NewCmdRoot)
}
