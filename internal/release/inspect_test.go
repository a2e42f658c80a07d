package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blakesmith/ar"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// debEntry is one file of a package as dpkg would unpack it.
type debEntry struct {
	mode       int64
	typ        byte
	uid, gid   int
	body       []byte
	uname, grp string
	mtime      time.Time
}

// debFile is a .deb read back: its ar members, control fields, control
// files and data entries.
type debFile struct {
	members []string
	control map[string]string
	ctrl    map[string]debEntry // conffiles, postinst, prerm, md5sums, control
	data    map[string]debEntry // "./usr/bin/otherix-api"
}

// readDeb parses a .deb with an ar reader and archive/tar, as dpkg-deb
// would, so the test needs nothing from the host.
func readDeb(t *testing.T, path string) *debFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &debFile{control: map[string]string{}, ctrl: map[string]debEntry{}, data: map[string]debEntry{}}
	r := ar.NewReader(f)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: ar: %v", path, err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		d.members = append(d.members, name)
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		switch name {
		case "debian-binary":
			if string(b) != "2.0\n" {
				t.Errorf("%s: debian-binary %q", path, b)
			}
		case "control.tar.gz":
			d.ctrl = readTarGz(t, b)
		case "data.tar.gz":
			d.data = readTarGz(t, b)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(d.ctrl["./control"].body))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok && !strings.HasPrefix(k, " ") {
			d.control[k] = v
		}
	}
	return d
}

func readTarGz(t *testing.T, b []byte) map[string]debEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return readTar(t, zr)
}

func readTar(t *testing.T, r io.Reader) map[string]debEntry {
	t.Helper()
	out := map[string]debEntry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := h.Name
		if !strings.HasPrefix(name, "./") && !strings.HasPrefix(name, "/") {
			name = "./" + name
		}
		out[strings.TrimSuffix(name, "/")] = debEntry{mode: h.Mode & 0o7777, typ: h.Typeflag, uid: h.Uid, gid: h.Gid,
			body: body, uname: h.Uname, grp: h.Gname, mtime: h.ModTime}
	}
}

// ociImage is an image read back from its archive.
type ociImage struct {
	index  v1.IndexManifest
	config *v1.ConfigFile
	layers []map[string]debEntry
	img    v1.Image
}

// readImage unpacks an .oci.tar and loads it with go-containerregistry's
// layout reader, the way a registry client would.
func readImage(t *testing.T, path string) *ociImage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("archive entry %q escapes", h.Name)
		}
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI layout: %v", path, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, want 1", path, len(im.Manifests))
	}
	img, err := ii.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := &ociImage{index: *im, config: cfg, img: img}
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		out.layers = append(out.layers, readTar(t, rc))
		rc.Close()
	}
	return out
}
