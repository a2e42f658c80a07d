package release

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/otherix/otherix/deploy"
)

// Package describes one .deb: a binary and what goes with it.
type Package struct {
	// Name is the binary's name, which is also the package's.
	Name    string
	Version string
	// Arch is the Go (and Debian) architecture: amd64 or arm64.
	Arch string
	// Binary is the built program to install as /usr/bin/<Name>.
	Binary string
	// MTime is every file's time in the package.
	MTime time.Time
	// ManPages is a directory of section-1 man pages (NAME.1) to install,
	// gzipped, under /usr/share/man/man1; "" for none.
	ManPages string
}

const (
	maintainer = "Otherix maintainers"
	// unitDir is where packages put systemd units on Debian (merged /usr
	// links /lib to /usr/lib; both are searched).
	unitDir = "/lib/systemd/system"
)

// file is one entry of a package: src is a path in deploy.Files, or "" for
// a directory.
type file struct {
	src, dst string
	mode     fs.FileMode
	kind     string // files.Type*
}

// debLayout returns what package name ships besides its binary, its maintainer
// scripts (postinst, prerm; "" for none), its dependencies and its
// description.
func debLayout(name, arch string) (entries []file, postinst, prerm string, depends []string, desc string, err error) {
	switch name {
	case "otherix-api":
		return []file{
				{src: "systemd/otherix-api.service", dst: unitDir + "/otherix-api.service", mode: 0o644},
				// 0640: postinst gives the group to otherix; no one else
				// needs to read how the cluster is set up.
				{src: "config/api.yaml", dst: "/etc/otherix/api.yaml", mode: 0o640, kind: files.TypeConfig},
				// Read by systemd as root: it may hold the first admin's password.
				{src: "config/otherix-api.default", dst: "/etc/default/otherix-api", mode: 0o600, kind: files.TypeConfig},
				{dst: "/etc/otherix", mode: 0o755, kind: files.TypeDir},
				// etcd data, the CA key: the service user only (postinst chowns).
				{dst: "/var/lib/otherix", mode: 0o700, kind: files.TypeDir},
				{src: "examples/api-single.yaml", dst: "/usr/share/doc/otherix-api/examples/api-single.yaml", mode: 0o644},
				{src: "examples/api-three-replicas.yaml", dst: "/usr/share/doc/otherix-api/examples/api-three-replicas.yaml", mode: 0o644},
			}, "scripts/otherix-api.postinst", "scripts/otherix-api.prerm",
			// useradd and groupadd.
			[]string{"passwd"},
			"Otherix control plane: REST API, embedded etcd, actors and job dispatcher", nil
	case "otherix-agent":
		qemu := map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}[arch]
		return []file{
				{src: "systemd/otherix-agent.service", dst: unitDir + "/otherix-agent.service", mode: 0o644},
				{src: "config/otherix-agent.default", dst: "/etc/default/otherix-agent", mode: 0o644, kind: files.TypeConfig},
				// Node key, VM records and disks, image cache: root only.
				{dst: "/var/lib/otherix-agent", mode: 0o700, kind: files.TypeDir},
				{src: "examples/agent.default", dst: "/usr/share/doc/otherix-agent/examples/agent.default", mode: 0o644},
			}, "scripts/otherix-agent.postinst", "scripts/otherix-agent.prerm",
			// QEMU for the guests, qemu-img for disks, useradd for otherix-qemu.
			[]string{qemu, "qemu-utils", "passwd"},
			"Otherix node agent: QEMU virtual machines, image cache and network data plane", nil
	case "otherix":
		return nil, "", "", nil, "Otherix command-line client", nil
	}
	return nil, "", "", nil, "", fmt.Errorf("release: no package layout for %q", name)
}

// WriteDeb builds p's .deb in dir and returns its file name.
func WriteDeb(dir string, p Package) (string, error) {
	entries, postinst, prerm, depends, desc, err := debLayout(p.Name, p.Arch)
	if err != nil {
		return "", err
	}
	// nfpm reads contents from disk: stage the embedded deploy files.
	stage, err := os.MkdirTemp("", "otherix-deb-")
	if err != nil {
		return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
	}
	defer os.RemoveAll(stage)
	staged := func(src string, mode fs.FileMode) (string, error) {
		b, err := deploy.Files.ReadFile(src)
		if err != nil {
			return "", err
		}
		out := filepath.Join(stage, filepath.FromSlash(src))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		return out, os.WriteFile(out, b, mode)
	}
	contents := files.Contents{{
		Source: p.Binary, Destination: "/usr/bin/" + p.Name,
		FileInfo: &files.ContentFileInfo{Mode: 0o755, Owner: "root", Group: "root", MTime: p.MTime},
	}}
	for _, e := range entries {
		c := &files.Content{Destination: e.dst, Type: e.kind,
			FileInfo: &files.ContentFileInfo{Mode: e.mode, Owner: "root", Group: "root", MTime: p.MTime}}
		if e.src != "" {
			if c.Source, err = staged(e.src, e.mode); err != nil {
				return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
			}
		}
		contents = append(contents, c)
	}
	man, err := manContents(stage, p)
	if err != nil {
		return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
	}
	contents = append(contents, man...)
	info := &nfpm.Info{
		Name:        p.Name,
		Arch:        p.Arch,
		Platform:    "linux",
		Version:     p.Version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  maintainer,
		Description: desc,
		MTime:       p.MTime,
		Overridables: nfpm.Overridables{
			Depends:  depends,
			Contents: contents,
			// Modes above are exact; no umask may widen or narrow them.
			Umask: 0o000,
		},
	}
	if postinst != "" {
		if info.Scripts.PostInstall, err = staged(postinst, 0o755); err != nil {
			return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
		}
		if info.Scripts.PreRemove, err = staged(prerm, 0o755); err != nil {
			return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
		}
	}
	info = nfpm.WithDefaults(info)
	// WithDefaults sets a zero umask to 0o002; say again that modes are exact.
	info.Umask = 0
	name := deb.Default.ConventionalFileName(info)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("release: deb %s: %w", p.Name, err)
	}
	return name, nil
}

// manContents gzips p's man pages into stage as Debian installs them. The
// gzip header carries no name or time, so a package is the same bytes at
// every build of one commit.
func manContents(stage string, p Package) (files.Contents, error) {
	if p.ManPages == "" {
		return nil, nil
	}
	pages, err := filepath.Glob(filepath.Join(p.ManPages, "*.1"))
	if err != nil {
		return nil, err
	}
	if len(pages) == 0 {
		return nil, fmt.Errorf("no man pages in %s", p.ManPages)
	}
	slices.Sort(pages)
	var out files.Contents
	for _, page := range pages {
		body, err := os.ReadFile(page)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			return nil, err
		}
		if _, err := zw.Write(body); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		name := filepath.Base(page) + ".gz"
		staged := filepath.Join(stage, "man", name)
		if err := os.MkdirAll(filepath.Dir(staged), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(staged, buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		out = append(out, &files.Content{Source: staged, Destination: "/usr/share/man/man1/" + name,
			FileInfo: &files.ContentFileInfo{Mode: 0o644, Owner: "root", Group: "root", MTime: p.MTime}})
	}
	return out, nil
}
