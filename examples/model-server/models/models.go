// Package models embeds the trained model files (written by ../train) so the image builder and the
// tests need no path to them.
package models

import (
	"embed"
	"fmt"
)

// Versions lists the shipped model versions, in release order.
var Versions = []string{"v1", "v2", "v3"}

//go:embed v1.json v2.json v3.json
var files embed.FS

// Read returns the model file of a version.
func Read(version string) ([]byte, error) {
	b, err := files.ReadFile(version + ".json")
	if err != nil {
		return nil, fmt.Errorf("no model file for version %q", version)
	}
	return b, nil
}
