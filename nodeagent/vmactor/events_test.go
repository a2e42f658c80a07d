package vmactor

import (
	"strings"
	"testing"
)

// TestIOErrorText: a BLOCK_IO_ERROR names the disk as the guest sees it
// and says what to do about a full node.
func TestIOErrorText(t *testing.T) {
	for _, tt := range []struct {
		data map[string]any
		want []string
	}{
		{map[string]any{"device": "", "node-name": "disk0", "operation": "write", "action": "stop", "nospace": true,
			"reason": "No space left on device"}, []string{"I/O error on disk vda: No space left on device", "free space", "otherix vm resume"}},
		{map[string]any{"node-name": "seed0", "operation": "read", "action": "stop", "reason": "Input/output error"},
			[]string{"I/O error on disk vdb (the cloud-init seed): read Input/output error"}},
		{map[string]any{"device": "other", "operation": "write", "action": "stop"}, []string{"I/O error on disk other: write unknown error"}},
	} {
		got := ioErrorText(tt.data)
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("ioErrorText(%v) = %q; want it to contain %q", tt.data, got, w)
			}
		}
	}
}
