// Package benchplot draws the benchmarks' curves (throughput against
// clients, heartbeat CPU against nodes) as SVG files for docs/bench/, with
// gonum's plot package, so a figure that is a curve is read as one.
//
// The drawing is built only with -tags plot (make bench-plots passes it):
// gonum's plot and its fonts take tens of seconds to compile on a 2-core
// machine, which make check (go vet and go test over ./...) would pay on
// every fresh clone. Without the tag, Write says how to get it.
package benchplot

import "errors"

// Point is one measured x with the median of its y over rounds and the
// spread (lowest and highest) around it; Lo = Hi = Y for a single value.
type Point struct {
	X, Y, Lo, Hi float64
}

// Series is one line of the chart.
type Series struct {
	Name   string
	Points []Point
}

// Chart is one SVG figure. A horizontal Target line is drawn when
// TargetLabel is set.
type Chart struct {
	Title, XLabel, YLabel string
	// LogX puts x on a log scale (client counts 1, 8, 32, 64).
	LogX bool
	// XTicks are x values the axis spans and labels even where no series
	// has a point there (a node count whose measurement was left out).
	XTicks      []float64
	Target      float64
	TargetLabel string
	Series      []Series
}

// ErrNoData is returned for a chart with no point to draw.
var ErrNoData = errors.New("benchplot: no data")

// ErrNotBuilt is Write's answer in a build without -tags plot.
var ErrNotBuilt = errors.New("benchplot: built without -tags plot (make bench-plots passes it)")
