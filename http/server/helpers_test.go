package server

import (
	"net/http/httptest"

	"github.com/gin-gonic/gin"
)

func ginContextWithQuery(q string) *gin.Context {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("GET", "/?"+q, nil)
	return c
}
