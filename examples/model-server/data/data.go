// Package data ships the Iris dataset the example model is trained on.
//
// iris.csv holds the 150 rows of Fisher's Iris data (public domain), in the row order and with the values
// of R's datasets::iris: four measurements in centimetres and the species.
package data

import _ "embed"

// IrisCSV is the content of iris.csv, with a header row.
//
//go:embed iris.csv
var IrisCSV []byte
