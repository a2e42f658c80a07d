package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/enroll"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Files of a replica's peer identity, in <data_dir>/pki.
const (
	peerCertFile = "peer.pem"
	peerKeyFile  = "peer-key.pem"
	caCertFile   = "ca.pem"
	caKeyFile    = "ca-key.pem"
)

// joinTimeout bounds the join handshake: AddLearner waits up to 10 s for
// the membership to spread, and retries while etcd calls the cluster
// unhealthy for a change (5 s after the previous one).
const joinTimeout = 90 * time.Second

// peerSetup is what the embedded member needs for a TCP peer listener.
type peerSetup struct {
	PeerURL, AdvertiseURL string
	TLS                   *etcd.PeerTLS
	// Join is set on a joiner's first boot; ClusterID is then the id the
	// member must find itself in (hex).
	Join      *etcd.Join
	ClusterID string
}

// preparePeer makes the peer identity before the member starts. A joiner
// on first boot gets its certificate from the join handshake; every other
// start issues a fresh one from the CA in <data_dir>/pki (written at every
// serve), and the first replica's first boot creates the CA first with a
// member on its unix socket, which the restart with the peer listener then
// moves to the TCP peer URL.
func preparePeer(ctx context.Context, cfg apiConfig, log *slog.Logger) (*peerSetup, error) {
	if cfg.PeerListen == "" {
		return nil, nil
	}
	adv := cfg.PeerListen
	if cfg.Advertise != "" {
		adv = cfg.Advertise
	}
	p := &peerSetup{PeerURL: "https://" + cfg.PeerListen, AdvertiseURL: "https://" + adv}
	pki := filepath.Join(cfg.DataDir, "pki")
	p.TLS = &etcd.PeerTLS{CertFile: filepath.Join(pki, peerCertFile), KeyFile: filepath.Join(pki, peerKeyFile),
		CAFile: filepath.Join(pki, caCertFile)}
	sans := peerSANs(cfg.PeerListen, cfg.Advertise)
	if len(sans) == 0 {
		return nil, fmt.Errorf("peer_listen %q: a wildcard address needs advertise HOST:PORT for the peer certificate", cfg.PeerListen)
	}
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	hasMember := etcd.HasMember(cfg.DataDir)
	if cfg.Join != "" && !hasMember {
		resp, err := joinCluster(ctx, cfg, p.AdvertiseURL, sans, pki, log)
		if err != nil {
			return nil, err
		}
		p.Join, p.ClusterID = &etcd.Join{InitialCluster: resp.InitialCluster}, resp.ClusterID
		return p, nil
	}
	if cfg.Join != "" {
		if err := checkJoinCluster(ctx, cfg, pki, log); err != nil {
			return nil, err
		}
		log.Info("data dir holds a member: join ignored", "join", cfg.Join)
	}
	ca, err := loadDiskCA(pki)
	switch {
	case errors.Is(err, os.ErrNotExist) && !hasMember:
		ca, err = bootstrapCA(ctx, cfg)
	case errors.Is(err, os.ErrNotExist) && fileExists(p.TLS.CertFile) && fileExists(p.TLS.KeyFile):
		// A joiner restarted before it was promoted: the CA key reaches
		// <data_dir>/pki only once it serves, so it keeps the peer
		// certificate the join gave it.
		log.Info("no CA key yet: keeping the peer certificate from the join", "cert", p.TLS.CertFile)
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	certPEM, keyPEM, err := ca.IssueReplicaPeerCert(memberName(cfg), sans, time.Now(), 0)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	if err := writePeerFiles(pki, ca.CertPEM(), certPEM, keyPEM); err != nil {
		return nil, err
	}
	return p, nil
}

func memberName(cfg apiConfig) string {
	if cfg.Etcd.Name != "" {
		return cfg.Etcd.Name
	}
	return etcd.DefaultMember
}

// peerSANs are the hosts of the peer listener and the advertised address,
// without wildcard addresses.
func peerSANs(listen, advertise string) []string {
	var sans []string
	for _, hp := range []string{listen, advertise} {
		host, _, err := net.SplitHostPort(hp)
		if err != nil || host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			continue
		}
		if len(sans) == 0 || sans[0] != host {
			sans = append(sans, host)
		}
	}
	return sans
}

