package release

import (
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/otherix/otherix/deploy"
)

var testTime = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// standIn writes a small executable to stand in for a built program where
// the test is about packaging, not about the program.
func standIn(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+name+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersionRule(t *testing.T) {
	for v, ok := range map[string]bool{
		"1.2.3": true, "0.1.0": true, "10.20.30-rc.1": true,
		"v1.2.3": false, "1.2": false, "01.2.3": false, "1.2.3-dirty!": false, "ba0fefd-dirty": false, "": false,
	} {
		_, err := (&Options{Version: v, Out: "x", ModuleDir: ".", Date: testTime.Format(time.RFC3339)}).check()
		if got := err == nil; got != ok {
			t.Errorf("version %q: err %v, want ok=%v", v, err, ok)
		}
		if !ok && !errors.Is(err, ErrBadVersion) {
			t.Errorf("version %q: %v, want ErrBadVersion", v, err)
		}
	}
}

// TestPrepareOut: a directory of someone else's files is refused and left
// alone; one an earlier release made is emptied.
func TestPrepareOut(t *testing.T) {
	foreign := t.TempDir()
	keep := filepath.Join(foreign, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prepareOut(foreign); err == nil {
		t.Fatal("prepareOut emptied a directory it did not make")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("foreign file gone: %v", err)
	}
	ours := filepath.Join(t.TempDir(), "dist")
	if err := prepareOut(ours); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(ours, "otherix_0.0.1_amd64.deb")
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prepareOut(ours); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale artifact survived: %v", err)
	}
}

// wantFile is what one path of a package must be.
type wantFile struct {
	mode int64
	dir  bool
	// src, when set, is the deploy file the content must equal.
	src string
}

func TestDebContents(t *testing.T) {
	unit := "./lib/systemd/system/"
	tests := []struct {
		name      string
		arch      string
		files     map[string]wantFile
		conffiles []string
		depends   string
		scripts   bool
		man       map[string]string // man page name → its text, given to the package
	}{
		{
			name: "otherix-api", arch: "amd64",
			files: map[string]wantFile{
				"./usr/bin/otherix-api":                                        {mode: 0o755},
				unit + "otherix-api.service":                                   {mode: 0o644, src: "systemd/otherix-api.service"},
				"./etc/otherix/api.yaml":                                       {mode: 0o640, src: "config/api.yaml"},
				"./etc/default/otherix-api":                                    {mode: 0o600, src: "config/otherix-api.default"},
				"./var/lib/otherix":                                            {mode: 0o700, dir: true},
				"./usr/share/doc/otherix-api/examples/api-single.yaml":         {mode: 0o644, src: "examples/api-single.yaml"},
				"./usr/share/doc/otherix-api/examples/api-three-replicas.yaml": {mode: 0o644, src: "examples/api-three-replicas.yaml"},
			},
			conffiles: []string{"/etc/default/otherix-api", "/etc/otherix/api.yaml"},
			depends:   "passwd", scripts: true,
		},
		{
			name: "otherix-agent", arch: "arm64",
			files: map[string]wantFile{
				"./usr/bin/otherix-agent":                              {mode: 0o755},
				"./usr/share/doc/otherix-agent/examples/agent.default": {mode: 0o644, src: "examples/agent.default"},
				unit + "otherix-agent.service":                         {mode: 0o644, src: "systemd/otherix-agent.service"},
				"./etc/default/otherix-agent":                          {mode: 0o644, src: "config/otherix-agent.default"},
				"./var/lib/otherix-agent":                              {mode: 0o700, dir: true},
			},
			conffiles: []string{"/etc/default/otherix-agent"},
			depends:   "qemu-system-arm, qemu-utils, passwd", scripts: true,
		},
		{
			name: "otherix", arch: "amd64",
			files: map[string]wantFile{
				"./usr/bin/otherix":                        {mode: 0o755},
				"./usr/share/man/man1/otherix.1.gz":        {mode: 0o644},
				"./usr/share/man/man1/otherix-vm-get.1.gz": {mode: 0o644},
			},
			man: map[string]string{"otherix.1": ".TH OTHERIX 1\n", "otherix-vm-get.1": ".TH OTHERIX 1\n.SH NAME\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := standIn(t, tt.name)
			p := Package{Name: tt.name, Version: "1.2.3", Arch: tt.arch, Binary: bin, MTime: testTime}
			if tt.man != nil {
				p.ManPages = t.TempDir()
				for n, body := range tt.man {
					if err := os.WriteFile(filepath.Join(p.ManPages, n), []byte(body), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			name, err := WriteDeb(dir, p)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.name + "_1.2.3_" + tt.arch + ".deb"; name != want {
				t.Errorf("file name %q, want %q", name, want)
			}
			d := readDeb(t, filepath.Join(dir, name))
			if want := []string{"debian-binary", "control.tar.gz", "data.tar.gz"}; !slices.Equal(d.members, want) {
				t.Errorf("ar members %v, want %v", d.members, want)
			}
			for k, v := range map[string]string{"Package": tt.name, "Version": "1.2.3", "Architecture": tt.arch} {
				if d.control[k] != v {
					t.Errorf("control %s = %q, want %q", k, d.control[k], v)
				}
			}
			if d.control["Depends"] != tt.depends {
				t.Errorf("Depends %q, want %q", d.control["Depends"], tt.depends)
			}
			for p, w := range tt.files {
				e, ok := d.data[p]
				if !ok {
					t.Errorf("%s missing", p)
					continue
				}
				if e.mode != w.mode || (e.typ == '5') != w.dir || e.uid != 0 || e.gid != 0 {
					t.Errorf("%s: mode %o dir %v uid %d gid %d, want mode %o dir %v, root", p, e.mode, e.typ == '5', e.uid, e.gid, w.mode, w.dir)
				}
				if w.src != "" {
					src, _ := deploy.Files.ReadFile(w.src)
					if !bytes.Equal(e.body, src) {
						t.Errorf("%s differs from deploy/%s", p, w.src)
					}
				}
				if page, ok := strings.CutPrefix(p, "./usr/share/man/man1/"); ok {
					zr, err := gzip.NewReader(bytes.NewReader(e.body))
					if err != nil {
						t.Fatalf("%s: %v", p, err)
					}
					body, _ := io.ReadAll(zr)
					if want := tt.man[strings.TrimSuffix(page, ".gz")]; string(body) != want || !zr.ModTime.IsZero() || zr.Name != "" {
						t.Errorf("%s holds %q (time %v, name %q), want %q with no time or name", p, body, zr.ModTime, zr.Name, want)
					}
				}
				if !e.typeIsDir() && p == "./usr/bin/"+tt.name {
					if b, _ := os.ReadFile(bin); !bytes.Equal(e.body, b) {
						t.Errorf("%s is not the binary given", p)
					}
				}
			}
			// Nothing beyond what is listed, besides the parent directories.
			for p, e := range d.data {
				if _, ok := tt.files[p]; !ok && !e.typeIsDir() {
					t.Errorf("unexpected file %s", p)
				}
			}
			conf := strings.Fields(string(d.ctrl["./conffiles"].body))
			slices.Sort(conf)
			if !slices.Equal(conf, tt.conffiles) {
				t.Errorf("conffiles %v, want %v", conf, tt.conffiles)
			}
			for _, s := range []string{"postinst", "prerm"} {
				e, ok := d.ctrl["./"+s]
				if ok != tt.scripts {
					t.Errorf("%s present %v, want %v", s, ok, tt.scripts)
					continue
				}
				if !ok {
					continue
				}
				src, _ := deploy.Files.ReadFile("scripts/" + tt.name + "." + s)
				if e.mode != 0o755 || !bytes.Equal(e.body, src) {
					t.Errorf("%s: mode %o, same as deploy/scripts: %v", s, e.mode, bytes.Equal(e.body, src))
				}
			}
			for p, e := range d.data {
				if !e.mtime.Equal(testTime) {
					t.Errorf("%s: time %v, want the release time %v (reproducible packages)", p, e.mtime, testTime)
				}
			}
			dpkgCheck(t, filepath.Join(dir, name), tt.name)
		})
	}
}

func (e debEntry) typeIsDir() bool { return e.typ == '5' }

// dpkgCheck reads the package with Debian's own tool where it is installed:
// the format is what dpkg accepts, not only what our reader does.
func dpkgCheck(t *testing.T, deb, name string) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Log("dpkg-deb not installed: the package was read back with the Go reader only")
		return
	}
	out, err := exec.Command("dpkg-deb", "--field", deb, "Package").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != name {
		t.Errorf("dpkg-deb --field: %v %q", err, out)
	}
	out, err = exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "./usr/bin/"+name) {
		t.Errorf("dpkg-deb --contents: %v\n%s", err, out)
	}
}

// TestDebReproducible: the same inputs give the same bytes, so a release
// can be rebuilt and compared against its SHA256SUMS.
func TestDebReproducible(t *testing.T) {
	bin := standIn(t, "otherix-api")
	var sums []string
	for range 2 {
		dir := t.TempDir()
		name, err := WriteDeb(dir, Package{Name: "otherix-api", Version: "1.2.3", Arch: "amd64", Binary: bin, MTime: testTime})
		if err != nil {
			t.Fatal(err)
		}
		s, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, s)
	}
	if sums[0] != sums[1] {
		t.Errorf("two builds differ: %v", sums)
	}
}

