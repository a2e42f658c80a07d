//go:build plot

package benchplot

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWrite renders a chart the way the benchmarks do and checks the file
// is well-formed SVG naming every series and the target.
func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "c.svg")
	c := Chart{Title: "t", XLabel: "clients", YLabel: "ops/s", LogX: true, Target: 50, TargetLabel: "target 50",
		Series: []Series{
			{Name: "raw etcd", Points: []Point{{X: 32, Y: 6000, Lo: 5500, Hi: 6500}, {X: 1, Y: 400, Lo: 400, Hi: 400}}},
			{Name: "API", Points: []Point{{X: 1, Y: 200, Lo: 190, Hi: 210}, {X: 32, Y: 3000, Lo: 2500, Hi: 3100}}},
		}}
	if err := Write(path, c); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(b)))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	for _, want := range []string{">raw etcd<", ">API<", ">target 50<", ">32<"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

// TestWriteXTicks: the axis spans and labels the x values asked for, even
// with no point there.
func TestWriteXTicks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	c := Chart{XTicks: []float64{1000, 10000}, Target: 30, TargetLabel: "target",
		Series: []Series{{Name: "cpu", Points: []Point{{X: 1000, Y: 3, Lo: 3, Hi: 3}}}}}
	if err := Write(path, c); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), ">10000<") {
		t.Errorf("the axis does not label 10000")
	}
}

func TestWriteNoData(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "c.svg"), Chart{Series: []Series{{Name: "empty"}}})
	if !errors.Is(err, ErrNoData) {
		t.Fatalf("err = %v, want ErrNoData", err)
	}
}
