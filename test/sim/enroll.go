package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

var simAdmin = messages.Principal{UserID: "sim-admin", Role: "admin"}

// nodeCred is one enrolled node's identity, in PEM as the agent keeps it in
// its state dir; the split mode hands these from server to client in a file.
type nodeCred struct {
	Name string `json:"name"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func (c nodeCred) keyPair() (tls.Certificate, error) {
	return tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
}

// enrollAll enrolls n nodes through the gateway as an agent would (a join
// token, a key generated locally, a CSR) and returns their client
// certificates and keys.
func enrollAll(ctx context.Context, g *gateway.Gateway, n, workers int) ([]nodeCred, error) {
	certs := make([]nodeCred, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := enrollOne(ctx, g, fmt.Sprintf("sim-%05d", i))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				certs[i] = c
			}
		}()
	}
	wg.Wait()
	return certs, firstErr
}

func enrollOne(ctx context.Context, g *gateway.Gateway, name string) (nodeCred, error) {
	tok, err := g.CreateJoinToken(ctx, simAdmin, messages.CreateJoinTokenRequest{NodeName: name})
	if err != nil {
		return nodeCred{}, fmt.Errorf("join token for %s: %w", name, err)
	}
	keyPEM, der, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		return nodeCred{}, err
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	resp, err := g.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: name, CSR: csr,
		Arch: "amd64", AgentVersion: "0.1.0"}, "127.0.0.1")
	if err != nil {
		return nodeCred{}, fmt.Errorf("enroll %s: %w", name, err)
	}
	return nodeCred{Name: name, Cert: resp.Certificate, Key: string(keyPEM)}, nil
}

// elapsedSince is a small helper for progress lines.
func elapsedSince(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }
