package server

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// listResponse is the shape of every list: {"items":[…],"next_cursor":"…"}.
type listResponse[T any] struct {
	Items      []T       `json:"items"`
	NextCursor string    `json:"next_cursor,omitempty"`
	Meta       *listMeta `json:"meta,omitempty"`
}

// listMeta says how a page was read.
type listMeta struct {
	// Revision is the etcd revision the page was read at: GET /v1/watch
	// ?since= this revision continues from the page with no gap.
	Revision int64 `json:"revision"`
}

func newList[T any](items []T, next string) listResponse[T] {
	if items == nil {
		items = []T{} // an empty list is [], never null
	}
	return listResponse[T]{Items: items, NextCursor: next}
}

// listContext pins every store read of a list request to one etcd revision
// (a consistent page) and records it for meta.revision.
func listContext(c *gin.Context) (context.Context, *store.ReadRevision) {
	return store.WithReadRevision(c.Request.Context())
}

// at sets meta.revision when the store recorded one.
func (l listResponse[T]) at(rr *store.ReadRevision) listResponse[T] {
	if rr != nil && rr.Revision() > 0 {
		l.Meta = &listMeta{Revision: rr.Revision()}
	}
	return l
}

// pageOf reads ?limit= and ?cursor=. A bad value is refused rather than
// clamped: a script asking for 1000 items should learn it gets at most 200.
func pageOf(c *gin.Context) (store.Page, error) {
	var p store.Page
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPageSize {
			return p, apiError(messages.KindInvalid, "invalid_limit", "limit must be an integer from 1 to %d", store.MaxPageSize).
				WithDetail("max", store.MaxPageSize)
		}
		p.Limit = n
	}
	if v, ok := c.GetQuery("cursor"); ok && v != "" {
		if _, err := store.DecodeCursor(v); err != nil {
			return p, apiError(messages.KindInvalid, "invalid_cursor", "the cursor is malformed; start again without one")
		}
		p.Cursor = v
	}
	return p, nil
}

// boolQuery reads an optional boolean query parameter.
func boolQuery(c *gin.Context, name string) (bool, error) {
	v, ok := c.GetQuery(name)
	if !ok || v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, apiError(messages.KindInvalid, "invalid_"+name, "%s must be true or false", name).WithDetail("parameter", name)
	}
	return b, nil
}

// ifMatchRevision reads an If-Match header holding a revision, as an ETag
// ("42", W/"42") or a bare number. Zero means the header is absent.
func ifMatchRevision(c *gin.Context) (int64, error) {
	v := strings.TrimSpace(c.GetHeader("If-Match"))
	if v == "" {
		return 0, nil
	}
	v = strings.Trim(strings.TrimPrefix(v, "W/"), `"`)
	rev, err := strconv.ParseInt(v, 10, 64)
	if err != nil || rev < 1 {
		return 0, apiError(messages.KindInvalid, "invalid_if_match", "If-Match must hold one revision number")
	}
	return rev, nil
}

// etag is a resource revision as an ETag.
func etag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// Bounds of ?timeout= on a graceful stop.
const (
	minStopTimeout = time.Second
	maxStopTimeout = time.Hour
)

// timeoutQuery reads an optional ?timeout= Go duration ("90s", "2m") in
// whole seconds; 0 when absent (the node's default applies).
func timeoutQuery(c *gin.Context) (int, error) {
	v, ok := c.GetQuery("timeout")
	if !ok || v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minStopTimeout || d > maxStopTimeout || d%time.Second != 0 {
		return 0, apiError(messages.KindInvalid, "invalid_timeout",
			"timeout must be a whole number of seconds from %s to %s, such as 90s or 2m", minStopTimeout, maxStopTimeout).
			WithDetail("parameter", "timeout")
	}
	return int(d / time.Second), nil
}

// maxLogTail bounds ?tail= on the serial log (the node's own cap).
const maxLogTail = 1 << 20

// tailQuery reads an optional ?tail= byte count; 0 when absent.
func tailQuery(c *gin.Context) (int64, error) {
	v, ok := c.GetQuery("tail")
	if !ok || v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 || n > maxLogTail {
		return 0, apiError(messages.KindInvalid, "invalid_tail", "tail must be a number of bytes from 1 to %d", maxLogTail).
			WithDetail("parameter", "tail").WithDetail("max", maxLogTail)
	}
	return n, nil
}
