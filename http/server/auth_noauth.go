//go:build noauth

// This file exists only for the authentication-overhead benchmark
// (bench_etcd_test.go, `make bench`) and must never ship: with it, every
// request on a guarded route acts as an administrator whatever it sends.
//
// It is compiled only with -tags noauth, which no build, cross, check or
// release target of the Makefile passes (only `make bench` does, for go
// test). As a second guard, init panics in any binary that is not a test
// binary, so a server built with the tag by mistake does not start.
package server

import (
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

func init() {
	if !testing.Testing() {
		panic("http/server: built with -tags noauth, which disables authentication; it is for benchmarks only")
	}
}

// noAuthBuild reports whether this binary was built with -tags noauth.
const noAuthBuild = true

// principalFromRequest ignores the request and returns a fixed administrator,
// so authorization sees admin and the request skips token verification.
func (s *Server) principalFromRequest(*gin.Context) (*messages.Principal, error) {
	return &messages.Principal{UserID: "noauth-bench-admin", Email: "noauth-bench@example.invalid",
		Role: string(security.RoleAdmin)}, nil
}
