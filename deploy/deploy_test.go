package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var units = []string{"otherix-api.service", "otherix-agent.service"}

// TestUnitsVerify runs systemd-analyze verify over both units. systemd is not
// PID 1 on every machine that runs this, but verify needs only the binary.
// It checks that each ExecStart command exists, so the units are copied
// with their /usr/bin paths pointing at stand-in executables. verify says
// "ignoring" and still exits 0 for a misspelt key or value, so any output
// at all fails the test.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd): the units are not verified here; see docs/operations.md for the manual check")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"otherix-api", "otherix-agent"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyUnits := func(t *testing.T, edit func(name, text string) string) []string {
		var paths []string
		for _, u := range units {
			b, err := Files.ReadFile("systemd/" + u)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(b), "/usr/bin/otherix-", bin+"/otherix-")
			p := filepath.Join(dir, u)
			if err := os.WriteFile(p, []byte(edit(u, text)), 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		return paths
	}
	verify := func(paths []string) (string, error) {
		out, err := exec.Command("systemd-analyze", append([]string{"verify"}, paths...)...).CombinedOutput()
		return string(out), err
	}
	t.Run("shipped units are clean", func(t *testing.T) {
		out, err := verify(copyUnits(t, func(_, s string) string { return s }))
		if err != nil || out != "" {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
	// The check itself must be able to fail: a misspelt KillMode is
	// exactly the mistake that would let an agent restart kill every VM.
	t.Run("a bad value is caught", func(t *testing.T) {
		out, _ := verify(copyUnits(t, func(name, s string) string {
			return strings.Replace(s, "\nKillMode=process\n", "\nKillMode=proces\n", 1)
		}))
		if !strings.Contains(out, "kill mode") {
			t.Fatalf("systemd-analyze verify did not report a bad KillMode: %q", out)
		}
	})
}

// unitKeys parses a unit into key → values (a key may repeat).
func unitKeys(t *testing.T, name string) map[string][]string {
	t.Helper()
	b, err := Files.ReadFile("systemd/" + name)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", name, line)
		}
		keys[k] = append(keys[k], v)
	}
	return keys
}

// TestUnitPolicy pins the settings the operations guide promises, so an
// edit that drops one fails here and not on a production host.
func TestUnitPolicy(t *testing.T) {
	want := map[string]map[string]string{
		"otherix-api.service": {
			"User": "otherix", "Group": "otherix",
			"StateDirectory": "otherix", "StateDirectoryMode": "0700",
			"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
			"CapabilityBoundingSet": "", "AmbientCapabilities": "",
			"Restart": "on-failure", "StartLimitBurst": "5",
		},
		"otherix-agent.service": {
			// Stopping or upgrading the agent must never kill QEMU.
			"KillMode":       "process",
			"StateDirectory": "otherix-agent", "StateDirectoryMode": "0700",
			"NoNewPrivileges": "yes", "Restart": "on-failure", "StartLimitBurst": "5",
			"TasksMax": "infinity",
		},
	}
	for unit, w := range want {
		got := unitKeys(t, unit)
		for k, v := range w {
			if vs := got[k]; len(vs) != 1 || vs[0] != v {
				t.Errorf("%s: %s=%q, want exactly %q", unit, k, vs, v)
			}
		}
	}
	agent := unitKeys(t, "otherix-agent.service")
	// QEMU inherits the agent's settings: TCG needs W+X memory, and QEMU
	// outlives the invocation a private /tmp would belong to.
	// ProtectClock implies a DeviceAllow= rule, which closes every device
	// not listed: /dev/kvm and /dev/net/tun with them.
	for _, k := range []string{"MemoryDenyWriteExecute", "PrivateTmp", "PrivateDevices", "KillSignal", "ExecStop",
		"ProtectClock", "DeviceAllow", "DevicePolicy"} {
		if v, ok := agent[k]; ok {
			t.Errorf("otherix-agent.service sets %s=%v, which breaks the VMs it leaves running", k, v)
		}
	}
	caps := strings.Fields(agent["CapabilityBoundingSet"][0])
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_SETUID", "CAP_SETGID"} {
		if !contains(caps, c) {
			t.Errorf("otherix-agent.service bounding set %v lacks %s", caps, c)
		}
	}
	for _, c := range []string{"CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_BOOT", "CAP_SYS_RAWIO", "CAP_MKNOD"} {
		if contains(caps, c) {
			t.Errorf("otherix-agent.service bounding set has %s, which it does not need", c)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// serviceControl matches a maintainer script line that would start, stop or
// restart a service (and with the agent, every VM's fate with it).
var serviceControl = regexp.MustCompile(`(?m)^[^#\n]*\b(systemctl[ \t]+(\S+[ \t]+)*(start|stop|restart|try-restart|reload-or-restart|kill|enable[ \t]+--now|disable[ \t]+--now)|invoke-rc\.d|deb-systemd-invoke|service[ \t]+otherix|kill[ \t]|pkill|killall|qemu-system|virsh)`)

// TestMaintainerScripts: every script parses with sh -n, states in a
// comment that it starts and stops nothing, and contains no command that
// would.
func TestMaintainerScripts(t *testing.T) {
	entries, err := Files.ReadDir("scripts")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Fatalf("scripts/: %d files, want postinst and prerm for both daemons", len(entries))
	}
	for _, e := range entries {
		b, err := Files.ReadFile("scripts/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if !strings.HasPrefix(s, "#!/bin/sh\n") {
			t.Errorf("%s: must start with #!/bin/sh", e.Name())
		}
		if m := serviceControl.FindString(s); m != "" {
			t.Errorf("%s: %q would start, stop or restart a service or a VM", e.Name(), m)
		}
		if !regexp.MustCompile(`(?i)never starts, stops or restarts|stops nothing`).MatchString(s) {
			t.Errorf("%s: no comment saying that it starts and stops nothing", e.Name())
		}
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = bytes.NewReader(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", e.Name(), err, out)
		}
	}
	// The pattern must catch what it is for.
	for _, bad := range []string{"systemctl restart otherix-agent\n", "deb-systemd-invoke stop otherix-api.service\n", "  systemctl --no-block stop otherix-agent\n", "kill $(cat /var/lib/otherix-agent/run/x/qemu.pid)\n"} {
		if serviceControl.FindString(bad) == "" {
			t.Errorf("serviceControl misses %q", bad)
		}
	}
}
