package images

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckDisk(t *testing.T) {
	needQemuImg(t)
	// A normalised base and a VM disk on it, as the agent makes them.
	body := qcow2Image(t, "16M")
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	img, err := ensure(t, c, srv.URL+"/base.qcow2", "")
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "vm.qcow2")
	if err := CreateVMDisk(context.Background(), img, good, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := CheckDisk(good); err != nil {
		t.Errorf("CheckDisk(a disk on a normalised base) = %v", err)
	}

	s := newSecret(t)
	dir := t.TempDir()
	legacy := filepath.Join(dir, "legacy.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path, legacy, "16M")
	onLegacy := filepath.Join(dir, "on-legacy.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", legacy, "-F", "qcow2", onLegacy, "1G")
	dataFile := filepath.Join(dir, "data-file.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path, dataFile, "16M")
	noFormat := filepath.Join(dir, "no-format.qcow2")
	if err := os.WriteFile(noFormat, withBackingName(t, qcow2Image(t, "16M"), img.Path), 0o644); err != nil {
		t.Fatal(err)
	}
	jsonBacking := filepath.Join(dir, "json.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"`+s.path+`"}}`, "-F", "raw", jsonBacking, "16M")
	s.watch(t)
	for name, disk := range map[string]string{
		"on a base with a data file": onLegacy, "with a data file": dataFile,
		"backing without format": noFormat, "json backing": jsonBacking,
	} {
		err := CheckDisk(disk)
		if ErrorCode(err) != CodeExternalReference {
			t.Errorf("CheckDisk(disk %s) = %v, want code %s", name, err, CodeExternalReference)
		}
	}
	if s.opened(t) {
		t.Error("CheckDisk opened the host file an image names")
	}
}
