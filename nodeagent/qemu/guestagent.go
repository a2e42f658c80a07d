package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// The QEMU guest agent (qemu-ga) inside the guest, reached through the
// virtio-serial port org.qemu.guest_agent.0 whose host end QEMU serves on
// GuestAgentPath (argv.go). The protocol is QMP-like JSON, one object a
// line, but with no greeting and no ids: after a reconnect the agent's
// parser and its output may hold a previous client's leftovers, so every
// session starts with guest-sync-delimited, whose reply the agent prefixes
// with a 0xFF byte: everything before it is stale.
//
// A guest that runs no agent accepts the bytes and never answers, so
// every call is bounded: the sync by GuestAgentSyncTimeout, then the
// command by ctx.

// GuestAgentSyncTimeout is how long a silent guest agent is waited for
// before ErrGuestAgentUnavailable.
const GuestAgentSyncTimeout = 3 * time.Second

// maxGuestAgentLine bounds one reply line; the guest is untrusted.
const maxGuestAgentLine = 64 << 10

// GuestAgent is a session with the guest agent of one VM. QEMU serves one
// client on the channel at a time, so a session is short: open, a few
// commands, Close.
type GuestAgent struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialGuestAgent connects to the guest agent channel of the VM in runDir
// and synchronises with the agent inside.
//
// Errors: ErrGuestAgentUnavailable when no agent answers within
// GuestAgentSyncTimeout (or ctx's deadline, if sooner).
func DialGuestAgent(ctx context.Context, runDir string) (*GuestAgent, error) {
	var d net.Dialer
	cctx, cancel := context.WithTimeout(ctx, GuestAgentSyncTimeout)
	defer cancel()
	conn, err := d.DialContext(cctx, "unix", GuestAgentPath(runDir))
	if err != nil {
		return nil, ErrGuestAgentUnavailable.with(err, "guest agent channel of %s", runDir)
	}
	g := &GuestAgent{conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	if err := g.sync(cctx); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrGuestAgentUnavailable.with(err, "no guest agent answered within %s", GuestAgentSyncTimeout)
	}
	return g, nil
}

// Close ends the session.
func (g *GuestAgent) Close() error { return g.conn.Close() }

// sync sends guest-sync-delimited with a fresh id and skips everything
// before the 0xFF that precedes its reply.
func (g *GuestAgent) sync(ctx context.Context) error {
	id := rand.Int64N(1 << 52) // exact in a JSON number
	stop := g.deadline(ctx)
	defer stop()
	// A leading 0xFF makes the agent drop a half-parsed request.
	req := fmt.Sprintf("\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%d}}\n", id)
	if _, err := g.conn.Write([]byte(req)); err != nil {
		return err
	}
	for {
		if _, err := g.r.ReadSlice(0xff); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue // stale output: keep skipping
			}
			return err
		}
		line, err := g.line()
		if err != nil {
			return err
		}
		var rep struct {
			Return *int64 `json:"return"`
		}
		if json.Unmarshal(line, &rep) == nil && rep.Return != nil && *rep.Return == id {
			return nil
		}
	}
}

// deadline makes ctx's end unblock the connection; stop undoes it.
func (g *GuestAgent) deadline(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		_ = g.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = g.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = g.conn.SetDeadline(time.Time{})
	}
}

