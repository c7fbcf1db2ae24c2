// Package acrpush pushes a Helm chart and every container image it uses to an OCI registry
// (Azure Container Registry in particular), in the style of go-containerregistry's pkg/crane:
// one entry point, Push, configured with functional options.
//
// The work happens in three phases. Resolve loads and renders the chart, finds its images and
// checks every source image and every target tag; nothing is written. Copy transfers the images
// by digest (indexes whole unless platforms are selected), uploading each distinct blob once and
// mounting it into the other repositories that need it. The chart is pushed last, as an OCI
// artifact with Helm's media types, and only when every image arrived.
package acrpush