func TestSums(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.deb", "a.deb"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteSums(dir, "SHA256SUMS", []string{"b.deb", "a.deb"}); err != nil {
		t.Fatal(err)
	}
	got, err := VerifySums(dir, "SHA256SUMS")
	if err != nil || !slices.Equal(got, []string{"a.deb", "b.deb"}) {
		t.Fatalf("VerifySums = %v, %v", got, err)
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum --check: %v\n%s", err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a.deb"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySums(dir, "SHA256SUMS"); err == nil || !strings.Contains(err.Error(), "a.deb") {
		t.Fatalf("a changed file passed: %v", err)
	}
}

// TestSBOMFromBuildInfo builds the release program itself (scripts/release:
// a Go binary that links nfpm, cyclonedx-go and go-containerregistry; test
// binaries record no modules), makes its SBOM, and checks the document
// parses as CycloneDX and lists exactly the modules the binary records.
func TestSBOMFromBuildInfo(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "release")
	cmd := exec.Command("go", "build", "-o", prog, "./scripts/release")
	cmd.Dir = moduleDir(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bi, err := buildinfo.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sbom.cdx.json")
	if err := WriteSBOM(path, SBOM{Version: "1.2.3", Commit: "c0ffee", Created: testTime, Binaries: []string{prog}}); err != nil {
		t.Fatal(err)
	}
	bom := decodeSBOM(t, path)
	if bom.SpecVersion != cdx.SpecVersion1_6 || bom.Metadata.Component.Version != "v1.2.3" || !strings.HasPrefix(bom.SerialNumber, "urn:uuid:") {
		t.Errorf("metadata: spec %v, component %+v, serial %q", bom.SpecVersion, bom.Metadata.Component, bom.SerialNumber)
	}
	comps := componentVersions(bom)
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		if comps[d.Path] != d.Version {
			t.Errorf("module %s@%s: SBOM has %q", d.Path, d.Version, comps[d.Path])
		}
	}
	if len(comps) != len(bi.Deps)+1 { // + std
		t.Errorf("%d components, want %d modules and std", len(comps), len(bi.Deps))
	}
	if comps["std"] != bi.GoVersion {
		t.Errorf("std %q, want %s", comps["std"], bi.GoVersion)
	}
	for _, m := range []string{"github.com/goreleaser/nfpm/v2", "github.com/CycloneDX/cyclonedx-go", "github.com/google/go-containerregistry"} {
		if comps[m] == "" {
			t.Errorf("%s missing", m)
		}
	}
	if deps := *bom.Dependencies; len(deps) != 1 || len(*deps[0].Dependencies) != len(comps) {
		t.Errorf("dependencies: the release must depend on every component")
	}
}

