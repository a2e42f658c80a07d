package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/heartbeat"
)

// Overlay modes of the simulated agents.
const (
	// overlayOff: no data plane; the answer has no overlay.
	overlayOff = "off"
	// overlayWhole: a WireGuard key and endpoint, never a held revision, so
	// every answer carries the whole overlay (as before revisions).
	overlayWhole = "whole"
	// overlayRevision: the agent names the revision it holds, as the real
	// agent does; unchanged answers carry only the revision.
	overlayRevision = "revision"
)

// simVMs and simImages are how many VMs and cached images each node
// reports (flags -vms and -images).
var simVMs, simImages = 20, 5

// heartbeatTemplate is node's observed state: simVMs VMs the control plane
// does not know, simImages cached images (five short-named ones, then
// 128-byte names), and with an overlay mode a WireGuard key and underlay
// endpoint of its own.
func heartbeatTemplate(node int, overlay string) messages.Heartbeat {
	hb := messages.Heartbeat{
		AgentVersion: "0.1.0",
		Arch:         "amd64",
		Capacity: messages.NodeCapacity{CPUs: 64, MemoryMiB: 262144, KVM: true,
			KVMReason: "/dev/kvm opened and KVM_CREATE_VM succeeded", Accelerator: "kvm"},
		QEMUVersions: []string{"8.2.2", "9.0.2"},
		Pools: []messages.PoolStatus{{Name: "default", Path: "/var/lib/otherix/pools/default",
			TotalBytes: 4 << 40, FreeBytes: 3 << 40}},
	}
	now := time.Now().UTC()
	for i := range simVMs {
		started := now.Add(-time.Duration(i) * time.Minute)
		hb.VMs = append(hb.VMs, messages.VMObserved{ID: messages.NewID(), Phase: "running", ObservedGeneration: int64(3 + i%4),
			Pid: 10_000 + i, StartedAt: &started, ObservedAt: now})
	}
	short := []string{"debian-12", "ubuntu-24.04", "rocky-9", "alpine-3.20", "fedora-40"}
	for i := range simImages {
		name := fmt.Sprintf("%06d-%s", i, strings.Repeat("l", 128-7-len(".qcow2")))
		if i < len(short) {
			name = short[i]
		}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s-%d", name, i))
		hb.Images = append(hb.Images, messages.CachedImage{Pool: "default", Name: name + ".qcow2",
			SizeBytes: int64(512+i*200) << 20, SHA256: hex.EncodeToString(sum[:])})
	}
	if overlay != overlayOff {
		key := sha256.Sum256(fmt.Appendf(nil, "wireguard key of node %d", node))
		hb.Overlay = &messages.NodeOverlay{PublicKey: base64.StdEncoding.EncodeToString(key[:]),
			Endpoint:  fmt.Sprintf("198.18.%d.%d:51820", node/250, node%250+1),
			WireGuard: "userspace", TunnelOffload: true, Reconciled: true}
	}
	return hb
}

// heartbeatBodies are one node's two encoded heartbeats: the same observed
// state with two memory capacities, so a flip is a change the control plane
// must write and a repeat is not.
func heartbeatBodies(hb messages.Heartbeat) ([2][]byte, error) {
	var out [2][]byte
	for i, mem := range []int64{262144, 262144 - 1024} {
		hb.Capacity.MemoryMiB = mem
		// Encoded as the agent encodes it: within the control plane's
		// limit, VMs before images.
		b, _, err := (&heartbeat.Fitter{}).Encode(hb)
		if err != nil {
			return out, err
		}
		out[i] = b
	}
	return out, nil
}
