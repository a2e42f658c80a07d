package server

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"
)

// FuzzIdempotencyHash: the request hash is deterministic, hex SHA-256, and
// frames its parts, so moving bytes between If-Match and the body (or
// between any two parts) never yields the same hash.
func FuzzIdempotencyHash(f *testing.F) {
	f.Add("POST", "/v1/vms?wait=30s", `"3"`, []byte(`{"name":"web-1"}`))
	f.Add("DELETE", "/v1/vms/web-1", "", []byte(nil))
	f.Add("POST", "/", "ab", []byte("c"))
	f.Fuzz(func(t *testing.T, method, uri, ifMatch string, body []byte) {
		u, err := url.ParseRequestURI(uri)
		if err != nil {
			return
		}
		req := func(ifm string) *http.Request {
			r := &http.Request{Method: method, URL: u, Header: http.Header{}}
			if ifm != "" {
				r.Header["If-Match"] = []string{ifm}
			}
			return r
		}
		h := requestHash(req(ifMatch), body)
		if len(h) != 64 {
			t.Fatalf("hash %q is not hex SHA-256", h)
		}
		if h != requestHash(req(ifMatch), bytes.Clone(body)) {
			t.Fatal("hash is not deterministic")
		}
		if len(body) > 0 && requestHash(req(ifMatch+string(body[:1])), body[1:]) == h {
			t.Fatal("moving a byte from the body to If-Match kept the hash")
		}
		if len(ifMatch) > 0 && requestHash(req(ifMatch[:len(ifMatch)-1]), append([]byte{ifMatch[len(ifMatch)-1]}, body...)) == h {
			t.Fatal("moving a byte from If-Match to the body kept the hash")
		}
		if requestHash(req(ifMatch), append(bytes.Clone(body), 0)) == h {
			t.Fatal("a longer body kept the hash")
		}
	})
}
