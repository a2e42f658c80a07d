package readme

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDevShNamesATakenPort: make dev checks its three listeners before it
// starts anything and names the one taken with the variable that moves it;
// DEV_PORT_BASE moves all three together.
func TestDevShNamesATakenPort(t *testing.T) {
	script, err := filepath.Abs("../../scripts/dev.sh")
	if err != nil {
		t.Fatal(err)
	}
	// Stand-ins for the binaries: the port check comes before any is run,
	// and each records that it ran.
	bin := t.TempDir()
	ran := filepath.Join(t.TempDir(), "ran")
	for _, b := range []string{"otherix-api", "otherix-agent", "otherix"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\necho \"$0\" >> "+ran+"\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A port held here whose two predecessors are free, so that only the
	// third listener of DEV_PORT_BASE=taken-2 collides.
	var l net.Listener
	for range 50 {
		cand, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := cand.Addr().(*net.TCPAddr).Port
		free := p > 2
		for i := 1; i <= 2 && free; i++ {
			if x, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p-i)); err != nil {
				free = false
			} else {
				x.Close()
			}
		}
		if free {
			l = cand
			break
		}
		cand.Close()
	}
	if l == nil {
		t.Fatal("no port with two free predecessors")
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"DEV_LISTEN", []string{"DEV_LISTEN=127.0.0.1:" + strconv.Itoa(taken)},
			[]string{"127.0.0.1:" + strconv.Itoa(taken) + " (DEV_LISTEN) is already in use", "DEV_PORT_BASE=N make dev"}},
		{"DEV_PORT_BASE moves the agent API too", []string{"DEV_PORT_BASE=" + strconv.Itoa(taken-2)},
			[]string{"127.0.0.1:" + strconv.Itoa(taken) + " (DEV_AGENT_API_LISTEN) is already in use"}},
		{"bad DEV_PORT_BASE", []string{"DEV_PORT_BASE=70000"}, []string{"DEV_PORT_BASE=70000: want a port number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command("bash", script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), append(tc.env, "BIN_DIR="+bin)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("dev.sh succeeded:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("dev.sh output lacks %q:\n%s", w, out)
				}
			}
			if b, _ := os.ReadFile(ran); len(b) > 0 {
				t.Fatalf("dev.sh ran %s before refusing", b)
			}
			if _, err := os.Stat(filepath.Join(dir, ".dev")); err == nil {
				t.Fatal("dev.sh created .dev before refusing")
			}
		})
	}
}

// TestDevShReplicasArgument: --replicas takes an odd count (an even one
// would keep a replica a learner), refused before anything runs; in cluster
// mode every replica's ports are checked too.
func TestDevShReplicasArgument(t *testing.T) {
	script, err := filepath.Abs("../../scripts/dev.sh")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, b := range []string{"otherix-api", "otherix-agent", "otherix"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--replicas", "2"}, nil, "want an odd number"},
		{[]string{"--replicas=x"}, nil, "want an odd number"},
		{[]string{"--bogus"}, nil, "unknown argument --bogus"},
		// r3's peer listener is DEV_PORT_BASE+22.
		{[]string{"--replicas", "3"}, []string{"DEV_PORT_BASE=" + strconv.Itoa(taken-22)},
			"127.0.0.1:" + strconv.Itoa(taken) + " is already in use (another make dev-cluster?)"},
	} {
		dir := t.TempDir()
		cmd := exec.Command("bash", append([]string{script}, tc.args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append(tc.env, "BIN_DIR="+bin)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("dev.sh %v: %v, want %q:\n%s", tc.args, err, tc.want, out)
		}
		if _, err := os.Stat(filepath.Join(dir, ".dev-cluster")); err == nil {
			t.Errorf("dev.sh %v created .dev-cluster before refusing", tc.args)
		}
	}
}
