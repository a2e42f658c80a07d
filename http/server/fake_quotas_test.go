package server

import (
	"context"

	"github.com/otherix/otherix/messages"
)

// The fake keeps no quotas: quota handlers are tested end to end on etcd
// (quota_etcd_test.go).

func (f *fakeCP) GetQuota(_ context.Context, user string) (*messages.QuotaView, error) {
	return nil, messages.NotFound("user", user)
}

func (f *fakeCP) SetQuota(_ context.Context, user string, _ messages.Quota) (*messages.QuotaView, error) {
	return nil, messages.NotFound("user", user)
}
