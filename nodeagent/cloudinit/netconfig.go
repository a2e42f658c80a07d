package cloudinit

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/messages"
)

// netplan v2 documents, as cloud-init's network-config reads them. Only the
// fields Otherix sets are modelled.
type netplanConfig struct {
	Version   int                        `json:"version"`
	Ethernets map[string]netplanEthernet `json:"ethernets"`
}

type netplanEthernet struct {
	Match       netplanMatch       `json:"match"`
	SetName     string             `json:"set-name,omitempty"`
	Addresses   []string           `json:"addresses"`
	Routes      []netplanRoute     `json:"routes,omitempty"`
	Nameservers netplanNameservers `json:"nameservers"`
	MTU         int                `json:"mtu,omitempty"`
}

type netplanMatch struct {
	MACAddress string `json:"macaddress"`
}

type netplanRoute struct {
	To     string `json:"to"`
	Via    string `json:"via"`
	OnLink bool   `json:"on-link"`
}

type netplanNameservers struct {
	Addresses []string `json:"addresses"`
}

// NetworkConfig renders the cloud-init network-config (netplan v2) for a
// VM's NICs: each NIC, matched by MAC, gets its static address; the first
// NIC carries the default route via the anycast gateway (on-link, since
// 169.254.1.1 is outside every subnet); every NIC uses the anycast DNS.
// It returns nil for no NICs: a seed without network-config lets the guest
// fall back to its own defaults.
func NetworkConfig(nics []messages.NICStatus) ([]byte, error) {
	if len(nics) == 0 {
		return nil, nil
	}
	cfg := netplanConfig{Version: 2, Ethernets: make(map[string]netplanEthernet, len(nics))}
	for i, n := range nics {
		a, err := netip.ParseAddr(n.IP)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("network config: nic %d: bad address %q", i, n.IP)
		}
		if n.PrefixLen < 1 || n.PrefixLen > 32 {
			return nil, fmt.Errorf("network config: nic %d: bad prefix length %d", i, n.PrefixLen)
		}
		if n.MAC == "" {
			return nil, fmt.Errorf("network config: nic %d: no mac", i)
		}
		eth := netplanEthernet{
			Match:       netplanMatch{MACAddress: strings.ToLower(n.MAC)},
			Addresses:   []string{netip.PrefixFrom(a, n.PrefixLen).String()},
			Nameservers: netplanNameservers{Addresses: []string{messages.AnycastDNS}},
			MTU:         n.MTU,
		}
		if i == 0 {
			eth.Routes = []netplanRoute{{To: "0.0.0.0/0", Via: messages.AnycastGateway, OnLink: true}}
		}
		cfg.Ethernets[nicName(i)] = eth
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	return b, nil
}

// nicName is the netplan id of NIC i; the guest matches it by MAC, so the
// kernel's own interface name does not matter.
func nicName(i int) string { return "nic" + strconv.Itoa(i) }
