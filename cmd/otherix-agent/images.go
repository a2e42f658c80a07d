package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/server"
	"github.com/otherix/otherix/nodeagent/vmactor"
)

// Environment variables that set the image flags' defaults (a flag wins).
const (
	envImageAllow    = "OTHERIX_IMAGE_ALLOW"
	envImageMaxSize  = "OTHERIX_IMAGE_MAX_SIZE"
	envImageCacheMax = "OTHERIX_IMAGE_CACHE_MAX"
)

// imageOptions are serve's flags for the image cache.
type imageOptions struct {
	allow, maxSize, pullPolicy string
	cacheMax                   string
}

func (o *imageOptions) addFlags(f *pflag.FlagSet) {
	defMax := "64Gi"
	if v := os.Getenv(envImageMaxSize); v != "" {
		defMax = v
	}
	f.StringVar(&o.allow, "image-allow", os.Getenv(envImageAllow),
		"CIDRs image downloads may reach although denied by default (loopback, this host's addresses, link-local, multicast, the cluster's overlay networks), comma-separated (default from $"+envImageAllow+")")
	f.StringVar(&o.maxSize, "image-max-size", defMax,
		"largest image download and largest image virtual size, e.g. 64Gi (default from $"+envImageMaxSize+")")
	f.StringVar(&o.cacheMax, "image-cache-max", os.Getenv(envImageCacheMax),
		"size limit of the pool's image cache, e.g. 50Gi; above it unused images are evicted, least recently used first (default from $"+envImageCacheMax+"; empty or 0: no limit)")
	f.StringVar(&o.pullPolicy, "image-pull-policy", string(images.PullIfNotPresent),
		"if-not-present: use a cached image of the same URL without asking its origin; always: revalidate with a conditional request on each use")
}

// cacheOptions checks the flags and turns them into the cache's options.
func (o *imageOptions) cacheOptions() (images.Options, error) {
	allow, err := images.ParseCIDRs(o.allow)
	if err != nil {
		return images.Options{}, fmt.Errorf("--image-allow: %w", err)
	}
	max, err := parseBytes(o.maxSize)
	if err != nil {
		return images.Options{}, fmt.Errorf("--image-max-size: %w", err)
	}
	var cacheMax int64
	if v := strings.TrimSpace(o.cacheMax); v != "" && v != "0" {
		if cacheMax, err = parseBytes(v); err != nil {
			return images.Options{}, fmt.Errorf("--image-cache-max: %w", err)
		}
	}
	p := images.PullPolicy(o.pullPolicy)
	if p != images.PullIfNotPresent && p != images.PullAlways {
		return images.Options{}, fmt.Errorf("--image-pull-policy must be %s or %s, got %q", images.PullIfNotPresent, images.PullAlways, o.pullPolicy)
	}
	return images.Options{Allow: allow, MaxSize: max, PullPolicy: p, MaxCacheBytes: cacheMax}, nil
}

// The agent API serves the image cache through the VM manager.
var _ server.ImageBackend = (*vmactor.Manager)(nil)

// migrateImageCache moves the images of the basename-keyed layout into the
// content-keyed one and rebases the VM disks on them; it must run before
// the VM actors start (it rewrites their records).
func migrateImageCache(ctx context.Context, log *slog.Logger, cache *images.Cache, vmStateDir string) error {
	// Run even with no legacy file left: a journal of an interrupted run
	// may remain.
	rep, err := cache.MigrateLegacy(ctx, vmactor.RebaseRecords(vmStateDir))
	if err != nil {
		return fmt.Errorf("image cache migration: %w", err)
	}
	if len(rep.Migrated)+len(rep.Rebased) > 0 {
		log.Info("image cache migrated to content keys", "migrated", rep.Migrated, "disks_rebased", len(rep.Rebased))
	}
	for name, why := range rep.Kept {
		log.Warn("image cache: legacy image kept", "file", name, "reason", why)
	}
	return nil
}

// parseBytes reads a size such as 64Gi, 64G, 512MiB or 1073741824 (bytes).
// Units are powers of 1024, as QEMU reads them.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}
	unit := strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(t[i:]), "b"), "i")
	sh, ok := shift[unit]
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if !ok || err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size such as 64Gi", s)
	}
	if n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << sh, nil
}

// imageDeny keeps the image cache's denied cluster networks in step with
// the control plane's answers: the overlay supernet from the settings and
// the CIDR of every network the node carries (the host routes them to its
// bridges, so a download could reach tenants' VMs).
type imageDeny struct {
	cache *images.Cache

	mu       sync.Mutex
	networks []netip.Prefix // from the last overlay received
}

func (d *imageDeny) update(ds messages.DesiredState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case ds.Overlay != nil:
		d.networks = d.networks[:0]
		for _, n := range ds.Overlay.Networks {
			if p, err := netip.ParsePrefix(n.CIDR); err == nil {
				d.networks = append(d.networks, p.Masked())
			}
		}
	case ds.OverlayRevision == "":
		d.networks = nil
	}
	// An answer without an overlay but with its revision means the
	// overlay is unchanged: keep the networks.
	deny := append([]netip.Prefix{}, d.networks...)
	supernet := ds.Settings.OverlaySupernet
	if supernet == "" {
		supernet = messages.DefaultSettings().OverlaySupernet
	}
	if p, err := netip.ParsePrefix(supernet); err == nil {
		deny = append(deny, p.Masked())
	}
	d.cache.SetClusterNetworks(deny)
}
