package messages

import "net/netip"

// Settings is the cluster-wide settings document, seeded once at first boot
// and shared by every replica (never copied into a replica's config).
type Settings struct {
	DefaultPool     string   `json:"default_pool"`
	OverlaySupernet string   `json:"overlay_supernet"`
	VNIRange        VNIRange `json:"vni_range"`
	UnderlayMTU     int      `json:"underlay_mtu"`
	Revision        int64    `json:"revision"`
}

// VNIRange bounds the VXLAN network identifiers overlay networks draw from.
type VNIRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// DefaultSettings is what a new cluster starts with.
func DefaultSettings() Settings {
	return Settings{
		DefaultPool:     "default",
		OverlaySupernet: "10.240.0.0/12",
		VNIRange:        VNIRange{Min: 4096, Max: 16777215},
		UnderlayMTU:     1500,
	}
}

// Validate checks a settings document.
func (s *Settings) Validate() error {
	if err := ValidateName("default_pool", s.DefaultPool); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(s.OverlaySupernet)
	if err != nil || !p.Addr().Is4() {
		return Invalid("overlay_supernet", "%q is not an IPv4 prefix", s.OverlaySupernet)
	}
	if s.VNIRange.Min < 1 || s.VNIRange.Max > 1<<24-1 || s.VNIRange.Min > s.VNIRange.Max {
		return Invalid("vni_range", "must satisfy 1 <= min <= max <= 16777215")
	}
	if s.UnderlayMTU < 1280 || s.UnderlayMTU > 9216 {
		return Invalid("underlay_mtu", "must be between 1280 and 9216")
	}
	return nil
}
