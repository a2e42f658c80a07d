// Package buildinfo is what a build stamps into the three binaries: the
// release version, the commit and the build time. One package serves all
// three so that `otherix version`, `otherix-api --version`, the agent's
// enrollment and GET /v1/version cannot disagree about what was built.
//
// The Makefile sets the variables at link time:
//
//	-X github.com/otherix/otherix/internal/buildinfo.version=1.2.3
//	-X github.com/otherix/otherix/internal/buildinfo.commit=<sha>
//	-X github.com/otherix/otherix/internal/buildinfo.date=<RFC 3339>
//
// A plain `go build` or `go test` leaves them empty; the commit and time
// then come from the VCS stamp Go records itself, when there is one.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set by the linker (-X); see the package comment.
var (
	version string
	commit  string
	date    string
)

// DevVersion is the version of a build that was not stamped.
const DevVersion = "dev"

// Info describes one build.
type Info struct {
	// Version is the release version (1.2.3) or "dev".
	Version string
	// Commit is the VCS revision, empty when unknown.
	Commit string
	// Date is the build (or, unstamped, the commit) time in RFC 3339,
	// empty when unknown.
	Date string
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
	// Platform is GOOS/GOARCH.
	Platform string
}

var (
	once sync.Once
	info Info
)

// Get returns this binary's build information.
func Get() Info {
	once.Do(func() { info = resolve(version, commit, date, debug.ReadBuildInfo) })
	return info
}

// Version is Get().Version, for the common case.
func Version() string { return Get().Version }

// resolve fills what the linker did not stamp from Go's own VCS settings;
// read is a seam for tests.
func resolve(v, c, d string, read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: v, Commit: c, Date: d, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if i.Version == "" {
		i.Version = DevVersion
	}
	if i.Commit != "" && i.Date != "" {
		return i
	}
	bi, ok := read()
	if !ok || bi == nil {
		return i
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if i.Commit == "" {
				i.Commit = s.Value
			}
		case "vcs.time":
			if i.Date == "" {
				i.Date = s.Value
			}
		}
	}
	return i
}

// LDFlags returns the -X flags that stamp v, c and d into a build of this
// module: the release builder and the Makefile agree on them through it.
func LDFlags(v, c, d string) string {
	const pkg = "github.com/otherix/otherix/internal/buildinfo"
	return "-X " + pkg + ".version=" + v + " -X " + pkg + ".commit=" + c + " -X " + pkg + ".date=" + d
}
