//go:build release

package release

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// dpkgScript installs, reinstalls, upgrades, removes and purges the packages
// with the real dpkg inside a throwaway copy of this machine's root: an
// overlay of / in a private mount namespace, so the users, files and dpkg
// database it changes never reach the host. It fails (exit 1, saying
// what) on the first expectation that does not hold.
const dpkgScript = `
set -eu
fail() { echo "FAIL: $*"; exit 1; }
T=$1; V1=$2; V2=$3; ARCH=$4
mount -t tmpfs tmpfs "$T/mnt"
mkdir -p "$T/mnt/up" "$T/mnt/work" "$T/mnt/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$T/mnt/up",workdir="$T/mnt/work" "$T/mnt/root"
R="$T/mnt/root"
mount --bind /dev "$R/dev"
mount -t proc proc "$R/proc"
mkdir -p "$R/debs"
cp "$T"/debs/*.deb "$R/debs/"
inroot() { chroot "$R" sh -c "$*"; }

echo "== install $V1"
inroot "dpkg -i /debs/otherix-api_${V1}_$ARCH.deb /debs/otherix-agent_${V1}_$ARCH.deb /debs/otherix_${V1}_$ARCH.deb"
inroot "getent passwd otherix" | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "system user otherix"
inroot "getent passwd otherix-qemu" >/dev/null || fail "system user otherix-qemu"
[ "$(inroot 'stat -c "%U:%G %a" /var/lib/otherix')" = "otherix:otherix 700" ] || fail "/var/lib/otherix: $(inroot 'stat -c "%U:%G %a" /var/lib/otherix')"
[ "$(inroot 'stat -c "%U:%G %a" /var/lib/otherix-agent')" = "root:root 700" ] || fail "/var/lib/otherix-agent"
[ "$(inroot 'stat -c "%U:%G %a" /etc/otherix/api.yaml')" = "root:otherix 640" ] || fail "/etc/otherix/api.yaml"
[ "$(inroot 'stat -c "%U:%G %a" /etc/default/otherix-api')" = "root:root 600" ] || fail "/etc/default/otherix-api"
inroot "otherix-api --version" | grep -qx "otherix-api version $V1" || fail "otherix-api --version"
inroot "otherix-agent version" | grep -q "^otherix-agent $V1 " || fail "otherix-agent version"
inroot "otherix version --client" | grep -q "^otherix $V1 " || fail "otherix version --client"

echo "== install $V1 again"
inroot "dpkg -i /debs/otherix-api_${V1}_$ARCH.deb /debs/otherix-agent_${V1}_$ARCH.deb"

echo "== state and an edited conffile survive an upgrade to $V2"
inroot "echo 'log: {format: json}' >> /etc/otherix/api.yaml"
inroot "echo etcd > /var/lib/otherix/data && chown otherix: /var/lib/otherix/data"
inroot "echo vm > /var/lib/otherix-agent/data"
inroot "dpkg --force-confold -i /debs/otherix-api_${V2}_$ARCH.deb /debs/otherix-agent_${V2}_$ARCH.deb"
[ "$(inroot "dpkg-query -W -f '\${Version}' otherix-api")" = "$V2" ] || fail "not upgraded"
inroot "grep -q 'format: json' /etc/otherix/api.yaml" || fail "conffile edit lost on upgrade"
[ "$(inroot 'stat -c "%U:%G %a" /var/lib/otherix')" = "otherix:otherix 700" ] || fail "/var/lib/otherix after upgrade"
inroot "otherix-api --version" | grep -qx "otherix-api version $V1" || fail "binary after upgrade"

echo "== remove keeps state and config"
inroot "dpkg -r otherix-api otherix-agent otherix"
inroot "test ! -e /usr/bin/otherix-api" || fail "binary left after remove"
inroot "test -f /var/lib/otherix/data && test -f /var/lib/otherix-agent/data" || fail "state lost on remove"
inroot "test -f /etc/otherix/api.yaml" || fail "config lost on remove"

echo "== purge keeps state, drops config"
inroot "dpkg -P otherix-api otherix-agent otherix"
inroot "test -f /var/lib/otherix/data && test -f /var/lib/otherix-agent/data" || fail "state lost on purge"
inroot "test ! -e /etc/otherix/api.yaml && test ! -e /etc/default/otherix-agent" || fail "conffiles left after purge"
echo "== ok"
`

// dpkgLifecycle runs dpkgScript over the packages of v1 (built by the
// caller) and a v2 made from the same binaries.
func dpkgLifecycle(t *testing.T, out, arch, v1 string) {
	if os.Geteuid() != 0 {
		t.Skip("not root: dpkg and the overlay need it (CI runs as root)")
	}
	for _, tool := range []string{"dpkg", "unshare", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	qemu := map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}[arch]
	if err := exec.Command("dpkg", "-s", qemu, "qemu-utils").Run(); err != nil {
		t.Skipf("%s and qemu-utils are not installed (otherix-agent depends on them; make deps installs them)", qemu)
	}
	dir := t.TempDir()
	debs := filepath.Join(dir, "debs")
	for _, d := range []string{debs, filepath.Join(dir, "mnt")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const v2 = "0.9.2"
	for _, b := range Binaries {
		src, err := os.ReadFile(filepath.Join(out, b+"_"+v1+"_"+arch+".deb"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(debs, b+"_"+v1+"_"+arch+".deb"), src, 0o644); err != nil {
			t.Fatal(err)
		}
		// The upgrade's package: same binary, next version.
		if _, err := WriteDeb(debs, Package{Name: b, Version: v2, Arch: arch,
			Binary: filepath.Join(out, b+"_"+v1+"_linux_"+arch), MTime: testTime}); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", dpkgScript, "sh", dir, v1, v2, arch)
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "== ok") {
		t.Fatalf("dpkg lifecycle: %v\n%s", err, b)
	}
	t.Logf("dpkg lifecycle:\n%s", b)
}
