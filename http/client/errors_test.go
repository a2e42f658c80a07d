package client

import (
	"net/http"
	"strings"
	"testing"

	"github.com/otherix/otherix/http/apierror"
)

// What the far side says reaches the CLI's terminal: an error page or an
// envelope message keeps no control bytes and is bounded.
func TestDecodeAPIErrorBoundsMessage(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusBadGateway, Header: http.Header{}}
	page := []byte("\x1b]0;pwned\x07<html>" + strings.Repeat("x", 4*apierror.MaxMessage) + "</html>")
	env := []byte(`{"error":{"code":"c","message":"\u001b[2J` + strings.Repeat("y", 4*apierror.MaxMessage) + `"}}`)
	for _, raw := range [][]byte{page, env} {
		e := decodeAPIError(resp, raw).(*APIError)
		if strings.ContainsAny(e.Message, "\x1b\x07") || len([]rune(e.Message)) > apierror.MaxMessage+1 {
			t.Errorf("code %s: message of %d runes keeps control bytes or is unbounded: %.40q", e.Code, len([]rune(e.Message)), e.Message)
		}
	}
	if e := decodeAPIError(resp, page).(*APIError); e.Code != "http_bad_gateway" {
		t.Errorf("code %q", e.Code)
	}
}
