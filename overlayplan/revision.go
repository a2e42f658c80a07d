package overlayplan

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/otherix/otherix/messages"
)

// Digest hashes every field of d but its revision and tunnel IP. It appends
// the fields by hand: JSON would cost as much again as assembling
// (TestOverlayDigestCoversEveryField fails when a field is added and not here).
func Digest(d *messages.DesiredOverlay) [sha256.Size]byte {
	b := make([]byte, 0, 64*(len(d.Networks)+len(d.Peers)+len(d.FDB)+1))
	str := func(s string) { b = append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	num := func(i int) { b = binary.AppendVarint(b, int64(i)) }
	num(d.ListenPort)
	num(len(d.Networks))
	for _, n := range d.Networks {
		str(n.ID)
		str(n.Name)
		str(n.CIDR)
		str(n.Type)
		num(n.VNI)
		num(n.MTU)
		egress := byte(0)
		if n.Egress {
			egress = 1
		}
		b = append(b, egress)
		str(n.GatewayMAC)
	}
	num(len(d.Peers))
	for _, p := range d.Peers {
		str(p.Node)
		str(p.PublicKey)
		str(p.Endpoint)
		str(p.TunnelIP)
	}
	num(len(d.FDB))
	for _, e := range d.FDB {
		str(e.Network)
		str(e.MAC)
		str(e.Remote)
	}
	return sha256.Sum256(b)
}

// Revision names an overlay by the digest of its node-independent part and
// the node's tunnel IP: 128 bits, in hex.
func Revision(sum [sha256.Size]byte, tunnelIP string) string {
	rev := sha256.Sum256(append(sum[:], tunnelIP...))
	return hex.EncodeToString(rev[:16])
}

// WithListenPort sets d's WireGuard port to port, the settings' one, unless
// port is 0 or already d's. The port is a setting, not part of the view: it
// changes the revision like the tunnel IP does.
func WithListenPort(d *messages.DesiredOverlay, tunnelIP string, port int) *messages.DesiredOverlay {
	if port == 0 || port == d.ListenPort {
		return d
	}
	d.ListenPort = port
	d.Revision = Revision(sha256.Sum256([]byte(d.Revision)), fmt.Sprintf("%s:%d", tunnelIP, port))
	return d
}
