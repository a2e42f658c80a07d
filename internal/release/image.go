package release

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/otherix/otherix/internal/buildinfo"
)

// The image's fixed facts; docs/operations.md and the image test rely on them.
const (
	// ImageUID and ImageGID are the otherix user in the image: not root,
	// and the same number distroless images use for "nonroot".
	ImageUID = 65532
	ImageGID = 65532
	// ImageDataDir is the data dir, declared a volume.
	ImageDataDir = "/var/lib/otherix"
	// ImageBinary is the entrypoint.
	ImageBinary = "/usr/bin/otherix-api"
	// ImageRepo is the name the image carries in the archive.
	ImageRepo = "otherix/otherix-api"
)

// Image describes one OCI image of otherix-api.
type Image struct {
	Version, Commit string
	Arch            string
	// Binary is otherix-api built for Arch (static: the image has no libc).
	Binary string
	// Created is the image's creation time and every file's time.
	Created time.Time
}

// ImageOptions say what `make image` builds: one architecture, with any
// version (a dev build is tagged with its git describe).
type ImageOptions struct {
	Version, Commit, Date string
	ModuleDir, Out, Arch  string
	Go                    string
}

// BuildImage builds otherix-api for o.Arch and writes its image to o.Out,
// returning the file name.
func BuildImage(ctx context.Context, o ImageOptions) (string, error) {
	created, err := time.Parse(time.RFC3339, o.Date)
	if err != nil {
		return "", fmt.Errorf("release: image: date %q: %w", o.Date, err)
	}
	if o.Go == "" {
		o.Go = "go"
	}
	tmp, err := os.MkdirTemp("", "otherix-image-")
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "otherix-api")
	if err := BuildBinary(ctx, o.Go, o.ModuleDir, "otherix-api", o.Arch, bin, buildinfo.LDFlags(o.Version, o.Commit, o.Date)); err != nil {
		return "", err
	}
	// A new or empty dist/ is marked as the release builder's, so that a
	// later `make release` may empty it.
	if entries, err := os.ReadDir(o.Out); err != nil || len(entries) == 0 {
		if err := prepareOut(o.Out); err != nil {
			return "", err
		}
	}
	return WriteImage(o.Out, Image{Version: o.Version, Commit: o.Commit, Arch: o.Arch, Binary: bin, Created: created.UTC()})
}

// WriteImage writes im as an OCI image layout in a tar archive
// (otherix-api_<version>_linux_<arch>.oci.tar) in dir, loadable with
// `docker load`, `podman load` or `skopeo copy oci-archive:…`.
//
// The image is built on scratch: one layer with the static binary, a
// passwd and group file naming the otherix user, an nsswitch.conf, /tmp and
// the data dir. There is no shell and no package manager; the API needs no
// public CA bundle (it talks TLS only under its own cluster CA).
func WriteImage(dir string, im Image) (string, error) {
	bin, err := os.ReadFile(im.Binary)
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	rootfs, err := rootfsTar(bin, im.Created)
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(rootfs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	created := v1.Time{Time: im.Created}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: im.Arch,
		OS:           "linux",
		Created:      created,
		Config: v1.Config{
			User:       strconv.Itoa(ImageUID) + ":" + strconv.Itoa(ImageGID),
			Entrypoint: []string{ImageBinary},
			WorkingDir: "/",
			// A container is reached from outside its network namespace:
			// listen on every address, unlike the loopback default.
			Env: []string{
				"OTHERIX_DATA_DIR=" + ImageDataDir,
				"OTHERIX_LISTEN=0.0.0.0:7080",
				"OTHERIX_AGENT_LISTEN=0.0.0.0:7443",
			},
			Volumes:      map[string]struct{}{ImageDataDir: {}},
			ExposedPorts: map[string]struct{}{"7080/tcp": {}, "7443/tcp": {}},
			StopSignal:   "SIGTERM",
			Labels: map[string]string{
				"org.opencontainers.image.title":    "otherix-api",
				"org.opencontainers.image.version":  im.Version,
				"org.opencontainers.image.revision": im.Commit,
				"org.opencontainers.image.created":  im.Created.Format(time.RFC3339),
			},
		},
	})
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: created, CreatedBy: "otherix internal/release", Comment: "otherix-api " + im.Version,
	}})
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}

	stage, err := os.MkdirTemp("", "otherix-oci-")
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	defer os.RemoveAll(stage)
	p, err := layout.Write(stage, empty.Index)
	if err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	if err := p.AppendImage(img,
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: im.Arch}),
		layout.WithAnnotations(map[string]string{
			// The OCI name is the tag; containerd (and so docker load)
			// reads the full reference from its own annotation.
			"org.opencontainers.image.ref.name": im.Version,
			"io.containerd.image.name":          ImageRepo + ":" + im.Version,
		})); err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	name := fmt.Sprintf("otherix-api_%s_linux_%s.oci.tar", im.Version, im.Arch)
	if err := tarDir(stage, filepath.Join(dir, name), im.Created); err != nil {
		return "", fmt.Errorf("release: image: %w", err)
	}
	return name, nil
}

// rootfsTar is the image's only layer.
func rootfsTar(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: mtime, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\notherix:x:%d:%d:otherix:%s:/sbin/nologin\n", ImageUID, ImageGID, ImageDataDir)
	group := fmt.Sprintf("root:x:0:\notherix:x:%d:\n", ImageGID)
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/bin", 0o755, 0) },
		func() error { return file("usr/bin/otherix-api", 0o755, bin) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return dir("var/lib", 0o755, 0) },
		// The data dir: the otherix user's alone, as on a host.
		func() error { return dir("var/lib/otherix", 0o700, ImageUID) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir archives the OCI layout in src as out, in a stable order with
// fixed times, so one build's archive is byte-identical to another's.
func tarDir(src, out string, mtime time.Time) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == src {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
