package netfabric

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/otherix/otherix/internal/atomicfile"
)

// wgKey is the node's WireGuard private key.
type wgKey struct{ priv wgtypes.Key }

func (k wgKey) public() string { return k.priv.PublicKey().String() }

// loadOrCreateKey reads dir/<ifname>.key or generates it (0600). The private
// key never leaves the node: only the public key is reported.
func loadOrCreateKey(dir, ifname string) (wgKey, error) {
	path := filepath.Join(dir, ifname+".key")
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return wgKey{}, fmt.Errorf("wireguard key %s: %w", path, err)
		}
		return wgKey{priv: k}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgKey{}, fmt.Errorf("wireguard key: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgKey{}, fmt.Errorf("generate wireguard key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wgKey{}, fmt.Errorf("wireguard key dir: %w", err)
	}
	// A crash never leaves a truncated key behind.
	if err := atomicfile.Write(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgKey{}, fmt.Errorf("write wireguard key: %w", err)
	}
	return wgKey{priv: k}, nil
}
