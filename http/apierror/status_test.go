package apierror

import (
	"net/http"
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestStatusRoundTrip(t *testing.T) {
	for k := range statuses {
		want := k
		if k == messages.KindStale {
			want = messages.KindConflict
		}
		if got := KindOf(Status(k)); got != want {
			t.Errorf("kind %v → %d → %v", k, Status(k), got)
		}
	}
	if Status(messages.Kind(-42)) != http.StatusInternalServerError || KindOf(http.StatusTeapot) != messages.KindInternal ||
		KindOf(http.StatusBadGateway) != messages.KindUnavailable {
		t.Error("fallbacks")
	}
}
