package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
)

// Link name kinds, appended to Options.IfPrefix. A name is
// prefix + kind + 8 hex digits of a hash, at most 15 bytes with a 4-byte prefix.
const (
	kindBridge = "br"
	kindVXLAN  = "vx"
	kindTap    = "t"
)

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func (f *Fabric) bridgeName(netID string) string {
	return f.opts.IfPrefix + kindBridge + shortHash(netID)
}

func (f *Fabric) vxlanName(netID string) string {
	return f.opts.IfPrefix + kindVXLAN + shortHash(netID)
}

// TapName is the name of the tap device for nic, the name handed to QEMU.
func (f *Fabric) TapName(nic NIC) string {
	return f.opts.IfPrefix + kindTap + shortHash(nic.VMID+"/"+strconv.Itoa(nic.Index))
}

// ownedKind returns the kind of an Otherix-owned link name, or "" for a
// foreign one. The WireGuard interface is matched by its exact name.
func (f *Fabric) ownedKind(name string) string {
	rest, ok := strings.CutPrefix(name, f.opts.IfPrefix)
	if !ok {
		return ""
	}
	for _, k := range []string{kindBridge, kindVXLAN, kindTap} {
		if h, ok := strings.CutPrefix(rest, k); ok && isHex8(h) {
			return k
		}
	}
	return ""
}

func isHex8(s string) bool {
	if len(s) != 8 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// GatewayMACFor derives the anycast gateway MAC of a network: locally
// administered, unicast, the same on every node.
func GatewayMACFor(netID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("otherix-gateway/" + netID))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}
