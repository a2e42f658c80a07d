//go:build e2e

package guest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// vm is one QEMU process booting an overlay of the test guest image.
type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	started time.Time
	serial  string // log of everything the guest wrote to ttyS0
	console string // unix socket of ttyS0
	qmp     string // unix socket of QMP
	exited  chan struct{}
	waitErr error
	stderr  lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// shortTempDir returns a fresh directory with a short path: unix socket
// paths must fit in 108 bytes, and t.TempDir can be long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "otxguest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// makeSeed writes a NoCloud seed ISO (volume label cidata) into dir and
// returns its path. userData is left out when empty.
func makeSeed(t *testing.T, dir, metaData, userData string) string {
	t.Helper()
	src := filepath.Join(dir, "seed")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"meta-data": metaData}
	if userData != "" {
		files["user-data"] = userData
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	iso := filepath.Join(dir, "seed.iso")
	run(t, "genisoimage", "-quiet", "-V", "cidata", "-J", "-r", "-o", iso, src)
	// Tools that look labels up (blkid, busybox findfs) ignore tiny devices.
	if fi, err := os.Stat(iso); err != nil {
		t.Fatal(err)
	} else if fi.Size() < 1<<20 {
		if err := os.Truncate(iso, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	return iso
}

// startVM boots an overlay of image, with seed (if not empty) as a
// read-only virtio disk.
func startVM(t *testing.T, image, seed string) *vm {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (apt-get install qemu-system-x86): %v", err)
	}
	dir := shortTempDir(t)
	overlay := filepath.Join(dir, "overlay.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, overlay)

	accel := os.Getenv("OTHERIX_TEST_ACCEL") // KVM of nested hosts cannot boot guests
	if accel == "" {
		accel = "tcg"
	}
	v := &vm{
		t:       t,
		serial:  filepath.Join(dir, "serial.log"),
		console: filepath.Join(dir, "console.sock"),
		qmp:     filepath.Join(dir, "qmp.sock"),
		exited:  make(chan struct{}),
	}
	args := []string{
		"-machine", "q35", "-accel", accel, "-m", "256",
		"-nographic", "-nodefaults", "-no-user-config", "-display", "none",
		"-drive", "file=" + overlay + ",if=virtio,format=qcow2",
	}
	if seed != "" {
		args = append(args, "-drive", "file="+seed+",if=virtio,readonly=on,format=raw")
	}
	args = append(args,
		// The logfile keeps all output, whether a client is connected or not.
		"-chardev", "socket,id=ttyS0,path="+v.console+",server=on,wait=off,logfile="+v.serial,
		"-serial", "chardev:ttyS0",
		"-qmp", "unix:"+v.qmp+",server=on,wait=off",
	)
	v.cmd = exec.Command(qemu, args...)
	v.cmd.Stdout = &v.stderr
	v.cmd.Stderr = &v.stderr
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			v.cmd.Process.Kill()
			<-v.exited
		}
		if t.Failed() {
			out, _ := os.ReadFile(v.serial)
			t.Logf("qemu output:\n%s\nserial output:\n%s", v.stderr.String(), out)
		}
	})
	return v
}

// waitSerial polls the serial log until re matches or the deadline passes,
// and returns the match.
func (v *vm) waitSerial(re *regexp.Regexp, timeout time.Duration) string {
	v.t.Helper()
	var m []byte
	if !testutil.Until(timeout, 50*time.Millisecond, func() bool {
		data, _ := os.ReadFile(v.serial)
		if m = re.Find(data); m != nil {
			return true
		}
		select {
		case <-v.exited:
			v.t.Fatalf("qemu exited (%v) before the serial output matched %q", v.waitErr, re)
		default:
		}
		return false
	}) {
		v.t.Fatalf("no %q on the serial console within %v", re, timeout)
	}
	return string(m)
}

// waitExit waits until QEMU exits by itself.
func (v *vm) waitExit(timeout time.Duration) {
	v.t.Helper()
	select {
	case <-v.exited:
		if v.waitErr != nil {
			v.t.Errorf("qemu exited with %v", v.waitErr)
		}
	case <-time.After(timeout):
		v.t.Fatalf("qemu still running %v after system_powerdown", timeout)
	}
}

