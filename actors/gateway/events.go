package gateway

import (
	"context"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// pruneEvents is the events loop: it keeps the lifecycle events within the
// settings' retention, by age first, then by count.
func (g *Gateway) pruneEvents(ctx context.Context) error {
	set, err := g.st.Settings(ctx)
	if err != nil {
		return err
	}
	count, age := set.EventRetention()
	n, err := g.st.PruneEvents(ctx, count, g.st.Now().Add(-age))
	if n > 0 {
		g.log.Info("events pruned", "removed", n, "retention_count", count, "retention_age", age)
	}
	return err
}

// ListEvents answers one page of lifecycle events matching f.
func (g *Gateway) ListEvents(ctx context.Context, f store.EventFilter, page store.Page) ([]*messages.Event, string, error) {
	return g.st.ListEvents(ctx, f, page)
}

// GetEvent answers one lifecycle event.
func (g *Gateway) GetEvent(ctx context.Context, id string) (*messages.Event, error) {
	if !messages.ValidID(id) {
		return nil, messages.NotFound("event", id)
	}
	return g.st.GetEvent(ctx, id)
}
