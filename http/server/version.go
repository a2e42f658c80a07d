package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
	etcdversion "go.etcd.io/etcd/api/v3/version"

	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/messages"
)

// version answers GET /v1/version. Without credentials it gives the version
// alone, so a client can check compatibility before it logs in; with valid
// credentials of any role it adds the build details. Credentials that are
// sent but do not authenticate are refused (401), never quietly answered as
// anonymous: a client must learn that its token is bad.
func (s *Server) version(c *gin.Context) {
	b := buildinfo.Get()
	v := messages.VersionInfo{Version: b.Version, Features: []string{messages.FeatureDryRun}}
	if c.GetHeader("Authorization") == "" {
		c.JSON(http.StatusOK, v)
		return
	}
	p, err := s.principal(c)
	switch {
	case err == nil && p != nil && p.UserID != "":
	case err == nil, messages.KindOf(err) == messages.KindUnauthenticated:
		s.deny(c, errUnauthenticated)
		return
	default:
		s.writeError(c, err)
		return
	}
	v.Commit, v.BuildTime, v.GoVersion, v.Platform = b.Commit, b.Date, b.GoVersion, b.Platform
	// The embedded member is linked into this binary: its library version
	// is the member's version.
	v.EtcdVersion = etcdversion.Version
	c.JSON(http.StatusOK, v)
}
