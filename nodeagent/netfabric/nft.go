package netfabric

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The nftables tables Otherix owns, both named TableName:
//
//   - inet: forward filtering that isolates networks from each other and
//     the host, and the egress masquerade;
//   - bridge: keeps the anycast gateway local, so frames to and from it never
//     cross the overlay (every node's bridge has the same gateway MAC), and
//     pins each tap to its VM's MAC and address (nftguard.go).
//
// The desired tables are built in memory; each rule carries a comment
// naming everything it was built from, so comparing the chains and comments
// in the kernel with the desired ones tells whether anything changed. A
// change replaces both tables in one netlink batch (add, delete, add: the
// kernel applies the batch atomically, and the first add makes the delete
// valid when the table is missing).

// nftChain is a base chain (hook set) or, with hook nil, a regular chain
// reached by jumps.
type nftChain struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	rules    []nftRule
	// sets are anonymous sets the rules look up, added to the batch
	// before them.
	sets []*nftSet
}

type nftRule struct {
	comment string
	exprs   []expr.Any
}

type nftTable struct {
	family nftables.TableFamily
	chains []nftChain
}

func (f *Fabric) desiredNftables(p *plan) []nftTable {
	if len(p.networks) == 0 {
		return nil
	}
	fwd := nftChain{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter}
	in := nftChain{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter}
	nat := nftChain{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource}
	brIn := nftChain{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter}
	brOut := nftChain{name: "output", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityFilter}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	wg := f.opts.WireGuardIf
	// Within a network: with br_netfilter loaded, bridged IPv4 frames pass
	// the inet forward hook with the bridge as both in and out interface.
	for _, n := range p.networks {
		fwd.rules = append(fwd.rules, nftRule{"within " + n.bridge, cat(meta(expr.MetaKeyIIFNAME, ifname(n.bridge)), meta(expr.MetaKeyOIFNAME, ifname(n.bridge)), accept)})
	}
	// Into a VM network only replies: no other network, the host's other
	// interfaces or the outside may open connections to VMs.
	for _, n := range p.networks {
		fwd.rules = append(fwd.rules,
			nftRule{"oif " + n.bridge + " established", cat(meta(expr.MetaKeyOIFNAME, ifname(n.bridge)), ctEstablished(), counter(), accept)},
			nftRule{"oif " + n.bridge + " drop", cat(meta(expr.MetaKeyOIFNAME, ifname(n.bridge)), counter(), drop)},
		)
	}
	// Out of a VM network: to the outside only with egress, never into the mesh.
	for _, n := range p.networks {
		iif := meta(expr.MetaKeyIIFNAME, ifname(n.bridge))
		fwd.rules = append(fwd.rules, nftRule{"iif " + n.bridge + " to " + wg + " drop", cat(iif, meta(expr.MetaKeyOIFNAME, ifname(wg)), counter(), drop)})
		if n.Egress {
			fwd.rules = append(fwd.rules, nftRule{"iif " + n.bridge + " egress accept", cat(iif, counter(), accept)})
		} else {
			fwd.rules = append(fwd.rules, nftRule{"iif " + n.bridge + " no egress drop", cat(iif, counter(), drop)})
		}
	}
	// VM → host: replies, and the gateway's DNS, DHCP and ping.
	for _, n := range p.networks {
		iif := meta(expr.MetaKeyIIFNAME, ifname(n.bridge))
		gw := cat(meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}), ip4Match(16, GatewayIP.AsSlice(), 32, expr.CmpOpEq))
		in.rules = append(in.rules,
			nftRule{"iif " + n.bridge + " established", cat(iif, ctEstablished(), accept)},
			nftRule{"iif " + n.bridge + " dns udp", cat(iif, gw, l4port(unix.IPPROTO_UDP, 53), accept)},
			nftRule{"iif " + n.bridge + " dns tcp", cat(iif, gw, l4port(unix.IPPROTO_TCP, 53), accept)},
			nftRule{"iif " + n.bridge + " dhcp", cat(iif, meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}), l4port(unix.IPPROTO_UDP, 67), accept)},
			nftRule{"iif " + n.bridge + " ping gateway", cat(iif, gw, meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_ICMP}),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8}}, accept)},
			nftRule{"iif " + n.bridge + " drop", cat(iif, counter(), drop)},
		)
	}
	for _, n := range p.networks {
		if !n.Egress {
			continue
		}
		addr := n.CIDR.Addr().AsSlice()
		nat.rules = append(nat.rules, nftRule{
			"masquerade " + n.bridge + " " + n.CIDR.String(),
			cat(meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}),
				ip4Match(12, addr, n.CIDR.Bits(), expr.CmpOpEq),
				ip4Match(16, addr, n.CIDR.Bits(), expr.CmpOpNeq),
				counter(), &expr.Masq{}),
		})
	}
	for _, n := range p.networks {
		if n.vxlan == "" {
			continue
		}
		brIn.rules = append(brIn.rules, nftRule{"iif " + n.vxlan + " gateway local", cat(meta(expr.MetaKeyIIFNAME, ifname(n.vxlan)), counter(), drop)})
		brOut.rules = append(brOut.rules, nftRule{"oif " + n.vxlan + " gateway local", cat(meta(expr.MetaKeyOIFNAME, ifname(n.vxlan)), counter(), drop)})
	}
	return []nftTable{
		{family: nftables.TableFamilyINet, chains: []nftChain{fwd, in, nat}},
		{family: nftables.TableFamilyBridge, chains: append([]nftChain{brIn, brOut}, tapGuards(p)...)},
	}
}