// line reads one non-blank line, bounded.
func (g *GuestAgent) line() ([]byte, error) {
	var buf []byte
	for {
		frag, err := g.r.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > maxGuestAgentLine {
			return nil, errors.New("guest agent reply too long")
		}
		if err == nil {
			if l := bytes.TrimSpace(buf); len(l) > 0 {
				return l, nil
			}
			buf = buf[:0]
			continue
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// GuestAgentError is a command the guest agent answered with an error.
type GuestAgentError struct {
	Command, Class, Desc string
}

func (e *GuestAgentError) Error() string {
	return fmt.Sprintf("qemu: guest agent %s: %s: %s", e.Command, e.Class, clipDesc(e.Desc))
}

// clipDesc bounds text from the guest before it goes into an error.
func clipDesc(s string) string {
	if len(s) > 256 {
		return s[:256] + "…"
	}
	return s
}

// run sends one command and decodes its return into out.
func (g *GuestAgent) run(ctx context.Context, name string, args, out any) error {
	stop := g.deadline(ctx)
	defer stop()
	cmd := map[string]any{"execute": name}
	if args != nil {
		cmd["arguments"] = args
	}
	b, _ := json.Marshal(cmd)
	if _, err := g.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qemu: guest agent %s: %w", name, err)
	}
	line, err := g.line()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("qemu: guest agent %s: %w", name, ctx.Err())
		}
		return fmt.Errorf("qemu: guest agent %s: %w", name, err)
	}
	var rep struct {
		Return json.RawMessage `json:"return"`
		Error  *qmpErrorBody   `json:"error"`
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("qemu: guest agent %s: %w", name, err)
	}
	if rep.Error != nil {
		return &GuestAgentError{Command: name, Class: rep.Error.Class, Desc: rep.Error.Desc}
	}
	if out != nil && len(rep.Return) > 0 {
		if err := json.Unmarshal(rep.Return, out); err != nil {
			return fmt.Errorf("qemu: guest agent %s: %w", name, err)
		}
	}
	return nil
}

// Ping runs guest-ping.
func (g *GuestAgent) Ping(ctx context.Context) error { return g.run(ctx, "guest-ping", nil, nil) }

// Freeze runs guest-fsfreeze-freeze: the guest flushes and freezes its
// mounted filesystems, and returns how many. They stay frozen until Thaw;
// the caller thaws whatever happens (FreezeStatus tells a restarted agent).
func (g *GuestAgent) Freeze(ctx context.Context) (int, error) {
	var n int
	err := g.run(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// Thaw runs guest-fsfreeze-thaw and returns how many filesystems thawed.
func (g *GuestAgent) Thaw(ctx context.Context) (int, error) {
	var n int
	err := g.run(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// FreezeStatus runs guest-fsfreeze-status: "thawed" or "frozen".
func (g *GuestAgent) FreezeStatus(ctx context.Context) (string, error) {
	var s string
	err := g.run(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// DefaultFreezeTimeout bounds a freeze: the guest writes back its dirty
// data first, which a busy guest can make long; beyond this the snapshot
// fails rather than hold the guest's writes.
const DefaultFreezeTimeout = 30 * time.Second

// Quiesced runs fn with the guest's filesystems frozen through its guest
// agent, and thaws them afterwards whatever fn returned, also when the
// freeze itself failed part way (qemu-ga may have frozen some). fn's error
// comes first; a failed thaw is reported when fn succeeded.
//
// Errors: ErrGuestAgentUnavailable, a *GuestAgentError, fn's.
func Quiesced(ctx context.Context, runDir string, fn func(context.Context) error) error {
	g, err := DialGuestAgent(ctx, runDir)
	if err != nil {
		return err
	}
	defer g.Close()
	fctx, cancel := context.WithTimeout(ctx, DefaultFreezeTimeout)
	_, ferr := g.Freeze(fctx)
	cancel()
	thaw := func(g *GuestAgent) error {
		tctx, cancel := context.WithTimeout(context.Background(), DefaultFreezeTimeout)
		defer cancel()
		_, err := g.Thaw(tctx)
		return err
	}
	if ferr != nil {
		// The freeze's reply may still come on this session: thaw in a
		// new one, which the sync puts in step.
		g.Close()
		tctx, cancel := context.WithTimeout(context.Background(), DefaultFreezeTimeout)
		defer cancel()
		if g2, err := DialGuestAgent(tctx, runDir); err == nil {
			_ = thaw(g2)
			g2.Close()
		}
		return fmt.Errorf("qemu: freeze guest filesystems: %w", ferr)
	}
	err = fn(ctx)
	if terr := thaw(g); terr != nil && err == nil {
		err = fmt.Errorf("qemu: thaw guest filesystems: %w", terr)
	}
	return err
}
