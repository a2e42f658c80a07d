package enroll

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/security"
)

// renewFixture enrolls hv1 against a fake control plane and returns its
// state and an mTLS client presenting the identity.
func renewFixture(t *testing.T) (*fakeAPI, *State, *Identity, *http.Client) {
	t.Helper()
	ca := newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")
	if _, err := Bootstrap(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	st, err := LoadState(opts.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	id := NewIdentity(st.TLSCert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.Get(), nil },
		RootCAs:              st.CAPool(),
	}}}
	return f, st, id, client
}

func TestRenewalDue(t *testing.T) {
	_, st, _, _ := renewFixture(t)
	life := st.Cert.NotAfter.Sub(st.Cert.NotBefore)
	if RenewalDue(st.Cert, st.Cert.NotBefore.Add(life/2), 0) {
		t.Error("due at half its life")
	}
	if !RenewalDue(st.Cert, st.Cert.NotBefore.Add(life*3/4), 0) {
		t.Error("not due at three quarters")
	}
	if !RenewalDue(st.Cert, time.Now(), life) {
		t.Error("not due with before = its whole lifetime")
	}
}

func TestRenewInstallsNewPair(t *testing.T) {
	f, st, _, client := renewFixture(t)
	oldFP := security.Fingerprint(st.Cert)
	oldKey, _ := os.ReadFile(filepath.Join(st.Dir, KeyFile))
	next, err := Renew(context.Background(), st, client, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if f.renews.Load() != 1 {
		t.Fatalf("%d renew requests", f.renews.Load())
	}
	if security.Fingerprint(next.Cert) == oldFP {
		t.Fatal("the certificate did not change")
	}
	if key, _ := os.ReadFile(filepath.Join(st.Dir, KeyFile)); string(key) == string(oldKey) {
		t.Fatal("the key did not change: a renewal must rotate the key")
	}
	if m := mode(t, filepath.Join(st.Dir, KeyFile)); m != 0o600 {
		t.Fatalf("key mode %o", m)
	}
	for _, staged := range []string{keyNext, certNext} {
		if _, err := os.Stat(filepath.Join(st.Dir, staged)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", staged, err)
		}
	}
	again, err := LoadState(st.Dir)
	if err != nil || security.Fingerprint(again.Cert) != security.Fingerprint(next.Cert) {
		t.Fatalf("reload: %v", err)
	}
}

func TestRenewRefusesCertificateForAnotherNode(t *testing.T) {
	f, st, _, client := renewFixture(t)
	f.renewAs = "hv2"
	oldFP := security.Fingerprint(st.Cert)
	if _, err := Renew(context.Background(), st, client, time.Now()); err == nil {
		t.Fatal("a certificate for another node was installed")
	}
	after, err := LoadState(st.Dir)
	if err != nil || security.Fingerprint(after.Cert) != oldFP {
		t.Fatalf("the identity changed after a refused renewal: %v", err)
	}
}

// TestInterruptedRenewal: a crash between the renames is finished by the
// next LoadState; a staged key whose certificate never came is dropped.
func TestInterruptedRenewal(t *testing.T) {
	f, st, _, _ := renewFixture(t)
	keyPEM, csr, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, fp, err := f.ca.SignNodeCSR(csr, "hv1", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Crash after the key rename, before the certificate's.
	if err := security.WriteKeyFile(filepath.Join(st.Dir, KeyFile), keyPEM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir, certNext), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(st.Dir)
	if err != nil || security.Fingerprint(got.Cert) != fp {
		t.Fatalf("interrupted renewal not finished: %v", err)
	}

	// A staged key alone: the answer never came.
	if err := security.WriteKeyFile(filepath.Join(st.Dir, keyNext), keyPEM); err != nil {
		t.Fatal(err)
	}
	got, err = LoadState(st.Dir)
	if err != nil || security.Fingerprint(got.Cert) != fp {
		t.Fatalf("after a lost answer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.Dir, keyNext)); !os.IsNotExist(err) {
		t.Fatalf("staged key kept: %v", err)
	}
}
