package gateway

import (
	"context"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Serial consoles (DESIGN §8): POST /v1/vms/{id}/console issues a
// single-use token, kept in etcd as a hash under a lease of
// messages.ConsoleTokenTTL, so that whichever replica the WebSocket reaches
// can consume it; GET /v1/vms/{id}/console/ws consumes it and the gateway
// dials the agent of the VM's node. The HTTP layer proxies the frames.

// ConsoleTokenPrefix starts every console token: otc_<id>_<secret>, the
// layout of the otx_ API tokens with a kind of its own, so that one is never
// accepted as the other.
const ConsoleTokenPrefix = "otc_"

// ConsoleDialer is the part of the agent API consoles use;
// *agentclient.Client implements it.
type ConsoleDialer interface {
	Console(ctx context.Context, n agentclient.Node, id, mode string, force bool) (*websocket.Conn, error)
}

var _ ConsoleDialer = (*agentclient.Client)(nil)

// newConsoleToken returns a new console token, its public id and the hash to
// store. It borrows the API token's generator and swaps the prefix, so the
// alphabet, lengths and entropy are the same.
func newConsoleToken() (token, id, hash string) {
	tok, id, hash := security.NewAPIToken()
	return ConsoleTokenPrefix + strings.TrimPrefix(tok, security.APITokenPrefix), id, hash
}

// parseConsoleToken splits a console token as strictly as an API token.
func parseConsoleToken(s string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(s, ConsoleTokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, err := security.ParseAPIToken(security.APITokenPrefix + rest)
	return id, secret, err == nil
}

// consoleMode checks and defaults a requested mode.
func consoleMode(mode string) (string, error) {
	switch mode {
	case "":
		return messages.ConsoleInteractive, nil
	case messages.ConsoleInteractive, messages.ConsoleReadOnly:
		return mode, nil
	}
	return "", messages.Invalid("mode", "must be %q or %q", messages.ConsoleInteractive, messages.ConsoleReadOnly)
}

// consoleReady refuses a VM whose serial console cannot be attached.
func consoleReady(vm *messages.VM) error {
	if vm.Status.Node == "" {
		return vmNotRunning(vm, "is not placed on a node; start it to use its console")
	}
	switch vm.Status.Phase {
	case messages.PhaseRunning, messages.PhasePaused, messages.PhaseUnknown:
		// Paused: the serial line is there, the guest answers on resume.
		// Unknown: the node stopped reporting; the agent tells.
		return nil
	}
	return vmNotRunning(vm, "is "+vm.Status.Phase+"; start it to use its console")
}

// IssueConsoleToken issues a single-use console token for VM ref, bound to
// user (who asks), owner (the scope they asked under), the VM and the mode.
func (g *Gateway) IssueConsoleToken(ctx context.Context, user, owner, ref string, req messages.ConsoleTokenRequest) (*messages.ConsoleToken, error) {
	mode, err := consoleMode(req.Mode)
	if err != nil {
		return nil, err
	}
	if req.Force && mode != messages.ConsoleInteractive {
		return nil, messages.Invalid("force", "only an interactive console takes over")
	}
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	if err := consoleReady(vm); err != nil {
		return nil, err
	}
	token, id, hash := newConsoleToken()
	expires := g.st.Now().Add(messages.ConsoleTokenTTL).UTC()
	rec := store.ConsoleTokenRecord{Hash: hash, User: user, Scope: owner, VM: vm.ID, Mode: mode, Force: req.Force, ExpiresAt: expires}
	if err := g.st.PutConsoleToken(ctx, id, rec, messages.ConsoleTokenTTL); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("token", token)
	return &messages.ConsoleToken{Token: token, Mode: mode, ExpiresAt: expires,
		URL: "/v1/vms/" + url.PathEscape(vm.ID) + "/console/ws?" + q.Encode()}, nil
}

// AttachConsole consumes a console token for VM ref (the id the token was
// issued for) and opens the VM's console on its node. A bad, expired or used
// token is console_token_invalid (401); a VM the token's user can no longer
// see is not found; a VM that stopped meanwhile is vm_not_running; the
// agent's refusals (console_busy, …) pass through. The caller owns the
// returned connection.
func (g *Gateway) AttachConsole(ctx context.Context, ref, token string) (*websocket.Conn, *store.ConsoleTokenRecord, error) {
	id, secret, ok := parseConsoleToken(token)
	if !ok {
		return nil, nil, store.ErrConsoleTokenInvalid
	}
	rec, err := g.st.ConsumeConsoleToken(ctx, id, security.HashToken(secret), ref)
	if err != nil {
		return nil, nil, err
	}
	vm, err := g.GetVM(ctx, rec.Scope, rec.VM)
	if err != nil {
		return nil, rec, err
	}
	if err := consoleReady(vm); err != nil {
		return nil, rec, err
	}
	dialer, n, err := g.agentFor(ctx, vm.Status.Node)
	if err != nil {
		return nil, rec, err
	}
	conn, err := dialer.Console(ctx, n, vm.ID, rec.Mode, rec.Force)
	if err != nil {
		return nil, rec, agentCallError(vm, n.Name, err)
	}
	return conn, rec, nil
}
