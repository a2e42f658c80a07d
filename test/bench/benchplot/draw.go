//go:build plot

package benchplot

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Enabled reports whether this build can draw (-tags plot).
func Enabled() bool { return true }

// palette has distinguishable colours that survive a dark or light page.
var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

// spread is a plotter.XYs with y error bars from each point's Lo and Hi.
type spread []Point

func (s spread) Len() int                        { return len(s) }
func (s spread) XY(i int) (float64, float64)     { return s[i].X, s[i].Y }
func (s spread) YError(i int) (float64, float64) { return s[i].Y - s[i].Lo, s[i].Hi - s[i].Y }

// Write renders c to path as SVG (the directory is created).
func Write(path string, c Chart) error {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	var xs []float64
	n := 0
	for i, s := range c.Series {
		pts := append([]Point(nil), s.Points...)
		sort.Slice(pts, func(a, b int) bool { return pts[a].X < pts[b].X })
		if len(pts) == 0 {
			continue
		}
		n += len(pts)
		col := palette[i%len(palette)]
		line, scatter, err := plotter.NewLinePoints(spread(pts))
		if err != nil {
			return fmt.Errorf("benchplot: series %s: %w", s.Name, err)
		}
		line.Color = col
		line.Width = vg.Points(1.5)
		scatter.Color = col
		scatter.Shape = draw.CircleGlyph{}
		bars, err := plotter.NewYErrorBars(spread(pts))
		if err != nil {
			return fmt.Errorf("benchplot: series %s: %w", s.Name, err)
		}
		bars.Color = col
		p.Add(line, scatter, bars)
		p.Legend.Add(s.Name, line, scatter)
		for _, pt := range pts {
			xs = append(xs, pt.X)
			if pt.Hi > p.Y.Max {
				p.Y.Max = pt.Hi
			}
		}
	}
	if n == 0 {
		return ErrNoData
	}
	xs = append(xs, c.XTicks...)
	for _, x := range c.XTicks {
		p.X.Min, p.X.Max = min(p.X.Min, x), max(p.X.Max, x)
	}
	if c.TargetLabel != "" {
		lo, hi := xs[0], xs[0]
		for _, x := range xs {
			lo, hi = min(lo, x), max(hi, x)
		}
		t, err := plotter.NewLine(plotter.XYs{{X: lo, Y: c.Target}, {X: hi, Y: c.Target}})
		if err != nil {
			return err
		}
		t.Color = color.Gray{Y: 0x60}
		t.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(t)
		p.Legend.Add(c.TargetLabel, t)
		p.Y.Max = max(p.Y.Max, c.Target)
	}
	p.Y.Max *= 1.4 // room for the legend above the highest point
	if c.LogX {
		p.X.Scale = plot.LogScale{}
	}
	p.X.Tick.Marker = ticksAt(xs)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(18*vg.Centimeter, 11*vg.Centimeter, path)
}

// ticksAt labels exactly the measured x values: a log axis's default ticks
// (powers of ten) would leave 8, 32 and 64 clients unlabelled, and a linear
// one labels 2,500 nodes as 2500.00.
type ticksAt []float64

func (t ticksAt) Ticks(lo, hi float64) []plot.Tick {
	seen := map[float64]bool{}
	var out []plot.Tick
	for _, x := range t {
		if seen[x] || x < lo || x > hi {
			continue
		}
		seen[x] = true
		out = append(out, plot.Tick{Value: x, Label: fmt.Sprintf("%g", x)})
	}
	return out
}
