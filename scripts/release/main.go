// Command release is what `make release` and `make image` run: it builds the
// release artifacts in dist/ with internal/release.
//
//	go run ./scripts/release -version 1.2.3 -commit SHA -date RFC3339 -out dist
//	go run ./scripts/release -image -arch amd64 -version 1.2.3 -commit SHA -date RFC3339 -out dist
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/otherix/otherix/internal/release"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err) // errors carry their "release:" prefix
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "release version, x.y.z (any tag-safe string with -image)")
	commit := flag.String("commit", "", "VCS revision to stamp")
	date := flag.String("date", "", "build time to stamp, RFC 3339 (default now)")
	out := flag.String("out", "dist", "output directory")
	arches := flag.String("arch", strings.Join(release.Arches, ","), "architectures, comma-separated (one with -image)")
	image := flag.Bool("image", false, "build only the otherix-api OCI image")
	flag.Parse()
	if *date == "" {
		*date = time.Now().UTC().Format(time.RFC3339)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mod, err := os.Getwd()
	if err != nil {
		return err
	}
	if *image {
		name, err := release.BuildImage(ctx, release.ImageOptions{Version: *version, Commit: *commit, Date: *date,
			ModuleDir: mod, Out: *out, Arch: *arches})
		if err != nil {
			return err
		}
		fmt.Println(filepath.Join(*out, name))
		return nil
	}
	a, err := release.Build(ctx, release.Options{Version: *version, Commit: *commit, Date: *date,
		ModuleDir: mod, Out: *out, Arches: strings.Split(*arches, ",")})
	if err != nil {
		return err
	}
	for _, f := range append(append(append(append(a.Binaries, a.Debs...), a.Images...), a.SBOM), a.Sums) {
		fmt.Println(filepath.Join(*out, f))
	}
	return nil
}
