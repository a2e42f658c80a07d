package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Anti-spoofing. A guest is untrusted and owns its NIC completely: without
// these rules it could send with another VM's MAC or IPv4 address, poison
// its neighbours' ARP caches, answer DHCP for guests that ask, or announce
// itself as an IPv6 router. Every frame a tap delivers to the bridge passes
// the bridge family's prerouting hook, before the bridge learns its source
// MAC or forwards it, so one verdict map there sends each tap's frames to
// that tap's own chain, which lets through only:
//
//   - frames whose source MAC is the NIC's MAC;
//   - ARP for Ethernet/IPv4 whose sender MAC is the NIC's MAC and whose
//     sender IP is the NIC's address (or 0.0.0.0, an RFC 5227 probe);
//   - IPv4 from the NIC's address, or from 0.0.0.0 to UDP port 67 (a DHCP
//     client before it has a lease), and never from UDP port 67 (a DHCP
//     server's answer);
//
// and drops everything else: IPv6 (networks are IPv4 only, so router
// advertisements and DHCPv6 answers go with it), VLAN-tagged frames (whose
// inner header would escape the checks) and any other EtherType. Frames
// from the bridge, the VXLAN device and the host are not affected.
//
// The chains are part of the desired bridge table: a tap added or removed
// changes the table, which is replaced whole in one batch, so the rules
// follow the taps, an agent restart converges, and nothing is duplicated.

// Ethernet types matched by the guard.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
)

// guardChainName is the chain holding one tap's rules.
func guardChainName(tap string) string { return "vm-" + tap }

// tapGuards returns the bridge prerouting chain that dispatches each tap's
// frames to its chain, and those chains; nothing without taps.
func tapGuards(p *plan) []nftChain {
	if len(p.taps) == 0 {
		return nil
	}
	names := make([]string, 0, len(p.taps))
	for name := range p.taps {
		names = append(names, name)
	}
	slices.Sort(names)
	vmap := &nftables.Set{Anonymous: true, Constant: true, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	var elems []nftables.SetElement
	chains := []nftChain{{}} // the dispatch chain goes first
	h := sha256.New()
	for _, name := range names {
		tp := p.taps[name]
		chain := guardChainName(name)
		elems = append(elems, nftables.SetElement{Key: ifname(name), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}})
		h.Write([]byte(name + " " + chain + "\n"))
		chains = append(chains, nftChain{name: chain, rules: guardRules(name, tp.nic)})
	}
	lookup := &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true}
	// The comment names the map's content, so a tap added or removed
	// changes the rule and the table is rewritten.
	dispatch := nftRule{comment: "vm taps " + hex.EncodeToString(h.Sum(nil)[:8]),
		exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, lookup}}
	chains[0] = nftChain{name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting,
		priority: nftables.ChainPriorityFilter, rules: []nftRule{dispatch},
		sets: []*nftSet{{set: vmap, elems: elems, lookup: lookup}}}
	return chains
}

// guardRules are one tap's rules, in order; the first verdict wins.
func guardRules(tap string, nic NIC) []nftRule {
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	tag := tap + " "
	if len(nic.MAC) != 6 {
		// A NIC without a usable MAC cannot be pinned: it sends nothing.
		return []nftRule{{tag + "no mac drop", cat(counter(), drop)}}
	}
	mac := []byte(nic.MAC)
	ip := []byte{0, 0, 0, 0}
	hasIP := nic.IP.Is4()
	if hasIP {
		ip = nic.IP.AsSlice()
	}
	arp := etherType(etherTypeARP)
	ipv4 := etherType(etherTypeIPv4)
	rules := []nftRule{
		{tag + "src mac " + nic.MAC.String(), cat(payload(expr.PayloadBaseLLHeader, 6, mac, expr.CmpOpNeq), counter(), drop)},
		// ARP for anything but Ethernet and IPv4 would move the fields
		// checked below.
		{tag + "arp not ethernet/ipv4", cat(arp, payload(expr.PayloadBaseNetworkHeader, 0, []byte{0, 1, 8, 0, 6, 4}, expr.CmpOpNeq), counter(), drop)},
		{tag + "arp sender mac " + nic.MAC.String(), cat(arp, payload(expr.PayloadBaseNetworkHeader, 8, mac, expr.CmpOpNeq), counter(), drop)},
		{tag + "arp probe", cat(arp, payload(expr.PayloadBaseNetworkHeader, 14, []byte{0, 0, 0, 0}, expr.CmpOpEq), accept)},
	}
	if hasIP {
		rules = append(rules, nftRule{tag + "arp sender ip " + nic.IP.String(), cat(arp, payload(expr.PayloadBaseNetworkHeader, 14, ip, expr.CmpOpNeq), counter(), drop)})
	} else {
		rules = append(rules, nftRule{tag + "arp without an address", cat(arp, counter(), drop)})
	}
	rules = append(rules,
		nftRule{tag + "arp accept", cat(arp, accept)},
		// A DHCP client has no address yet: 0.0.0.0:68 to port 67 only.
		nftRule{tag + "dhcp client", cat(ipv4, payload(expr.PayloadBaseNetworkHeader, 12, []byte{0, 0, 0, 0}, expr.CmpOpEq),
			l4ports(unix.IPPROTO_UDP, 68, 67), accept)},
	)
	if hasIP {
		rules = append(rules, nftRule{tag + "src ip " + nic.IP.String(), cat(ipv4, payload(expr.PayloadBaseNetworkHeader, 12, ip, expr.CmpOpNeq), counter(), drop)})
	} else {
		rules = append(rules, nftRule{tag + "ipv4 without an address", cat(ipv4, counter(), drop)})
	}
	rules = append(rules,
		nftRule{tag + "dhcp server drop", cat(ipv4, l4sport(unix.IPPROTO_UDP, 67), counter(), drop)},
		nftRule{tag + "ipv4 accept", cat(ipv4, accept)},
		// IPv6 (router advertisements, DHCPv6 answers), VLAN tags and
		// every other EtherType.
		nftRule{tag + "other drop", cat(counter(), drop)},
	)
	return rules
}

// nftSet is an anonymous set or map a rule looks up: added to the batch
// before the chain's rules, and named in lookup once the batch gave it a
// name and id.
type nftSet struct {
	set    *nftables.Set
	elems  []nftables.SetElement
	lookup *expr.Lookup
}

func etherType(t uint16) []expr.Any {
	return payload(expr.PayloadBaseLLHeader, 12, binaryutil.BigEndian.PutUint16(t), expr.CmpOpEq)
}

// payload compares len(data) bytes at offset of base with data.
func payload(base expr.PayloadBase, offset uint32, data []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func l4sport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func l4ports(proto byte, sport, dport uint16) []expr.Any {
	return append(l4sport(proto, sport), l4port(proto, dport)[2:]...)
}
