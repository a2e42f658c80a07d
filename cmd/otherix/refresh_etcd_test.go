//go:build etcd

package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/otherix/otherix/identity"
)

// expireAccess replaces the saved access token by one the server refuses,
// so the next command must refresh the session.
func (c *cli) expireAccess() string {
	c.t.Helper()
	cfg, err := loadConfig(c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	cx := cfg.context(cfg.CurrentContext)
	if cx == nil || cx.RefreshToken == "" {
		c.t.Fatalf("no session in the config: %+v", cfg)
	}
	cx.AccessToken = "expired.jwt.token"
	if err := saveConfig(c.cfg, cfg); err != nil {
		c.t.Fatal(err)
	}
	return cx.RefreshToken
}

// TestCLIConcurrentRefresh: several otherix processes sharing one config
// find the access token expired at once. Each loads the config on its own,
// as separate processes do. With the server's grace disabled, only the
// config lock keeps them from presenting the same refresh token twice,
// which would revoke the session: every command succeeds and the session
// stays usable.
func TestCLIConcurrentRefresh(t *testing.T) {
	c := newCLI(t, startAPIWith(t, identity.Config{RefreshGrace: -1}))
	for round := range 3 {
		before := c.expireAccess()
		const n = 4
		codes := make([]int, n)
		errs := make([]string, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				// runIO, not c.run: c.run resets the shared stdin field,
				// which would race between the goroutines.
				var out, errOut bytes.Buffer
				codes[i] = runIO(context.Background(), []string{"--config", c.cfg, "vm", "list"}, strings.NewReader(""), &out, &errOut)
				errs[i] = errOut.String()
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if codes[i] != 0 {
				t.Fatalf("round %d: process %d exited %d: %s", round, i, codes[i], errs[i])
			}
		}
		cfg, err := loadConfig(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if cx := cfg.context(cfg.CurrentContext); cx.RefreshToken == before {
			t.Fatalf("round %d: the refreshed session was not saved", round)
		}
	}
	c.ok("vm", "list")
}
