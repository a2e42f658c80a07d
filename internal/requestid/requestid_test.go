package requestid

import (
	"context"
	"strings"
	"testing"
)

func TestSane(t *testing.T) {
	for id, want := range map[string]bool{
		"0123abcd":              true,
		"task-01J.x_y":          true,
		New():                   true,
		"":                      false,
		strings.Repeat("a", 65): false,
		"a b":                   false,
		"a\nb":                  false,
		`a"b`:                   false,
	} {
		if got := Sane(id); got != want {
			t.Errorf("Sane(%q) = %v, want %v", id, got, want)
		}
	}
	if From(context.Background()) != "" || From(With(context.Background(), "x1")) != "x1" {
		t.Error("With/From do not round-trip")
	}
}