// loadDiskCA reads the CA writePKI keeps in the data dir.
func loadDiskCA(pki string) (*security.CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(pki, caCertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(pki, caKeyFile))
	if err != nil {
		return nil, err
	}
	return security.LoadCA(certPEM, keyPEM)
}

// bootstrapCA runs on the first replica's first boot: a member on its unix
// socket creates the cluster and its CA, writes the PKI, and stops.
func bootstrapCA(ctx context.Context, cfg apiConfig) (*security.CA, error) {
	m, err := etcd.Start(ctx, etcd.Config{DataDir: cfg.DataDir, Name: memberName(cfg), MaxTxnOps: cfg.Etcd.MaxTxnOps,
		QuotaBytes: cfg.Etcd.QuotaBytes, AutoCompactionMode: cfg.Etcd.AutoCompactionMode,
		AutoCompactionRetention: cfg.Etcd.AutoCompactionRetention})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	ca, err := enrollment.LoadCA(ctx, store.New(m.Client()), time.Now())
	if err != nil {
		return nil, err
	}
	return ca, writePKI(cfg.DataDir, ca)
}

// writePeerFiles writes the CA certificate, the peer certificate and its key (0600).
func writePeerFiles(pki string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.WriteFile(filepath.Join(pki, caCertFile), caPEM, 0o644); err != nil {
		return fmt.Errorf("write ca.pem: %w", err)
	}
	if err := os.WriteFile(filepath.Join(pki, peerCertFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("write peer.pem: %w", err)
	}
	if err := security.WriteKeyFile(filepath.Join(pki, peerKeyFile), keyPEM); err != nil {
		return fmt.Errorf("write peer-key.pem: %w", err)
	}
	return nil
}

// joinCluster is the joiner's side of the handshake: it pins the CA by the
// token's fingerprint before sending anything, then sends the token, its
// name, peer URL and a CSR (the key stays here) and writes what it gets.
func joinCluster(ctx context.Context, cfg apiConfig, peerURL string, sans []string, pki string, log *slog.Logger) (*messages.ReplicaJoinResponse, error) {
	tok, err := security.ParseReplicaJoinToken(strings.TrimSpace(cfg.JoinToken))
	if err != nil {
		return nil, fmt.Errorf("join_token: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	caCert, err := enroll.FetchPinnedCA(ctx, cfg.Join, tok.CAFingerprint, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", cfg.Join, err)
	}
	keyPEM, csrDER, err := security.NewReplicaKeyAndCSR(cfg.Etcd.Name, sans)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	req := messages.ReplicaJoinRequest{Token: strings.TrimSpace(cfg.JoinToken), Name: cfg.Etcd.Name, PeerURL: peerURL,
		CSR:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		APIURL: serviceURL(cfg.TLS.Enabled, cfg.Listen), AgentURL: serviceURL(true, cfg.AgentListen), Version: buildinfo.Version()}
	status, rb, err := postJoin(ctx, cfg.Join, caCert, req, joinTimeout)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", cfg.Join, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("join %s refused: %w", cfg.Join, apierror.Decode(status, rb))
	}
	var resp messages.ReplicaJoinResponse
	if err := json.Unmarshal(rb, &resp); err != nil {
		return nil, fmt.Errorf("join %s: answer: %w", cfg.Join, err)
	}
	block, _ := pem.Decode([]byte(resp.CA))
	if block == nil || !bytes.Equal(block.Bytes, caCert.Raw) {
		return nil, fmt.Errorf("join %s: the answer's CA is not the pinned one", cfg.Join)
	}
	if err := writePeerFiles(pki, []byte(resp.CA), []byte(resp.Certificate), keyPEM); err != nil {
		return nil, err
	}
	log.Info("joined the cluster as a learner", "name", cfg.Etcd.Name, "via", cfg.Join, "cluster_id", resp.ClusterID,
		"member_id", resp.MemberID, "initial_cluster", resp.InitialCluster)
	return &resp, nil
}

// postJoin POSTs a join request to the agent listener at join, trusting
// only ca, and answers the status and body.
func postJoin(ctx context.Context, join string, ca *x509.Certificate, req messages.ReplicaJoinRequest, timeout time.Duration) (int, []byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(join, "/")+"/v1/cluster/join", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := hc.Do(hreq)
	if err != nil {
		return 0, nil, err
	}
	defer hresp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	return hresp.StatusCode, rb, err
}

// checkJoinTimeout bounds the cluster check of a restart with --join: the
// replica it names may well be down, and the restart must not wait on it.
const checkJoinTimeout = 10 * time.Second

