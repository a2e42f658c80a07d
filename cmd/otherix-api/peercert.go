package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/security"
)

// peerRenewInterval is how often a serving replica looks at its peer
// certificate. A certificate lives a year (security.ReplicaCertValidity)
// and is renewed with a third of it left, so an hour is plenty.
const peerRenewInterval = time.Hour

// renewPeerCertIfDue re-signs this replica's peer certificate when a third
// of its validity or less is left, keeping its key: etcd reads the
// certificate and key files at every new peer connection (both ways:
// transport.TLSInfo's GetCertificate and GetClientCertificate), so the new
// certificate is used from the next connection on, without a restart.
// Only the certificate file changes, by an atomic rename, so no handshake
// reads a certificate that does not match its key. It answers whether it
// renewed and the certificate's expiry afterwards.
func renewPeerCertIfDue(files *etcd.PeerTLS, name string, sans []string, ca *security.CA, now time.Time) (bool, time.Time, error) {
	cert, err := readCertFile(files.CertFile)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("peer certificate: %w", err)
	}
	left, total := cert.NotAfter.Sub(now), cert.NotAfter.Sub(cert.NotBefore)
	if left > total/3 {
		return false, cert.NotAfter, nil
	}
	keyPEM, err := os.ReadFile(files.KeyFile)
	if err != nil {
		return false, cert.NotAfter, fmt.Errorf("peer key: %w", err)
	}
	csr, err := security.ReplicaCSRForKey(keyPEM, name, sans)
	if err != nil {
		return false, cert.NotAfter, fmt.Errorf("renew peer certificate: %w", err)
	}
	certPEM, _, err := ca.SignReplicaCSR(csr, name, now, 0)
	if err != nil {
		return false, cert.NotAfter, fmt.Errorf("renew peer certificate: %w", err)
	}
	if err := writeFileAtomic(files.CertFile, certPEM, 0o644); err != nil {
		return false, cert.NotAfter, fmt.Errorf("renew peer certificate: %w", err)
	}
	renewed, err := readCertFile(files.CertFile)
	if err != nil {
		return true, time.Time{}, err
	}
	return true, renewed.NotAfter, nil
}

// runPeerRenewal checks the peer certificate every interval until ctx
// ends; the caller owns the goroutine.
func runPeerRenewal(ctx context.Context, files *etcd.PeerTLS, name string, sans []string, ca *security.CA, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		renewed, notAfter, err := renewPeerCertIfDue(files, name, sans, ca, time.Now())
		switch {
		case err != nil:
			log.Warn("peer certificate renewal failed; retried", "err", err, "retry_in", interval)
		case renewed:
			log.Info("peer certificate renewed; new peer connections use it", "not_after", notAfter)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeFileAtomic replaces path by a file holding data, through a
// temporary file in the same directory and a rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
