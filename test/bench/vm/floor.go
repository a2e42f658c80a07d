package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/otherix/otherix/nodeagent/qemu"
)

// floor is the least any tool can do to create a VM from a cached image:
// one qemu-img overlay and one QEMU launched as the agent launches it
// (qemu.Start: q35, virtio-blk, serial and QMP sockets, -S, -sandbox, files
// inherited), then QMP capabilities, cont and query-status until "running".
// No seed ISO and no state file: those are work the agent does on top.
type floor struct {
	dir  string // short: QEMU's socket paths must fit in 107 bytes
	base string
	cfg  vmShape
	// procs are the running QEMUs by create index, for destroy.
	procs map[int]*qemu.Process
}

// vmShape is the VM every tool creates.
type vmShape struct {
	CPUs      int
	MemoryMiB int
	DiskBytes int64
	Accel     string
}

// createOne creates VM i and returns how long it took until QMP said running.
// The QEMU is left running; destroy ends it.
func (f *floor) createOne(i int) (time.Duration, error) {
	id := fmt.Sprintf("floor-%d", i)
	run := filepath.Join(f.dir, strconv.Itoa(i))
	if err := os.MkdirAll(run, 0o700); err != nil {
		return 0, err
	}
	disk := filepath.Join(run, "disk.qcow2")
	t0 := time.Now()
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", f.base,
		disk, strconv.FormatInt(f.cfg.DiskBytes, 10)).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	// qemu.Start is the agent's own launch: its argv, the files opened by
	// the caller and inherited (QEMU opens nothing by path), no daemonizing.
	proc, err := qemu.Start(context.Background(), qemu.Spec{ID: id, Accel: f.cfg.Accel, CPUs: f.cfg.CPUs,
		MemoryMiB: f.cfg.MemoryMiB, Disk: disk, RunDir: run, Sandbox: true})
	if err != nil {
		return 0, fmt.Errorf("qemu: %w", err)
	}
	if f.procs == nil {
		f.procs = map[int]*qemu.Process{}
	}
	f.procs[i] = proc
	m, err := dialQMP(qemu.QMPPath(run))
	if err != nil {
		return 0, err
	}
	defer m.Close()
	if _, err := m.do("cont"); err != nil {
		return 0, err
	}
	for {
		st, err := m.do("query-status")
		if err != nil {
			return 0, err
		}
		var s struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(st, &s)
		if s.Status == "running" {
			break
		}
	}
	return time.Since(t0), nil
}

// destroy ends VM i's QEMU and removes its files.
func (f *floor) destroy(i int) {
	run := filepath.Join(f.dir, strconv.Itoa(i))
	if p := f.procs[i]; p != nil {
		delete(f.procs, i)
		_ = p.Kill()
		select {
		case <-p.Exited():
		case <-time.After(5 * time.Second):
		}
		p.Close()
	}
	os.RemoveAll(run)
}

// qmpConn is the least QMP client: one command at a time, events skipped.
type qmpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(path string) (*qmpConn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	m := &qmpConn{c: c, r: bufio.NewReader(c)}
	if _, err := m.r.ReadBytes('\n'); err != nil { // greeting
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if _, err := m.do("qmp_capabilities"); err != nil {
		c.Close()
		return nil, err
	}
	return m, nil
}

func (m *qmpConn) Close() error { return m.c.Close() }

// do runs one command and returns its "return" value.
func (m *qmpConn) do(cmd string) (json.RawMessage, error) {
	if _, err := fmt.Fprintf(m.c, `{"execute":%q}`+"\n", cmd); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := m.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var r struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case r.Event != "":
			continue
		case r.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s", cmd, r.Error.Desc)
		}
		return r.Return, nil
	}
}
