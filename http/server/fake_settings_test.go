package server

import (
	"context"
	"sync"

	"github.com/otherix/otherix/messages"
)

// fakeSettings is the settings side of fakeCP: a document in memory.
type fakeSettings struct {
	mu  sync.Mutex
	doc messages.Settings
}

func newFakeSettings() *fakeSettings {
	d := messages.DefaultSettings()
	d.Revision = 1
	return &fakeSettings{doc: d}
}

func (f *fakeSettings) Settings(context.Context) (*messages.Settings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.doc
	return &d, nil
}

func (f *fakeSettings) UpdateSettings(_ context.Context, _ messages.Principal, patch messages.SettingsPatch, ifMatch int64) (*messages.Settings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ifMatch != 0 && ifMatch != f.doc.Revision {
		return nil, messages.ErrStaleRevision
	}
	next := patch.Apply(f.doc)
	if err := next.Validate(); err != nil {
		return nil, err
	}
	next.Revision++
	f.doc = next
	d := f.doc
	return &d, nil
}
