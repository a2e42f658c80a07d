package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

// TestLimiterFloodCannotResetVictim: filling the map with junk keys never
// evicts a bucket that is still draining, so the victim stays limited; new
// keys are refused while the map is full of draining buckets, and admitted
// again once buckets refill.
func TestLimiterFloodCannotResetVictim(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := New(5, 5, 10)
	for i := range 5 {
		if !l.Allow("victim@example.com", now) {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if l.Allow("victim@example.com", now) {
		t.Fatal("sixth attempt allowed")
	}
	for i := range 100 {
		l.Allow(fmt.Sprintf("junk%d@example.com", i), now)
	}
	if l.Allow("victim@example.com", now) {
		t.Fatal("flooding the map reset the victim's bucket")
	}
	if len(l.m) > l.max {
		t.Fatalf("map holds %d keys, max %d", len(l.m), l.max)
	}
	if l.Allow("newcomer@example.com", now) {
		t.Fatal("a new key was admitted while every bucket is draining")
	}
	// Once the junk buckets have refilled they may go, and new keys get in.
	later := now.Add(2 * time.Minute)
	if !l.Allow("newcomer@example.com", later) {
		t.Fatal("new key refused after the buckets refilled")
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                  "192.0.2.1",
		"::ffff:192.0.2.1":           "192.0.2.1",
		"2001:db8:1:2:aaaa::1":       "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff:0:9": "2001:db8:1:2::/64",
		"fe80::1%eth0":               "fe80::/64",
		"not-an-ip":                  "not-an-ip",
	} {
		if got := SourceKey(in); got != want {
			t.Errorf("SourceKey(%q) = %q, want %q", in, got, want)
		}
	}
	// Two addresses of one /64 share a bucket.
	l := NewBySource(1, 1, 10)
	now := time.Unix(1_700_000_000, 0)
	if !l.Allow("2001:db8::1", now) || l.Allow("2001:db8::2", now) {
		t.Fatal("addresses of one /64 did not share a bucket")
	}
	if !l.Allow("2001:db8:0:1::1", now) {
		t.Fatal("another /64 was limited")
	}
}

// TestTakeRetryAfter: a refused take says how long until the next token.
func TestTakeRetryAfter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := New(6, 1, 10) // one token per 10s
	if ok, _ := l.Take("k", now); !ok {
		t.Fatal("first take refused")
	}
	ok, wait := l.Take("k", now.Add(4*time.Second))
	if ok || wait < 5*time.Second || wait > 6*time.Second {
		t.Fatalf("take = %v, wait %v; want refused with about 6s", ok, wait)
	}
	if ok, _ := l.Take("k", now.Add(10*time.Second)); !ok {
		t.Fatal("take refused once the token refilled")
	}
}