var nftFamilies = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge}

func (f *Fabric) reconcileNftables(_ context.Context, p *plan, rep *Report) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(f.ns)), nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	want := f.desiredNftables(p)
	key := nftKey(want)
	gen, err := nftGeneration(int(f.ns))
	if err != nil {
		return err
	}
	if f.nftOK != nil && f.nftOK.gen == gen && f.nftOK.key == key {
		return nil
	}
	f.nftOK = nil
	dirty := false
	for _, fam := range nftFamilies {
		var wt *nftTable
		for i := range want {
			if want[i].family == fam {
				wt = &want[i]
			}
		}
		same, err := nftMatches(c, fam, wt)
		if err != nil {
			return err
		}
		if !same {
			dirty = true
		}
	}
	if !dirty {
		f.nftOK = &nftVerified{gen: gen, key: key}
		return nil
	}
	for _, fam := range nftFamilies {
		t := &nftables.Table{Name: TableName, Family: fam}
		c.AddTable(t)
		c.DelTable(t)
	}
	nrules := 0
	for _, wt := range want {
		t := c.AddTable(&nftables.Table{Name: TableName, Family: wt.family})
		// Regular chains first: the base chains' rules jump to them.
		chains := map[string]*nftables.Chain{}
		for _, ch := range wt.chains {
			if ch.hook == nil {
				chains[ch.name] = c.AddChain(&nftables.Chain{Name: ch.name, Table: t})
			}
		}
		for _, ch := range wt.chains {
			if ch.hook != nil {
				chains[ch.name] = c.AddChain(&nftables.Chain{Name: ch.name, Table: t, Type: ch.typ, Hooknum: ch.hook, Priority: ch.priority, Policy: ptr(nftables.ChainPolicyAccept)})
			}
		}
		for _, ch := range wt.chains {
			chain := chains[ch.name]
			for _, st := range ch.sets {
				st.set.Table = t
				if err := c.AddSet(st.set, st.elems); err != nil {
					return fmt.Errorf("nftables set in chain %s: %w", ch.name, err)
				}
				st.lookup.SetName, st.lookup.SetID = st.set.Name, st.set.ID
			}
			for _, r := range ch.rules {
				c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: r.exprs, UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
				nrules++
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables batch: %w", err)
	}
	if len(want) == 0 {
		rep.add("remove nftables tables %s", TableName)
	} else {
		rep.add("write nftables tables %s (%d rules)", TableName, nrules)
	}
	return nil
}

// nftMatches reports whether the kernel's table of family fam has exactly
// the chains and rule comments of want (nil: no table).
func nftMatches(c *nftables.Conn, fam nftables.TableFamily, want *nftTable) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	var have []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			have = append(have, ch)
		}
	}
	if want == nil {
		if len(have) > 0 {
			return false, nil
		}
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil {
			return false, fmt.Errorf("list tables: %w", err)
		}
		return !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }), nil
	}
	if len(have) != len(want.chains) {
		return false, nil
	}
	for _, wc := range want.chains {
		i := slices.IndexFunc(have, func(ch *nftables.Chain) bool { return ch.Name == wc.name })
		if i < 0 {
			return false, nil
		}
		hc := have[i]
		if wc.hook == nil {
			if hc.Hooknum != nil {
				return false, nil
			}
		} else if hc.Type != wc.typ || hc.Hooknum == nil || *hc.Hooknum != *wc.hook || hc.Priority == nil || *hc.Priority != *wc.priority ||
			hc.Policy == nil || *hc.Policy != nftables.ChainPolicyAccept {
			return false, nil
		}
		rules, err := c.GetRules(hc.Table, hc)
		if err != nil {
			return false, fmt.Errorf("list rules %s: %w", wc.name, err)
		}
		if len(rules) != len(wc.rules) {
			return false, nil
		}
		for j, r := range rules {
			got, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if got != wc.rules[j].comment || len(r.Exprs) != len(wc.rules[j].exprs) {
				return false, nil
			}
		}
	}
	return true, nil
}

// bigBuffers lets one batch carry every rule of a node with hundreds of
// networks: the default socket buffers reject the batch (EMSGSIZE).
func bigBuffers(c *mnl.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 16<<20); e != nil {
				serr = e
			}
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("nftables socket buffers: %w", serr)
	}
	return nil
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func meta(key expr.MetaKey, eq []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: eq}}
}

func counter() expr.Any { return &expr.Counter{} }

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// ip4Match compares the IPv4 header field at offset (12 source, 16
// destination) masked to bits with addr.
func ip4Match(offset uint32, addr []byte, bits int, op expr.CmpOp) []expr.Any {
	mask := net.CIDRMask(bits, 32)
	masked := make([]byte, 4)
	for i := range masked {
		masked[i] = addr[i] & mask[i]
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: masked},
	}
}

func l4port(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}
