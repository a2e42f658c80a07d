// Package deploy holds what an installation needs besides the binaries:
// the systemd units, the default configuration, the Debian maintainer
// scripts and example configurations. The release builder
// (internal/release) packages these files from here, so the .deb carries
// exactly what the tests in this package check.
package deploy

import "embed"

// Files is the deploy tree: systemd/, config/, scripts/ and examples/.
//
//go:embed systemd config scripts examples
var Files embed.FS
