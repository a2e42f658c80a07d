package apierror

import (
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
	page := Decode(502, []byte("<html>\x00bad gateway "+strings.Repeat("x", 300)+"</html>"))
	if page.Code != "" || len([]rune(page.Message)) > 201 || strings.ContainsRune(page.Message, 0) {
		t.Fatalf("excerpt %q", page.Message)
	}
	if empty := Decode(503, nil); empty.Message != "Service Unavailable" {
		t.Fatalf("empty body message %q", empty.Message)
	}
}
