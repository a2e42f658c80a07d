//go:build readme

package readme

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevShCluster runs `scripts/dev.sh --replicas 3` (make dev-cluster)
// with freshly built binaries: it prints three replicas and the members,
// the CLI it logged in sees three healthy voters, and an interrupt stops
// every process it started (three replicas and the agent) and frees their
// ports. A second run restarts the cluster from its data dirs; a run
// without --replicas (make dev) still runs one API and the agent.
func TestDevShCluster(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/otherix-api", "./cmd/otherix-agent", "./cmd/otherix")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	base := freeRange(t, 24)
	clusterDir, singleDir := t.TempDir(), t.TempDir()
	for run, rc := range []struct {
		dir  string
		args []string
		apis int
	}{
		{clusterDir, []string{"--replicas", "3"}, 3},
		{clusterDir, []string{"--replicas", "3"}, 3},
		{singleDir, nil, 1},
	} {
		dir := rc.dir
		cmd := exec.Command("bash", append([]string{filepath.Join(root, "scripts/dev.sh")}, rc.args...)...)
		cmd.Dir = dir
		// The agent's data plane stays off: nothing on this host changes.
		cmd.Env = append(cleanEnv(), "DEV_DIR="+dir, "DEV_PORT_BASE="+strconv.Itoa(base), "BIN_DIR="+bin,
			"DEV_AGENT_FLAGS=--data-plane off --accel tcg")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		banner := make(chan string, 1)
		go func() {
			var b strings.Builder
			sc := bufio.NewScanner(stdout)
			sent := false
			for sc.Scan() {
				b.WriteString(sc.Text() + "\n")
				if !sent && strings.Contains(sc.Text(), "Ctrl-C stops") {
					banner <- b.String()
					sent = true
				}
			}
			_, _ = io.Copy(io.Discard, stdout)
			exited <- cmd.Wait()
		}()
		var out string
		select {
		case out = <-banner:
		case err := <-exited:
			t.Fatalf("run %d: dev.sh exited early: %v\n%s", run, err, stderr.String())
		case <-time.After(4 * time.Minute):
			_ = cmd.Process.Signal(syscall.SIGINT)
			t.Fatalf("run %d: no banner after 4 minutes\n%s", run, stderr.String())
		}

		pids := startedPIDs(t, stderr.String())
		if len(pids) != rc.apis+1 {
			t.Fatalf("run %d: dev.sh reported %d processes, want %d APIs and the agent:\n%s", run, len(pids), rc.apis, stderr.String())
		}
		if rc.apis > 1 && (!strings.Contains(out, "replica r3") || !strings.Contains(out, "Members:") || !strings.Contains(out, "kill -9 ")) {
			t.Fatalf("run %d: banner lacks the replicas, the members or how to kill one:\n%s", run, out)
		}
		// The CLI config dev.sh logged in with sees three healthy voters.
		cli := exec.Command(filepath.Join(bin, "otherix"), "cluster", "members", "-o", "json")
		cli.Env = append(cleanEnv(), "OTHERIX_CONFIG="+filepath.Join(dir, "otherix-config"))
		js, err := cli.Output()
		if err != nil {
			t.Fatalf("run %d: cluster members: %v", run, err)
		}
		var l struct {
			Items []struct {
				Name, Role string
				Healthy    bool
			}
		}
		voters := 0
		if json.Unmarshal(js, &l) == nil {
			for _, m := range l.Items {
				if m.Role == "voter" && m.Healthy {
					voters++
				}
			}
		}
		if voters != rc.apis {
			t.Fatalf("run %d: %d healthy voters, want %d:\n%s", run, voters, rc.apis, js)
		}

		// Ctrl-C: the script stops what it started, and only that.
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("run %d: dev.sh still running 2 minutes after the interrupt", run)
		}
		for name, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("run %d: %s (pid %d) outlived dev.sh: %v", run, name, pid, err)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for p := base; p < base+24; p++ {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), 200*time.Millisecond); err == nil {
				c.Close()
				t.Errorf("run %d: port %d still open after the interrupt", run, p)
			}
		}
		if t.Failed() {
			t.Fatalf("dev.sh output:\n%s", stderr.String())
		}
	}
}

// startedPIDs reads dev.sh's "<what> started (pid N" lines.
func startedPIDs(t *testing.T, log string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range regexp.MustCompile(`dev: (otherix-api(?: r\d)?|otherix-agent) started \(pid (\d+)`).FindAllStringSubmatch(log, -1) {
		pid, _ := strconv.Atoi(m[2])
		out[m[1]] = pid
	}
	return out
}

// cleanEnv is the environment without DEV_* and OTHERIX_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DEV_") && !strings.HasPrefix(kv, "OTHERIX_") {
			env = append(env, kv)
		}
	}
	return env
}

// freeRange finds n consecutive free loopback ports.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base+n > 65535 {
			continue
		}
		free := true
		for p := base; p < base+n && free; p++ {
			x, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				continue
			}
			x.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no range of free ports")
	return 0
}
