// Package release builds what `make release` and `make image` put in dist/:
// the three binaries for each architecture with the version stamped, a
// .deb of each, an OCI image of otherix-api, a CycloneDX SBOM of the Go
// modules linked into the binaries, and SHA256SUMS over all of them.
//
// Everything is made in Go (go build, nfpm, go-containerregistry,
// cyclonedx-go): a release needs no tool outside Go and no Docker daemon.
package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/otherix/otherix/internal/buildinfo"
)

// Binaries are the three programs a release ships, in build order.
var Binaries = []string{"otherix-api", "otherix-agent", "otherix"}

// Arches are the architectures a release builds by default.
var Arches = []string{"amd64", "arm64"}

// marker is left in an output directory this package made, so a later run
// may empty it; a directory without it is never deleted.
const marker = ".otherix-release"

// ErrBadVersion is returned for a release version that is not x.y.z.
var ErrBadVersion = errors.New("release: version must be x.y.z (semantic version, optionally -prerelease)")

// semver is what a package version may be: Debian orders it correctly and
// the skew policy can compare minors.
var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.]+)?$`)

// Options say what to build.
type Options struct {
	// Version is the release version, x.y.z.
	Version string
	// Commit and Date are stamped into the binaries; Date (RFC 3339) is
	// also every file time in the packages and the image, so two builds of
	// one commit are byte-identical.
	Commit, Date string
	// ModuleDir is the root of the otherix module (where go.mod is).
	ModuleDir string
	// Out is the output directory (dist/). It is emptied first if an
	// earlier run of this package made it, and refused if it holds files
	// of anything else.
	Out string
	// Arches to build; nil means Arches.
	Arches []string
	// Go is the go command; empty means "go" on PATH.
	Go string
}

// Artifacts lists what Build wrote, as paths relative to Out.
type Artifacts struct {
	Binaries []string
	Debs     []string
	Images   []string
	SBOM     string
	Sums     string
}

func (o *Options) check() (time.Time, error) {
	if !semver.MatchString(o.Version) {
		return time.Time{}, fmt.Errorf("%w: got %q", ErrBadVersion, o.Version)
	}
	if len(o.Arches) == 0 {
		o.Arches = Arches
	}
	for _, a := range o.Arches {
		if !slices.Contains(Arches, a) {
			return time.Time{}, fmt.Errorf("release: architecture %q: want one of %v", a, Arches)
		}
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Out == "" || o.ModuleDir == "" {
		return time.Time{}, errors.New("release: Out and ModuleDir must be set")
	}
	t, err := time.Parse(time.RFC3339, o.Date)
	if err != nil {
		return time.Time{}, fmt.Errorf("release: date %q: %w", o.Date, err)
	}
	return t.UTC(), nil
}

// Build makes the whole release in o.Out.
func Build(ctx context.Context, o Options) (*Artifacts, error) {
	date, err := o.check()
	if err != nil {
		return nil, err
	}
	if err := prepareOut(o.Out); err != nil {
		return nil, err
	}
	a := &Artifacts{}
	bins := map[string]map[string]string{} // arch → binary → path
	for _, arch := range o.Arches {
		bins[arch] = map[string]string{}
		for _, b := range Binaries {
			name := fmt.Sprintf("%s_%s_linux_%s", b, o.Version, arch)
			p := filepath.Join(o.Out, name)
			if err := BuildBinary(ctx, o.Go, o.ModuleDir, b, arch, p, buildinfo.LDFlags(o.Version, o.Commit, o.Date)); err != nil {
				return nil, err
			}
			bins[arch][b] = p
			a.Binaries = append(a.Binaries, name)
		}
	}
	man, err := os.MkdirTemp("", "otherix-man-")
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	defer os.RemoveAll(man)
	if err := WriteManPages(ctx, o.Go, o.ModuleDir, man, buildinfo.LDFlags(o.Version, o.Commit, o.Date)); err != nil {
		return nil, err
	}
	for _, arch := range o.Arches {
		for _, b := range Binaries {
			p := Package{Name: b, Version: o.Version, Arch: arch, Binary: bins[arch][b], MTime: date}
			if b == "otherix" {
				p.ManPages = man
			}
			name, err := WriteDeb(o.Out, p)
			if err != nil {
				return nil, err
			}
			a.Debs = append(a.Debs, name)
		}
		name, err := WriteImage(o.Out, Image{Version: o.Version, Commit: o.Commit, Arch: arch, Binary: bins[arch]["otherix-api"], Created: date})
		if err != nil {
			return nil, err
		}
		a.Images = append(a.Images, name)
	}
	var all []string
	for _, arch := range o.Arches {
		for _, b := range Binaries {
			all = append(all, bins[arch][b])
		}
	}
	a.SBOM = fmt.Sprintf("otherix_%s_sbom.cdx.json", o.Version)
	if err := WriteSBOM(filepath.Join(o.Out, a.SBOM), SBOM{Version: o.Version, Commit: o.Commit, Created: date, Binaries: all}); err != nil {
		return nil, err
	}
	files := slices.Concat(a.Binaries, a.Debs, a.Images, []string{a.SBOM})
	a.Sums = "SHA256SUMS"
	if err := WriteSums(o.Out, a.Sums, files); err != nil {
		return nil, err
	}
	return a, nil
}

// BuildBinary builds cmd/<name> for linux/<arch> into out: static (no cgo),
// paths trimmed and symbols stripped, with ldflags stamping the version.
// The module's build information stays in the binary; the SBOM reads it.
func BuildBinary(ctx context.Context, goCmd, moduleDir, name, arch, out, ldflags string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("release: build %s/%s: %w", name, arch, err)
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags", "-s -w "+ldflags, "-o", abs, "./cmd/"+name)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("release: go build %s for linux/%s: %w\n%s", name, arch, err, b)
	}
	return nil
}

// WriteManPages writes the CLI's man pages into dir, generated from its
// command tree by the CLI itself (built for this machine, stamped like the
// release so each page names its version).
func WriteManPages(ctx context.Context, goCmd, moduleDir, dir, ldflags string) error {
	cmd := exec.CommandContext(ctx, goCmd, "run", "-trimpath", "-ldflags", ldflags, "./cmd/otherix", "docs", "man", dir)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("release: man pages: %w\n%s", err, b)
	}
	return nil
}

// prepareOut makes out empty: it creates it, or empties one an earlier run
// made (it holds the marker). Anything else is refused rather than deleted.
func prepareOut(out string) error {
	entries, err := os.ReadDir(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("release: %w", err)
	case len(entries) == 0:
	default:
		if _, err := os.Stat(filepath.Join(out, marker)); err != nil {
			return fmt.Errorf("release: %s is not empty and was not made by a release build; move it away", out)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(out, e.Name())); err != nil {
				return fmt.Errorf("release: empty %s: %w", out, err)
			}
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return os.WriteFile(filepath.Join(out, marker), []byte("made by internal/release; emptied by the next release build\n"), 0o644)
}
