package netfabric

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftables keeps one generation counter per namespace, bumped by every
// committed change to any table. When it has not moved since the tables were
// last verified and the desired tables are the same, the kernel still holds
// them: an unchanged Reconcile then skips listing (and parsing) every rule.

// nftVerified remembers the last verification.
type nftVerified struct {
	gen uint32
	key [32]byte
}

// nftGeneration asks the kernel for the namespace's ruleset generation.
func nftGeneration(ns int) (uint32, error) {
	c, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: ns})
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: mnl.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mnl.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("nftables generation: no NFTA_GEN_ID in reply")
}

// nftKey fingerprints the desired tables by their chains and rule comments,
// the same things nftMatches compares.
func nftKey(want []nftTable) [32]byte {
	h := sha256.New()
	for _, t := range want {
		fmt.Fprintf(h, "table %d\n", t.family)
		for _, c := range t.chains {
			if c.hook == nil {
				fmt.Fprintf(h, "chain %s regular\n", c.name)
			} else {
				fmt.Fprintf(h, "chain %s %s %d %d\n", c.name, c.typ, *c.hook, *c.priority)
			}
			for _, r := range c.rules {
				fmt.Fprintf(h, "rule %s %d\n", r.comment, len(r.exprs))
			}
		}
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}
