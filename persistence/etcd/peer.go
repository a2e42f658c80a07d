package etcd

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/otherix/otherix/security"
)

// peerConfig sets the peer listener and its security. A unix socket inside
// the data dir (the default) needs none: the dir is 0700 and a single
// member has no peers. A TCP listener is mutual TLS under the cluster CA:
// peers must present a client certificate (ClientCertAuth) that chains to
// the CA and carries security.ReplicaPeerSAN, which only replica peer
// certificates (CN otherix-replica-*) have; the same check applies to the
// server certificate a peer answers with when this member dials it.
func peerConfig(ec *embed.Config, cfg Config) error {
	listen := cfg.PeerURL
	if listen == "" {
		listen = "unix://" + filepath.Join(cfg.DataDir, "peer.sock")
	}
	lu, err := url.Parse(listen)
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrBadPeerURL, listen, err)
	}
	adv := lu
	if cfg.AdvertisePeerURL != "" {
		if adv, err = url.Parse(cfg.AdvertisePeerURL); err != nil {
			return fmt.Errorf("%w: advertise %q: %w", ErrBadPeerURL, cfg.AdvertisePeerURL, err)
		}
		if adv.Scheme != lu.Scheme {
			return fmt.Errorf("%w: advertise %q and listener %q differ in scheme", ErrBadPeerURL, adv, lu)
		}
	}
	switch lu.Scheme {
	case "unix":
	case "https":
		t := cfg.PeerTLS
		if t == nil || t.CertFile == "" || t.KeyFile == "" || t.CAFile == "" {
			return fmt.Errorf("%w: %q needs a peer certificate, key and the cluster CA", ErrBadPeerURL, listen)
		}
		if lu.Port() == "" || adv.Port() == "" {
			return fmt.Errorf("%w: %q needs a port", ErrBadPeerURL, listen)
		}
		ec.PeerTLSInfo = transport.TLSInfo{
			CertFile:         t.CertFile,
			KeyFile:          t.KeyFile,
			TrustedCAFile:    t.CAFile,
			ClientCertAuth:   true,
			AllowedHostnames: []string{security.ReplicaPeerSAN},
		}
		ec.TlsMinVersion = "TLS1.3"
	case "http":
		return fmt.Errorf("%w: %q: Raft peer traffic must be https (mutual TLS under the cluster CA)", ErrBadPeerURL, listen)
	default:
		return fmt.Errorf("%w: %q: want https://HOST:PORT", ErrBadPeerURL, listen)
	}
	ec.ListenPeerUrls = []url.URL{*lu}
	ec.AdvertisePeerUrls = []url.URL{*adv}
	return nil
}

// advertisedPeerURL is the single peer URL this member announces.
func advertisedPeerURL(ec *embed.Config) string { return ec.AdvertisePeerUrls[0].String() }

// peerClient dials other members' peer listeners with this member's peer
// certificate, for the health probe of Members.
func peerClient(info transport.TLSInfo) (*http.Client, error) {
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd: peer tls: %w", err)
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true},
		Timeout:   2 * time.Second,
	}, nil
}

// reconcilePeerURL runs on a restart: when the configured peer URL differs
// from the one the membership holds, it updates the membership, so a
// single-node install restarted with a peer listener can accept joiners.
// A member of a larger cluster restarted without one is refused: it would
// listen on its unix socket where no peer can reach it.
func (m *Member) reconcilePeerURL(ctx context.Context, want string) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer cancel()
	// The local view is enough to decide, and a member restarted on the
	// wrong listener may have no quorum to answer a linearizable read.
	resp, err := m.client.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return fmt.Errorf("etcd: list members: %w", err)
	}
	self := uint64(m.server.Server.MemberID())
	for _, mb := range resp.Members {
		if mb.ID != self {
			continue
		}
		if slices.Equal(mb.PeerURLs, []string{want}) {
			return nil
		}
		if m.cfg.PeerURL == "" && len(resp.Members) > 1 {
			return fmt.Errorf("%w: %s is one of %d members and peers reach it at %v; start it with its peer listener",
				ErrPeerURLRequired, m.cfg.Name, len(resp.Members), mb.PeerURLs)
		}
		if _, err := m.client.MemberUpdate(ctx, self, []string{want}); err != nil {
			return fmt.Errorf("etcd: update peer url of %s to %s: %w", m.cfg.Name, want, err)
		}
		return nil
	}
	return fmt.Errorf("etcd: member %s (%x) is not in its own cluster's member list", m.cfg.Name, self)
}
