//go:build bench

package bench

import (
	"os"
	"testing"

	"github.com/aks-mlops/mlplugins/test/e2e/framework"
)

// TestMain stops the platform after the benchmarks when they had to start it (PLATFORM_KEEP=1 keeps it).
func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
