package gateway

import (
	"context"

	"github.com/otherix/otherix/messages"
)

// GetQuota returns a user's quota and what their VMs use now.
func (g *Gateway) GetQuota(ctx context.Context, user string) (*messages.QuotaView, error) {
	if !messages.ValidID(user) {
		return nil, messages.NotFound("user", user)
	}
	if _, err := g.st.GetUser(ctx, user); err != nil {
		return nil, err
	}
	q, err := g.st.GetQuota(ctx, user)
	if err != nil {
		return nil, err
	}
	u, err := g.st.Usage(ctx, user)
	if err != nil {
		return nil, err
	}
	return &messages.QuotaView{User: user, Quota: q, Usage: u}, nil
}

// SetQuota replaces a user's quota (admin). Lowering a limit below what the
// user already uses refuses their next create or growth, never what exists.
func (g *Gateway) SetQuota(ctx context.Context, user string, q messages.Quota) (*messages.QuotaView, error) {
	if !messages.ValidID(user) {
		return nil, messages.NotFound("user", user)
	}
	if err := g.st.SetQuota(ctx, user, q); err != nil {
		return nil, err
	}
	return g.GetQuota(ctx, user)
}
