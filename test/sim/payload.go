package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/otherix/otherix/messages"
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

// heartbeatTemplate is node's observed state: 20 VMs the control plane does
// not know, five cached images, and with an overlay mode a WireGuard key and
// underlay endpoint of its own.
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
	for i := range 20 {
		hb.VMs = append(hb.VMs, messages.VMObserved{ID: messages.NewID(), Phase: "running", ObservedGeneration: int64(3 + i%4)})
	}
	for i, name := range []string{"debian-12", "ubuntu-24.04", "rocky-9", "alpine-3.20", "fedora-40"} {
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
		b, err := json.Marshal(hb)
		if err != nil {
			return out, err
		}
		out[i] = b
	}
	return out, nil
}
