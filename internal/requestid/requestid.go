// Package requestid carries one id per request across our processes: the
// API adopts or makes it (X-Request-Id), the CLI prints it with an error,
// and the control plane passes it on to the agent it calls, so one id finds
// the request in the replica's log and in the agent's. Work that outlives
// its request (a job) goes to the agent under its task's id instead.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

// Header carries the id on HTTP requests and answers.
const Header = "X-Request-Id"

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the id ctx carries, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// Sane reports whether a caller's id may be adopted: 1 to 64 characters of
// [A-Za-z0-9._-], so it cannot forge log lines or blow up a log field.
func Sane(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '-' || ch == '_' || ch == '.'
		if !ok {
			return false
		}
	}
	return true
}

// New makes a fresh random id.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