// moduleDir is the otherix module's root, two levels up from this package.
func moduleDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", d, err)
	}
	return d
}

func decodeSBOM(t *testing.T, path string) *cdx.BOM {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("SBOM does not parse as CycloneDX: %v", err)
	}
	return &bom
}

func componentVersions(bom *cdx.BOM) map[string]string {
	m := map[string]string{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			m[c.Name] = c.Version
		}
	}
	return m
}

// checkImage asserts what docs/operations.md says of the image: scratch
// base, one layer, non-root user, the binary as entrypoint, the data dir a
// volume owned by that user with mode 0700, and no shell.
func checkImage(t *testing.T, path, arch string, bin []byte) {
	t.Helper()
	im := readImage(t, path)
	c := im.config
	if c.OS != "linux" || c.Architecture != arch {
		t.Errorf("platform %s/%s, want linux/%s", c.OS, c.Architecture, arch)
	}
	if c.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (not root)", c.Config.User)
	}
	if !slices.Equal(c.Config.Entrypoint, []string{ImageBinary}) || len(c.Config.Cmd) != 0 {
		t.Errorf("entrypoint %v cmd %v, want [%s] and none", c.Config.Entrypoint, c.Config.Cmd, ImageBinary)
	}
	if _, ok := c.Config.Volumes[ImageDataDir]; !ok || len(c.Config.Volumes) != 1 {
		t.Errorf("volumes %v, want only %s", c.Config.Volumes, ImageDataDir)
	}
	if !slices.Contains(c.Config.Env, "OTHERIX_DATA_DIR="+ImageDataDir) {
		t.Errorf("env %v lacks the data dir", c.Config.Env)
	}
	if len(im.layers) != 1 {
		t.Fatalf("%d layers, want 1 on scratch", len(im.layers))
	}
	if ann := im.index.Manifests[0].Annotations; ann["io.containerd.image.name"] != ImageRepo+":"+c.Config.Labels["org.opencontainers.image.version"] {
		t.Errorf("annotations %v", ann)
	}
	files := im.layers[0]
	e, ok := files["./usr/bin/otherix-api"]
	if !ok || e.mode != 0o755 || !bytes.Equal(e.body, bin) {
		t.Errorf("binary: present %v mode %o, same bytes %v", ok, e.mode, bytes.Equal(e.body, bin))
	}
	if d := files["./var/lib/otherix"]; !d.typeIsDir() || d.mode != 0o700 || d.uid != ImageUID || d.gid != ImageGID {
		t.Errorf("data dir: %+v, want a 0700 directory owned by %d:%d", d, ImageUID, ImageGID)
	}
	if p := string(files["./etc/passwd"].body); !strings.Contains(p, "otherix:x:65532:65532:") {
		t.Errorf("/etc/passwd %q lacks the otherix user", p)
	}
	for p, e := range files {
		base := filepath.Base(p)
		if strings.HasSuffix(base, "sh") && !e.typeIsDir() || base == "busybox" {
			t.Errorf("image has %s: no shell is wanted", p)
		}
		if e.typ == '2' {
			t.Errorf("image has a symlink %s", p)
		}
	}
	// No history entry may run a shell (scratch has none to run).
	h := c.History
	if len(h) != 1 || strings.Contains(h[0].CreatedBy, "/bin/sh") {
		t.Errorf("history %+v", h)
	}
}

func TestImage(t *testing.T) {
	bin := standIn(t, "otherix-api")
	b, _ := os.ReadFile(bin)
	dir := t.TempDir()
	name, err := WriteImage(dir, Image{Version: "1.2.3", Commit: "c0ffee", Arch: "arm64", Binary: bin, Created: testTime})
	if err != nil {
		t.Fatal(err)
	}
	if name != "otherix-api_1.2.3_linux_arm64.oci.tar" {
		t.Errorf("name %q", name)
	}
	checkImage(t, filepath.Join(dir, name), "arm64", b)
	// The same inputs give the same archive.
	again := t.TempDir()
	if _, err := WriteImage(again, Image{Version: "1.2.3", Commit: "c0ffee", Arch: "arm64", Binary: bin, Created: testTime}); err != nil {
		t.Fatal(err)
	}
	s1, _ := fileSHA256(filepath.Join(dir, name))
	s2, _ := fileSHA256(filepath.Join(again, name))
	if s1 != s2 {
		t.Errorf("two builds of one image differ")
	}
}
