// Package web holds the browser console's and the fleet dashboard's bundle,
// built from web/src by
// `npm run build` (which `make build` runs) into web/dist and embedded here,
// so otherix-api serves it with no files beside the binary.
//
// The bundle is not committed: a Go build from a fresh clone without npm
// embeds only dist/README.md, and Bundle reports the console as not built.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// BuildHint tells an operator how to get the web bundle into the binary.
const BuildHint = "run `make build` (npm ci && npm run build in web/, then go build) to embed the browser console and dashboard"

// Entries are the bundle's scripts; their presence says the bundle was
// built. Both are asked for, so that a dist/ left by an older build (a
// console without the dashboard) counts as not built rather than serving a
// page whose script is missing.
var Entries = []string{"console.js", "dashboard.js"}

// Bundle returns the built bundle's files (console.js, console.css,
// dashboard.js, dashboard.css) at its root, and whether the bundle was
// built into this binary.
func Bundle() (fs.FS, bool) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, false
	}
	for _, e := range Entries {
		if _, err := fs.Stat(sub, e); err != nil {
			return sub, false
		}
	}
	return sub, true
}
