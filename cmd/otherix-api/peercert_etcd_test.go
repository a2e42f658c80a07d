//go:build etcd

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/security"
)

// TestPeerCertRenewedWhileRunning: a peer certificate with more than a third
// of its validity left is kept; with less, it is re-signed for the same key
// and the running member presents the new one on the next peer connection.
func TestPeerCertRenewedWhileRunning(t *testing.T) {
	// The CA predates the certificate issued an hour ago.
	ca, err := security.NewCA("test", time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	issued := time.Now().Add(-61 * time.Minute)
	certPEM, keyPEM, err := ca.IssueReplicaPeerCert("a", []string{"127.0.0.1"}, issued, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writePeerFiles(pki, ca.CertPEM(), certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	files := &etcd.PeerTLS{CertFile: filepath.Join(pki, peerCertFile), KeyFile: filepath.Join(pki, peerKeyFile), CAFile: filepath.Join(pki, caCertFile)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: filepath.Join(dir, "data"), Name: "a", PeerURL: "https://" + addr, PeerTLS: files})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// A peer's view: a replica certificate of the same CA.
	cPEM, kPEM, err := ca.IssueReplicaPeerCert("b", []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.X509KeyPair(cPEM, kPEM)
	if err != nil {
		t.Fatal(err)
	}
	served := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	before := served()
	if before.NotAfter.Sub(issued) > 91*time.Minute {
		t.Fatalf("served certificate expires %s, not the one written", before.NotAfter)
	}

	// At issue time, two thirds and more are left: kept.
	if renewed, _, err := renewPeerCertIfDue(files, "a", []string{"127.0.0.1"}, ca, issued.Add(time.Minute)); err != nil || renewed {
		t.Fatalf("renewal with most of the validity left = %v, %v", renewed, err)
	}
	renewed, notAfter, err := renewPeerCertIfDue(files, "a", []string{"127.0.0.1"}, ca, time.Now())
	if err != nil || !renewed || !notAfter.After(before.NotAfter.Add(24*time.Hour)) {
		t.Fatalf("renewal with under a third left = %v, %s, %v", renewed, notAfter, err)
	}
	after := served()
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 || after.NotAfter.Sub(notAfter).Abs() > time.Second {
		t.Fatalf("the member still serves the old certificate (serial %s, expiry %s)", after.SerialNumber, after.NotAfter)
	}
	if !bytes.Equal(after.RawSubjectPublicKeyInfo, before.RawSubjectPublicKeyInfo) {
		t.Fatal("renewal changed the key")
	}
	if name, err := security.ReplicaNameFromCert(after); err != nil || name != "a" {
		t.Fatalf("renewed certificate is not a's replica certificate: %q, %v", name, err)
	}
	if _, err := m.Client().Put(ctx, "/otherix/probe", "v"); err != nil {
		t.Fatalf("member after renewal: %v", err)
	}
}