// qmpCommand connects to QMP, negotiates capabilities and runs one command.
func (v *vm) qmpCommand(command string) {
	v.t.Helper()
	conn, err := net.DialTimeout("unix", v.qmp, 5*time.Second)
	if err != nil {
		v.t.Fatalf("qmp: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(bufio.NewReader(conn))

	var greeting map[string]json.RawMessage
	if err := dec.Decode(&greeting); err != nil {
		v.t.Fatalf("qmp greeting: %v", err)
	}
	if _, ok := greeting["QMP"]; !ok {
		v.t.Fatalf("qmp: unexpected greeting %v", greeting)
	}
	exchange := func(cmd string) {
		if _, err := fmt.Fprintf(conn, "{\"execute\":%q}\n", cmd); err != nil {
			v.t.Fatalf("qmp %s: %v", cmd, err)
		}
		for { // skip events (POWERDOWN may come before the return)
			var resp struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Class, Desc string
				} `json:"error"`
				Event string `json:"event"`
			}
			if err := dec.Decode(&resp); err != nil {
				v.t.Fatalf("qmp %s: %v", cmd, err)
			}
			if resp.Error != nil {
				v.t.Fatalf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
			}
			if resp.Return != nil {
				return
			}
		}
	}
	exchange("qmp_capabilities")
	exchange(command)
}

const bootTimeout = 120 * time.Second

func TestBootReadsSeedAndPowersOff(t *testing.T) {
	image := Image(t)
	dir := shortTempDir(t)
	seed := makeSeed(t, dir,
		"instance-id: i-test123\nlocal-hostname: g1\n",
		"#!/bin/sh\necho user-data says hi\nexit 3\n")

	v := startVM(t, image, seed)
	line := v.waitSerial(regexp.MustCompile(`(?m)^`+ReadyMarker+` instance-id=i-test123[^\r\n]*`), bootTimeout)
	t.Logf("boot: QEMU start -> marker %v (accel tcg unless OTHERIX_TEST_ACCEL)", time.Since(v.started).Round(time.Millisecond))
	if want := ReadyMarker + " instance-id=i-test123 hostname=g1"; line != want {
		t.Errorf("marker line %q, want %q", line, want)
	}
	// Not anchored to a line start: the console shell starts while user-data
	// runs, and its prompt may land on the same line as the marker.
	if done := v.waitSerial(regexp.MustCompile(UserDataDoneMarker+` rc=\d+`), 30*time.Second); done != UserDataDoneMarker+" rc=3" {
		t.Errorf("user-data: got %q, want rc=3", done)
	}
	v.waitSerial(regexp.MustCompile(`user-data says hi`), time.Second)

	sent := time.Now()
	v.qmpCommand("system_powerdown")
	v.waitExit(30 * time.Second)
	t.Logf("system_powerdown -> QEMU exit %v", time.Since(sent).Round(time.Millisecond))
}

func TestConsoleShell(t *testing.T) {
	image := Image(t)
	v := startVM(t, image, "") // no seed: the guest must say so

	v.waitSerial(regexp.MustCompile(`(?m)^`+ReadyMarker+` instance-id=none\r?$`), bootTimeout)
	t.Logf("boot without seed: QEMU start -> marker %v", time.Since(v.started).Round(time.Millisecond))

	conn, err := net.DialTimeout("unix", v.console, 5*time.Second)
	if err != nil {
		t.Fatalf("console: %v", err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn) // the log file records it; keep the chardev drained

	// The shell may still be starting (and querying the terminal): type the
	// command again until it answers. "hello-42" appears only when the shell
	// evaluated $((6*7)), not in the echo of what was typed.
	want := regexp.MustCompile(`(?m)^hello-42\r?$`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := io.WriteString(conn, "echo hello-$((6*7))\n"); err != nil {
			t.Fatalf("console write: %v", err)
		}
		if testutil.Until(3*time.Second, 50*time.Millisecond, func() bool {
			data, _ := os.ReadFile(v.serial)
			return want.Match(data)
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell on ttyS0 did not answer")
		}
	}
	v.qmpCommand("system_powerdown")
	v.waitExit(30 * time.Second)
}
