package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"sigs.k8s.io/yaml"
)

// envConfig names the environment variable that points at the CLI config
// file (DESIGN §9); --config wins over it.
const envConfig = "OTHERIX_CONFIG"

// cliConfig is ~/.otherix/config: the clusters the CLI knows and the
// credentials for each. It holds secrets, so it is written 0600 in a 0700
// directory.
type cliConfig struct {
	CurrentContext string       `json:"current_context"`
	Contexts       []cliContext `json:"contexts"`
}

// cliContext is one cluster and who the CLI is there.
type cliContext struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	// Servers are the API URLs of every replica of the cluster, learned
	// at login (GET /v1/cluster/endpoints) and on each session refresh. A
	// request that cannot reach Server, or that it answers 503 not_ready or
	// no_quorum, goes on to the next one (see http/failover); empty for a
	// single replica.
	Servers []string `json:"servers,omitempty"`
	User    string   `json:"user,omitempty"`
	// AccessToken and RefreshToken are a login session; APIToken is an otx_
	// token given to `otherix login --token`. One or the other is set.
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	APIToken     string `json:"api_token,omitempty"`
	// CAFingerprint is the SHA-256 of the cluster CA certificate, pinned at
	// login with --ca-fingerprint; CAPEM is that certificate (PEM, public).
	// With CAPEM set, every request to an https server trusts that CA alone.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
	CAPEM         string `json:"ca_pem,omitempty"`
}

// context returns the context called name, or nil.
func (c *cliConfig) context(name string) *cliContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// upsert replaces the context of the same name or adds ctx.
func (c *cliConfig) upsert(ctx cliContext) {
	if cur := c.context(ctx.Name); cur != nil {
		*cur = ctx
		return
	}
	c.Contexts = append(c.Contexts, ctx)
}

// remove deletes the context called name and reports whether it existed.
func (c *cliConfig) remove(name string) bool {
	n := len(c.Contexts)
	c.Contexts = slices.DeleteFunc(c.Contexts, func(x cliContext) bool { return x.Name == name })
	if c.CurrentContext == name {
		c.CurrentContext = ""
	}
	return len(c.Contexts) != n
}

// defaultConfigPath is ~/.otherix/config.
func defaultConfigPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory for the config file (set %s or --config): %w", envConfig, err)
	}
	return filepath.Join(home, ".otherix", "config"), nil
}

// loadConfig reads the config at path; a missing file is an empty config.
func loadConfig(path string) (*cliConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &cliConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c cliConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// saveConfig writes c to path atomically (a temp file in the same directory,
// then a rename) with mode 0600, creating the directory 0700.
func saveConfig(path string, c *cliConfig) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.tmp")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	// CreateTemp makes the file 0600 already; say so for umask-proof intent.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// configLockPoll is how often lockConfig retries a lock another process
// holds; the caller's context bounds the wait.
const configLockPoll = 20 * time.Millisecond

// lockConfig takes an exclusive lock shared by every otherix process using
// the config at path, and returns its release. The lock is a sibling file
// (path + ".lock"), not the config itself: saveConfig replaces the config by
// a rename, so a lock on its inode would not be seen by a process that opens
// the new file. The lock is advisory (flock), released when the process
// dies, and waits at most until ctx ends.
func lockConfig(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create config directory: %w", err)
	}
	l := flock.New(path+".lock", flock.SetPermissions(0o600))
	ok, err := l.TryLockContext(ctx, configLockPoll)
	if err != nil || !ok {
		return nil, fmt.Errorf("lock config %s: %w", path, cmp.Or(err, ctx.Err()))
	}
	return func() { _ = l.Unlock() }, nil
}

// masked is a secret as `config view` shows it: whether it is set, never
// its value.
func masked(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// abbreviatedPEM is a certificate as `config view` shows it: public, but
// too long to print whole.
func abbreviatedPEM(s string) string {
	if s == "" {
		return ""
	}
	body := strings.Join(strings.Fields(strings.NewReplacer("-----BEGIN CERTIFICATE-----", "", "-----END CERTIFICATE-----", "").Replace(s)), "")
	if len(body) > 24 {
		body = body[:12] + "…" + body[len(body)-12:]
	}
	return "-----BEGIN CERTIFICATE----- " + body + " -----END CERTIFICATE-----"
}
