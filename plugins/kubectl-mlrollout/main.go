// Command kubectl-mlrollout is the kubectl plugin for canary rollouts of model-serving Deployments.
package main

import (
	"github.com/aks-mlops/mlplugins/pkg/shared/cliutil"
	"github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/cmd"
)

func main() {
	cliutil.Main(cmd.NewCmdRoot)
}
