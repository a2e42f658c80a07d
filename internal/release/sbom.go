package release

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/uuid"
)

// SBOM describes the bill of materials of one release.
type SBOM struct {
	Version, Commit string
	Created         time.Time
	// Binaries are the built programs; their embedded build information
	// (debug/buildinfo) is the source of truth for what was linked, which
	// go.mod alone is not (it lists test-only and unused modules too).
	Binaries []string
}

// mainModule is the module the release is built from.
const mainModule = "github.com/otherix/otherix"

func purl(path, version string) string { return "pkg:golang/" + path + "@" + version }

// WriteSBOM writes a CycloneDX 1.6 JSON document to path listing every Go
// module linked into s.Binaries (replacements resolved), the Go standard
// library, and which programs each one is in.
func WriteSBOM(path string, s SBOM) error {
	type mod struct {
		path, version, sum string
		in                 []string
	}
	mods := map[string]*mod{}
	var goVersion string
	for _, b := range s.Binaries {
		bi, err := buildinfo.ReadFile(b)
		if err != nil {
			return fmt.Errorf("release: sbom: read build info of %s: %w", b, err)
		}
		goVersion = bi.GoVersion
		prog := filepath.Base(bi.Path)
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			key := d.Path + "@" + d.Version
			m, ok := mods[key]
			if !ok {
				m = &mod{path: d.Path, version: d.Version, sum: d.Sum}
				mods[key] = m
			}
			if !slices.Contains(m.in, prog) {
				m.in = append(m.in, prog)
			}
		}
	}
	if goVersion == "" {
		return fmt.Errorf("release: sbom: no binaries")
	}
	version := "v" + s.Version
	root := purl(mainModule, version)
	bom := cdx.NewBOM()
	// Derived from what was built, so the same release has the same id.
	bom.SerialNumber = "urn:uuid:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte(root+"#"+s.Commit)).String()
	bom.Metadata = &cdx.Metadata{
		Timestamp: s.Created.UTC().Format(time.RFC3339),
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "otherix internal/release", Version: s.Version,
		}}},
		Component: &cdx.Component{
			BOMRef: root, Type: cdx.ComponentTypeApplication, Name: mainModule, Version: version,
			PackageURL: root,
			Properties: &[]cdx.Property{{Name: "otherix:commit", Value: s.Commit}},
		},
	}
	std := purl("std", goVersion)
	comps := []cdx.Component{{
		BOMRef: std, Type: cdx.ComponentTypeLibrary, Name: "std", Version: goVersion, PackageURL: std,
		Description: "the Go standard library and runtime the binaries are built with",
	}}
	keys := make([]string, 0, len(mods))
	for k := range mods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	deps := []string{std}
	for _, k := range keys {
		m := mods[k]
		ref := purl(m.path, m.version)
		c := cdx.Component{
			BOMRef: ref, Type: cdx.ComponentTypeLibrary, Name: m.path, Version: m.version, PackageURL: ref,
			Properties: &[]cdx.Property{{Name: "otherix:binaries", Value: strings.Join(m.in, ",")}},
		}
		if m.sum != "" {
			// The go.sum hash (h1: a SHA-256 over the module's files),
			// kept as a property: it is not a hash of one artifact, which
			// is what CycloneDX's hashes field means.
			*c.Properties = append(*c.Properties, cdx.Property{Name: "golang:go.sum", Value: m.sum})
		}
		comps = append(comps, c)
		deps = append(deps, ref)
	}
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: root, Dependencies: &deps}}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("release: sbom: %w", err)
	}
	enc := cdx.NewBOMEncoder(f, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		f.Close()
		return fmt.Errorf("release: sbom: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("release: sbom: %w", err)
	}
	return nil
}
