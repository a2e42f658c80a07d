package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/otherix/otherix/http/apierror"
)

// Watch event types besides a resource's added, modified and deleted.
const (
	EventBookmark = "bookmark"
	// EventResync ends a stream that fell behind: list again.
	EventResync = "resync"
	// EventError ends a stream with a reason (data is an error envelope):
	// token_expired asks for new credentials.
	EventError = "error"
)

// maxEventBytes bounds one server-sent event a misbehaving server can make
// the client buffer.
const maxEventBytes = 8 << 20

// WatchOptions says what a stream carries and where it starts.
type WatchOptions struct {
	// Types are the collections to follow: vms, nodes, tasks, networks,
	// events (lifecycle events).
	Types []string
	// Since is the revision already seen (a list's meta.revision, or the
	// last event's id); 0 starts now. It is sent as Last-Event-ID, as a
	// reconnecting browser EventSource does.
	Since int64
}

// WatchEvent is one server-sent event.
type WatchEvent struct {
	// ID is the etcd revision of the change (or of the bookmark).
	ID int64
	// Type is added, modified, deleted, bookmark, resync or error.
	Type string
	// Data is the resource as GET answers it (a deletion: as it was last),
	// {"revision":N} for a bookmark, an error envelope for resync or error.
	Data json.RawMessage
}

// WatchStream is an open watch; read it with Next, end it with Close.
type WatchStream struct {
	body io.ReadCloser
	rd   *bufio.Reader
}

// Watch opens GET /v1/watch. With a session, a 401 refreshes it once and
// retries, as every call does. An error answer is an *APIError:
// revision_compacted (410) means list again.
func (c *Client) Watch(ctx context.Context, o WatchOptions) (*WatchStream, error) {
	q := url.Values{"types": {strings.Join(o.Types, ",")}}
	u := c.base.String() + "/v1/watch?" + q.Encode()
	open := func(token string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("build watch: %w", err)
		}
		req.Header.Set("Accept", "text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if o.Since > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatInt(o.Since, 10))
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("GET /v1/watch: %w", err)
		}
		return resp, nil
	}
	token := c.bearer()
	resp, err := open(token)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && c.canRefresh("/v1/watch") {
		resp.Body.Close()
		if err := c.refresh(ctx, token); err != nil {
			return nil, err
		}
		if resp, err = open(c.bearer()); err != nil {
			return nil, err
		}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeAPIError(resp, raw)
	}
	return &WatchStream{body: resp.Body, rd: bufio.NewReaderSize(resp.Body, 64<<10)}, nil
}

// Next returns the next event. A stream the server ended with resync or
// error returns that event with no error; the next call returns io.EOF.
func (w *WatchStream) Next() (WatchEvent, error) {
	var (
		e    WatchEvent
		data bytes.Buffer
		any  bool
	)
	for {
		line, err := w.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && any {
				return WatchEvent{}, io.ErrUnexpectedEOF
			}
			return WatchEvent{}, err
		}
		if len(line) == 0 {
			if !any {
				continue
			}
			e.Data = json.RawMessage(bytes.Clone(data.Bytes()))
			return e, nil
		}
		if line[0] == ':' {
			continue // a comment
		}
		field, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimPrefix(value, " ")
		any = true
		switch field {
		case "id":
			e.ID, _ = strconv.ParseInt(value, 10, 64)
		case "event":
			e.Type = value
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			if data.Len() > maxEventBytes {
				return WatchEvent{}, fmt.Errorf("watch: event over %d bytes", maxEventBytes)
			}
		}
	}
}

func (w *WatchStream) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := w.rd.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxEventBytes {
			return nil, fmt.Errorf("watch: line over %d bytes", maxEventBytes)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// Close ends the stream.
func (w *WatchStream) Close() error { return w.body.Close() }

// StreamError is how a server ended a stream on purpose: Code is resync
// (list again) or an error code such as token_expired.
type StreamError struct {
	Event, Code, Message string
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("otherix api: watch ended: %s: %s", e.Code, e.Message)
}

// streamError decodes the data of a resync or error event.
func streamError(e WatchEvent) *StreamError {
	se := &StreamError{Event: e.Type, Code: e.Type}
	if d, ok := apierror.Parse(e.Data); ok {
		se.Code, se.Message = d.Code, d.Message
	}
	return se
}

// WatchEach follows a watch and calls fn for every change and bookmark, in
// revision order, until ctx ends or fn fails. A dropped connection is
// resumed from the last event's id (Last-Event-ID), so nothing is missed or
// repeated; token_expired refreshes a session and resumes. A resync, a
// compacted revision (APIError revision_compacted) or any other refusal is
// returned: the caller lists again and watches from the list's revision.
func (c *Client) WatchEach(ctx context.Context, o WatchOptions, fn func(WatchEvent) error) error {
	backoff := 100 * time.Millisecond
	for {
		w, err := c.Watch(ctx, o)
		if err != nil {
			var ae *APIError
			if errors.As(err, &ae) && (ae.Status != http.StatusServiceUnavailable || ae.Code == "watch_unavailable") || ctx.Err() != nil {
				return err
			}
			// The server is unreachable, or answered 503 (no quorum, a
			// leader changing, not ready: a replica just died): retry, on
			// whichever replica answers.
		} else {
			err = c.drain(ctx, w, &o, fn)
			w.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var cb *callbackError
			if errors.As(err, &cb) {
				return cb.err
			}
			var se *StreamError
			if errors.As(err, &se) {
				switch se.Code {
				case "token_expired":
					if !c.canRefresh("/v1/watch") || c.refresh(ctx, c.bearer()) != nil {
						return err
					}
				case "watch_closed":
					// The replica is going away: resume on whichever answers.
				default:
					return err
				}
			}
			// A stream that broke after delivering is resumed at once.
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
	}
}

// drain hands a stream's events to fn and advances o.Since as it goes.
func (c *Client) drain(ctx context.Context, w *WatchStream, o *WatchOptions, fn func(WatchEvent) error) error {
	stop := context.AfterFunc(ctx, func() { w.Close() })
	defer stop()
	for {
		e, err := w.Next()
		if err != nil {
			return err
		}
		switch e.Type {
		case EventResync, EventError:
			return streamError(e)
		}
		if err := fn(e); err != nil {
			return &callbackError{err}
		}
		if e.ID > o.Since {
			o.Since = e.ID
		}
	}
}

// callbackError carries fn's own error out of WatchEach unchanged in meaning.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }
