package vmactor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/cloudinit"
)

// tapNetwork is a Network that makes real taps in the host namespace, named
// "oxvt<pid><n>" so that they are recognisably the test's, and removes
// them on release and at cleanup.
type tapNetwork struct {
	t  *testing.T
	mu sync.Mutex
	// taps by VM id; ensured and released count the calls.
	taps     map[string][]string
	ensured  int
	released []string
}

func newTapNetwork(t *testing.T) *tapNetwork {
	n := &tapNetwork{t: t, taps: map[string][]string{}}
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, taps := range n.taps {
			for _, name := range taps {
				if l, err := netlink.LinkByName(name); err == nil {
					_ = netlink.LinkDel(l)
				}
			}
		}
	})
	return n
}

var tapSeq struct {
	sync.Mutex
	n int
}

func (n *tapNetwork) EnsureNICs(_ context.Context, vmID string, nics []messages.NICStatus) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ensured++
	if taps, ok := n.taps[vmID]; ok {
		return taps, nil
	}
	var names []string
	for range nics {
		tapSeq.Lock()
		tapSeq.n++
		name := fmt.Sprintf("oxvt%d%d", os.Getpid()%100000, tapSeq.n)
		tapSeq.Unlock()
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1390}, Mode: netlink.TUNTAP_MODE_TAP,
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
		if err := netlink.LinkAdd(tap); err != nil {
			return nil, fmt.Errorf("create tap %s: %w", name, err)
		}
		names = append(names, name)
		n.taps[vmID] = names // recorded at once, so cleanup finds it
	}
	return names, nil
}

func (n *tapNetwork) ReleaseNICs(_ context.Context, vmID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.released = append(n.released, vmID)
	for _, name := range n.taps[vmID] {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
	}
	delete(n.taps, vmID)
	return nil
}

func nicVM(f *fixture, name string) messages.AgentVM {
	vm := f.newVM(name)
	vm.NICs = []messages.NICStatus{{Network: "net1", NetworkID: "nw-1", IP: "10.10.0.2", PrefixLen: 24,
		MAC: "52:54:00:12:34:56", MTU: 1390}}
	return vm
}

// TestVMWithNICOnRealQEMU: a VM with one NIC has its tap made before QEMU
// starts, QEMU opens exactly that tap with the NIC's MAC, the seed carries
// the network-config, the NICs are listed for the data plane (also after an
// agent restart), and delete releases the taps.
func TestVMWithNICOnRealQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates tap devices")
	}
	f := newFixture(t)
	netw := newTapNetwork(t)
	closeManager(t, f.m)
	f.cfg.Network = netw
	f.start()

	vm := nicVM(f, "net-1")
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	mustSucceed(t, task)
	pid := task.VM.Pid
	netw.mu.Lock()
	taps := netw.taps[vm.ID]
	netw.mu.Unlock()
	if len(taps) != 1 {
		t.Fatalf("taps for the vm: %v", taps)
	}
	tap := taps[0]
	if _, err := netlink.LinkByName(tap); err != nil {
		t.Fatalf("tap %s: %v", tap, err)
	}

	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(string(cmdline), "\x00")
	// The agent opens the tap and QEMU inherits it: QEMU, unprivileged,
	// could not attach to it by name.
	wantNetdev := "tap,id=net0,fd=N"
	var netdev, device string
	for i, a := range args {
		if a == "-netdev" && i+1 < len(args) {
			netdev = args[i+1]
		}
		if a == "-device" && i+1 < len(args) && strings.HasPrefix(args[i+1], "virtio-net-pci") {
			device = args[i+1]
		}
	}
	if !strings.HasPrefix(netdev, "tap,id=net0,fd=") || strings.Contains(netdev, "ifname") {
		t.Errorf("-netdev %q, want like %q", netdev, wantNetdev)
	}
	if !strings.Contains(device, "mac=52:54:00:12:34:56") {
		t.Errorf("-device %q lacks the NIC's MAC", device)
	}
	if f.cfg.QEMUUser != nil {
		wantUID(t, pid, f.cfg.QEMUUser.Uid)
	}
	// The base image is recorded, so later starts never read it from the
	// overlay's header.
	if rec, err := loadRecord(f.m.vmStateDir(vm.ID)); err != nil || rec.Base == "" || rec.BaseFormat != "qcow2" ||
		!strings.HasPrefix(rec.Base, filepath.Dir(f.cfg.DiskDir)) {
		t.Errorf("record base %+v, %v", rec, err)
	}
	// QEMU holds the tap open: its fd's fdinfo names the interface.
	if !holdsTap(t, pid, tap) {
		t.Errorf("qemu pid %d has no fd on tap %s", pid, tap)
	}

	seed, err := os.ReadFile(filepath.Join(f.cfg.DiskDir, vm.ID+"-seed.iso"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := cloudinit.NetworkConfig(vm.NICs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(seed, want) || !bytes.Contains(seed, []byte("network-config")) {
		t.Errorf("the seed lacks the network-config:\n%s", want)
	}
	if got := f.m.NICs()[vm.ID]; len(got) != 1 || got[0].MAC != "52:54:00:12:34:56" {
		t.Errorf("NICs() = %+v", f.m.NICs())
	}

	// An agent restart lists the running VM's NICs before any actor loads,
	// so the data plane never drops the taps of a running VM.
	closeManager(t, f.m)
	f.start()
	if got := f.m.NICs()[vm.ID]; len(got) != 1 {
		t.Errorf("after restart NICs() = %+v", f.m.NICs())
	}

	task = f.run(t, messages.AgentTaskRequest{ID: messages.NewID(), Kind: messages.TaskVMDelete, VM: vm, Force: true})
	mustSucceed(t, task)
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Errorf("tap %s still exists after delete", tap)
	}
	netw.mu.Lock()
	released := netw.released
	netw.mu.Unlock()
	if len(released) != 1 || released[0] != vm.ID {
		t.Errorf("released %v", released)
	}
	if len(f.m.NICs()) != 0 {
		t.Errorf("after delete NICs() = %+v", f.m.NICs())
	}
}

// holdsTap reports whether pid has a tun fd attached to tap.
func holdsTap(t *testing.T, pid int, tap string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && bytes.Contains(b, []byte("iff:\t"+tap+"\n")) {
			return true
		}
	}
	return false
}

// TestNICsWithoutDataPlane: a VM with NICs on a node without a data plane
// fails its create with network_unavailable and leaves nothing behind.
func TestNICsWithoutDataPlane(t *testing.T) {
	f := newFixture(t)
	vm := nicVM(f, "net-2")
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "network_unavailable" {
		t.Fatalf("create: %+v %+v", task, task.Error)
	}
	left, _ := filepath.Glob(filepath.Join(f.cfg.StateDir, "*"))
	disks, _ := filepath.Glob(filepath.Join(f.cfg.DiskDir, "*"))
	if len(left)+len(disks) != 0 || len(f.m.NICs()) != 0 {
		t.Fatalf("left %v %v %v", left, disks, f.m.NICs())
	}
}

// wantUID checks that process pid runs as uid, real, effective, saved and
// filesystem alike.
func wantUID(t *testing.T, pid int, uid uint32) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprint(uid)
	want := "Uid:\t" + u + "\t" + u + "\t" + u + "\t" + u
	if !slices.Contains(strings.Split(string(b), "\n"), want) {
		t.Errorf("pid %d does not run as uid %d only:\n%s", pid, uid, b)
	}
}
