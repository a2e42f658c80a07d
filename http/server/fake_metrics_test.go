package server

import (
	"context"

	"github.com/otherix/otherix/messages"
)

// fakeMetrics answers one sampled VM named like the ref asked for.
type fakeMetrics struct{}

func (fakeMetrics) VMMetrics(_ context.Context, owner, ref string) (*messages.VMMetricsView, error) {
	vm := fakeVM(ref, owner)
	return &messages.VMMetricsView{ID: vm.ID, Name: vm.Name}, nil
}

func (fakeMetrics) TopVMs(context.Context, string, int) ([]messages.VMMetricsView, error) {
	return []messages.VMMetricsView{}, nil
}

func (fakeMetrics) TopNodes(context.Context) ([]messages.NodeTop, error) {
	return []messages.NodeTop{}, nil
}
