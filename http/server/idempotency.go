package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Idempotency headers.
const (
	HeaderIdempotencyKey      = "Idempotency-Key"
	HeaderIdempotentReplayed  = "Idempotent-Replayed"
	maxIdempotencyKeyLength   = 255
	idempotencyBookkeepingMax = 5 * time.Second
	// idempotencyRecordMax bounds the retries of recording an answer or
	// releasing a key, which outlast a leader election.
	idempotencyRecordMax = 30 * time.Second
)

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Location", "ETag"}

// idempotency makes a write carrying an Idempotency-Key run at most once: a
// retry with the same key and the same request gets the first answer again; a
// different request under the same key is refused.
func (s *Server) idempotency(c *gin.Context) {
	key, sent := c.Request.Header[HeaderIdempotencyKey]
	if !sent || isDryRun(c) {
		// A dry run writes nothing, so there is nothing to run at most
		// once, and no record is kept of it.
		c.Next()
		return
	}
	if len(key) != 1 || !validIdempotencyKey(key[0]) {
		s.writeError(c, apiError(messages.KindInvalid, "invalid_idempotency_key",
			"%s must be one value of 1 to %d printable ASCII characters", HeaderIdempotencyKey, maxIdempotencyKeyLength))
		return
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		s.writeError(c, errBodyRead(err))
		return
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))

	ctx := c.Request.Context()
	ids := IdempotencyStore(s.cp)
	scope := ownerOf(c) + " " + c.Request.Method + " " + c.FullPath()
	hash := requestHash(c.Request, body)
	// The reservation must not end with the request: cancelled mid-flight
	// (a client hanging up, a replica shutting down), etcd may still take
	// it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idempotencyBookkeepingMax)
	hold, prior, err := ids.ReserveIdempotency(rctx, scope, key[0], hash, s.cfg.IdempotencyTTL)
	cancel()
	switch {
	case err != nil:
		if hold != nil {
			// The reservation's outcome is unknown: its transaction may
			// have reached Raft before the call gave up (an election, a
			// leader handing over during a rolling restart, a member that
			// lost its leader). Taken and never released, it would answer
			// every retry idempotency_in_progress for as long as this
			// replica lives, so it is abandoned in the background (only
			// this attempt's reservation is touched).
			go s.abandonHold(ctx, hold, requestID(c))
		}
		s.writeError(c, err)
		return
	case hold != nil:
	case prior == nil:
		// The store kept racing other attempts for the key: let the
		// client retry rather than guess.
		s.writeError(c, errIdempotencyInProgress())
		return
	case prior.RequestHash != hash:
		s.writeError(c, apiError(messages.KindUnprocessable, "idempotency_key_reused",
			"this %s was used for a different request", HeaderIdempotencyKey))
		return
	case prior.Done:
		replay(c, prior)
		return
	case prior.AnswerLost():
		// A write of the request committed, and its answer will never
		// be recorded: running it again could do it twice.
		e := apiError(messages.KindConflict, "idempotency_answer_lost",
			"the request with this %s was carried out, but its answer was lost (the replica serving it stopped, or it failed after its write); read the resources it wrote", HeaderIdempotencyKey)
		if len(prior.Written) > 0 {
			e = e.WithDetail("written", prior.Written)
		}
		s.writeError(c, e)
		return
	default:
		s.writeError(c, errIdempotencyInProgress())
		return
	}

	// Every write the handler commits is fenced by the reservation: it
	// commits only while the key is still this attempt's, and records in
	// its own transaction that the request's write committed.
	c.Request = c.Request.WithContext(hold.Bind(ctx))
	rec := &recorder{ResponseWriter: c.Writer}
	c.Writer = rec
	finished := false
	defer func() {
		// Bookkeeping must outlive a client that hung up mid-request, and
		// an election: etcd refuses writes for a second or two then.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idempotencyRecordMax)
		defer cancel()
		status := rec.Status()
		if !finished || status >= http.StatusInternalServerError {
			// Nothing durable can be promised: free the key so a retry
			// runs, unless a write of the request committed after all.
			if err := retryBookkeeping(bctx, hold.Abandon); err != nil {
				s.log.LogAttrs(bctx, slog.LevelWarn, "abandon idempotency key",
					slog.String("request_id", requestID(c)), slog.Any("error", err))
			}
			return
		}
		answer := store.IdempotencyRecord{RequestHash: hash, Status: status, Headers: map[string]string{},
			Body: rec.body.Bytes(), CreatedAt: s.now()}
		for _, h := range replayedHeaders {
			if v := rec.Header().Get(h); v != "" {
				answer.Headers[h] = v
			}
		}
		// The change is durable: the client need not wait for the record
		// (until the handler returns, the answer sits in a buffer).
		rec.Flush()
		recorded := true
		if err := retryBookkeeping(bctx, func(c context.Context) (err error) {
			recorded, err = hold.Complete(c, answer)
			return err
		}); err != nil {
			// The answer went out; the key stays reserved until this
			// replica's lease ends, then a retry runs the request again
			// (or, had it written, is told its answer was lost).
			s.log.LogAttrs(bctx, slog.LevelError, "store idempotency answer",
				slog.String("request_id", requestID(c)), slog.Any("error", err))
		} else if !recorded {
			// The reservation was gone before any write of the request
			// committed (this replica was cut off past its lease): a
			// retry runs it, which is right, since nothing was written.
			s.log.LogAttrs(bctx, slog.LevelWarn, "idempotency answer not recorded: the reservation was lost before any write",
				slog.String("request_id", requestID(c)))
		}
	}()
	c.Next()
	finished = true
}

// abandonHold frees a reservation whose outcome is unknown, retrying while
// etcd cannot answer.
func (s *Server) abandonHold(ctx context.Context, hold store.Hold, rid string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idempotencyRecordMax)
	defer cancel()
	if err := retryBookkeeping(bctx, hold.Abandon); err != nil {
		s.log.LogAttrs(bctx, slog.LevelWarn, "abandon idempotency key after a failed reservation",
			slog.String("request_id", rid), slog.Any("error", err))
	}
}

func errIdempotencyInProgress() *messages.Error {
	return apiError(messages.KindConflict, "idempotency_in_progress",
		"a request with this %s is in progress; retry shortly", HeaderIdempotencyKey)
}

// retryBookkeeping runs op until it succeeds or ctx ends, pausing between
// tries (50 ms doubling to 1 s). Both ops are idempotent: recording the
// answer, abandoning the reservation.
func retryBookkeeping(ctx context.Context, op func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// replay repeats a stored answer.
func replay(c *gin.Context, rec *store.IdempotencyRecord) {
	for k, v := range rec.Headers {
		c.Header(k, v)
	}
	c.Header(HeaderIdempotentReplayed, "true")
	c.Status(rec.Status)
	_, _ = c.Writer.Write(rec.Body)
	c.Abort()
}

func validIdempotencyKey(k string) bool {
	if len(k) < 1 || len(k) > maxIdempotencyKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestHash fingerprints what makes two writes the same request: method,
// path with query (?force=true is a different delete), If-Match (a different
// expected revision is a different update) and body. Fields are length-prefixed
// so no two requests share an encoding.
func requestHash(r *http.Request, body []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(r.Method), []byte(r.URL.RequestURI()), []byte(r.Header.Get("If-Match")), body} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// recorder keeps a copy of the response body for the idempotency record.
type recorder struct {
	gin.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) WriteString(s string) (int, error) {
	r.body.WriteString(s)
	return r.ResponseWriter.WriteString(s)
}
