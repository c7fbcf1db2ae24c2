// Command kubectl-mlhealth is the `kubectl mlhealth` plugin: one health verdict for an ML app,
// joining live Kubernetes state with Prometheus metrics and Log Analytics history.
package main

import (
	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"

	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/cmd"
)

func main() {
	cliutil.Main(cmd.NewCmdRoot)
}
