// Package chart holds the tests of the reference Helm chart charts/mlapp (golden renders, schema
// rejections, lint, alert rule tests) and the generators of the chart's derived files: the README
// values table (from values.yaml comments) and the Azure Monitor rule group template (from
// files/alerts.yaml). Regenerate everything with:
//
//	go test ./test/chart -update
package chart
