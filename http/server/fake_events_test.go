package server

import (
	"context"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// fakeEvents is the events side of fakeCP: events are tested against real
// etcd in events_etcd_test.go.
type fakeEvents struct{}

func (fakeEvents) ListEvents(context.Context, store.EventFilter, store.Page) ([]*messages.Event, string, error) {
	return nil, "", nil
}

func (fakeEvents) GetEvent(_ context.Context, id string) (*messages.Event, error) {
	return nil, messages.NotFound("event", id)
}