// checkJoinCluster runs when --join is set but the data dir already holds a
// member: the join is ignored, but a member of another cluster than the
// one --join names must not start as if it belonged there (an old data dir
// reused after the cluster was rebuilt or restored, a typo in the data dir).
// It asks the join URL for its cluster id and refuses on a definite
// mismatch, naming both ids. When it cannot tell (the replica asked is
// down, the token is gone from the settings) it says so and lets the
// restart go on: --join stays in unit files after the first boot.
func checkJoinCluster(ctx context.Context, cfg apiConfig, pki string, log *slog.Logger) error {
	local, err := etcd.DataDirClusterID(cfg.DataDir)
	if err != nil {
		log.Warn("cannot read this data dir's cluster id to compare it with --join", "err", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkJoinTimeout)
	defer cancel()
	// Trust: the CA the token pins when there is a token, else the
	// cluster CA this data dir keeps.
	var ca *x509.Certificate
	if tok, terr := security.ParseReplicaJoinToken(strings.TrimSpace(cfg.JoinToken)); terr == nil {
		ca, err = enroll.FetchPinnedCA(ctx, cfg.Join, tok.CAFingerprint, checkJoinTimeout)
	} else {
		ca, err = readCertFile(filepath.Join(pki, caCertFile))
	}
	if err != nil {
		log.Warn("cannot check the cluster of --join: its CA is not trusted or not reachable; the data dir's member starts",
			"join", cfg.Join, "data_dir_cluster_id", fmt.Sprintf("%x", local), "err", err)
		return nil
	}
	status, rb, err := postJoin(ctx, cfg.Join, ca, messages.ReplicaJoinRequest{Name: cfg.Etcd.Name, MemberOf: fmt.Sprintf("%x", local)}, checkJoinTimeout)
	var resp messages.ReplicaJoinResponse
	switch {
	case err != nil:
		log.Warn("cannot check the cluster of --join; the data dir's member starts", "join", cfg.Join, "err", err)
		return nil
	case status == http.StatusConflict:
		aerr := apierror.Decode(status, rb)
		if aerr.Code != "cluster_mismatch" {
			break
		}
		remote, _ := aerr.Details["cluster_id"].(string)
		return fmt.Errorf("data dir %s holds a member of cluster %x, but %s belongs to cluster %s: refusing to start; "+
			"join with an empty data dir, or start without --join", cfg.DataDir, local, cfg.Join, remote)
	case status == http.StatusOK && json.Unmarshal(rb, &resp) == nil && resp.ClusterID != "":
		if !strings.EqualFold(resp.ClusterID, fmt.Sprintf("%x", local)) {
			return fmt.Errorf("data dir %s holds a member of cluster %x, but %s belongs to cluster %s: refusing to start; "+
				"join with an empty data dir, or start without --join", cfg.DataDir, local, cfg.Join, resp.ClusterID)
		}
		return nil
	}
	log.Warn("cannot check the cluster of --join; the data dir's member starts", "join", cfg.Join, "status", status,
		"answer", apierror.Decode(status, rb).Error())
	return nil
}

// readCertFile reads one PEM certificate.
func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

// serviceURL is the URL a listener is reached at, as recorded with the
// replica; a wildcard host is replaced by this host's name.
func serviceURL(tlsOn bool, addr string) string {
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return scheme + "://" + net.JoinHostPort(advertisedHost(host), port)
}

// advertisedHost is the host a replica records for a listener on host:
// host itself, or the host name for a wildcard address. Clients and agents
// fail over to that URL, so the listener's certificate must name it
// (withAdvertisedSAN).
func advertisedHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() || host == "" {
		if h, err := os.Hostname(); err == nil {
			return h
		}
	}
	return host
}

// withAdvertisedSAN adds to sans the host this replica records for the
// listener at listen (see advertisedHost), when a certificate can name it
// and sans lacks it: whatever tls.sans or agent.sans say, each replica's
// certificate is valid for the URL the others hand out for it.
func withAdvertisedSAN(sans []string, listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return sans
	}
	h := strings.ToLower(advertisedHost(host))
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return sans
		}
		h = ip.String()
	} else if !validDNSName(h) {
		return sans
	}
	for _, s := range sans {
		if strings.EqualFold(s, h) {
			return sans
		}
	}
	return append(slices.Clone(sans), h)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
