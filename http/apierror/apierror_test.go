package apierror

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	e := Decode(400, []byte(`{"error":{"code":"unknown_field","message":"unknown field \"x\"","details":{"field":"x"}}}`))
	if e.Code != "unknown_field" || e.Details["field"] != "x" || e.Status != 400 {
		t.Fatalf("decoded %+v", e)
	}
	if !errors.Is(e, &Error{Code: "unknown_field"}) || errors.Is(e, &Error{Code: "other"}) {
		t.Fatal("errors.Is does not match by code")
	}
	if got := e.Error(); !strings.Contains(got, "unknown_field") || !strings.Contains(got, "field=x") || !strings.Contains(got, "HTTP 400") {
		t.Fatalf("message %q", got)
	}
	page := Decode(502, []byte("<html>\x00bad gateway "+strings.Repeat("x", 2*MaxMessage)+"</html>"))
	if page.Code != "" || len([]rune(page.Message)) > MaxMessage+1 || strings.ContainsRune(page.Message, 0) {
		t.Fatalf("excerpt %q", page.Message)
	}
	if empty := Decode(503, nil); empty.Message != "Service Unavailable" {
		t.Fatalf("empty body message %q", empty.Message)
	}
}

// An envelope's message is bounded and printable like any other body: the
// far side does not choose what reaches a terminal or a log line.
func TestParseBoundsMessage(t *testing.T) {
	long := strings.Repeat("y", 3*MaxMessage)
	d, ok := Parse([]byte(`{"error":{"code":"c","message":"\u001b[31m` + long + `"}}`))
	if !ok || d.Code != "c" || len([]rune(d.Message)) > MaxMessage+1 || strings.ContainsRune(d.Message, 0x1b) {
		t.Fatalf("parsed %v %q", ok, d.Message)
	}
	if _, ok := Parse([]byte(`{"error":{"message":"no code"}}`)); ok {
		t.Fatal("an envelope without a code accepted")
	}
	if b, _ := json.Marshal(NewBody("c", "m", nil)); string(b) != `{"error":{"code":"c","message":"m","details":{}}}` {
		t.Fatalf("envelope %s", b)
	}
}
