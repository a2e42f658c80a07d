package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// commandTimeout bounds a QMP command whose ctx has no earlier deadline:
// the commands here are answered in milliseconds unless QEMU is wedged.
const commandTimeout = 10 * time.Second

// Monitor is a QMP connection with one typed method per command, safe for
// concurrent use.
//
// The commands are go-qemu's typed QAPI bindings (qmp/raw), run over a
// transport of ours that implements go-qemu's qmp.Monitor interface. Ours
// rather than go-qemu's qmp.SocketMonitor because that one hands a reply in
// a buffer its reader reuses for the next line (a data race the race
// detector reports here; digitalocean/go-qemu#226), takes no deadline, and
// gives a command whatever line comes next. Here each command carries an
// "id" that QEMU echoes, so a reply that arrives after its caller gave up is
// dropped instead of being handed to the next caller.
type Monitor struct {
	conn net.Conn

	writeMu sync.Mutex // one command on the wire at a time
	fdMu    sync.Mutex // one add-fd in flight: its descriptor waits in QEMU for it

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply // by command id; nil once ended
	subs    []*subscriber         // nil once ended

	quit      chan struct{} // closed by Close: subscribers stop delivering
	ended     chan struct{} // closed when the connection ends
	closeOnce sync.Once
	wg        sync.WaitGroup // reader and subscribers
}

// Status is QEMU's run state as reported by query-status.
type Status struct {
	Status  string // "prelaunch", "running", "paused", "shutdown", …
	Running bool
}

// message is any line QEMU sends after the greeting.
type message struct {
	ID        string          `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *qmpErrorBody   `json:"error"`
	Event     string          `json:"event"`
	Data      map[string]any  `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type qmpErrorBody struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type reply struct {
	ret json.RawMessage
	err error
}

// Dial connects to QEMU's QMP socket and leaves capability negotiation.
// QEMU serves one QMP client at a time: a second Dial waits, until ctx
// ends, for the first to Close.
func Dial(ctx context.Context, qmpPath string) (*Monitor, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", qmpPath)
	if err != nil {
		return nil, fmt.Errorf("qemu: dial %s: %w", qmpPath, err)
	}
	m, err := dialConn(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qemu: dial %s: %w", qmpPath, err)
	}
	return m, nil
}

// dialConn negotiates QMP on conn and starts the Monitor's reader. It owns
// conn from then on.
func dialConn(ctx context.Context, conn net.Conn) (*Monitor, error) {
	// The handshake gives up only through ctx, so its error is ctx's.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	lr := newLineReader(conn)
	err := handshake(conn, lr)
	if !stop() || err != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, err
	}

	m := &Monitor{
		conn:    conn,
		pending: make(map[string]chan reply),
		subs:    []*subscriber{},
		quit:    make(chan struct{}),
		ended:   make(chan struct{}),
	}
	m.wg.Add(1)
	go m.read(lr)
	return m, nil
}

// handshake reads the greeting and negotiates capabilities. Events may come
// between the request and its reply (go-qemu#210), so they are skipped.
func handshake(conn net.Conn, lr *lineReader) error {
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := lr.next()
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if greeting.QMP == nil {
		return errors.New("not a QMP greeting")
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return err
	}
	for {
		line, err := lr.next()
		if err != nil {
			return fmt.Errorf("read qmp_capabilities reply: %w", err)
		}
		m, err := decodeMessage(line)
		if err != nil {
			return fmt.Errorf("read qmp_capabilities reply: %w", err)
		}
		if m.Event != "" {
			continue
		}
		if m.Error != nil {
			return &QMPError{Command: "qmp_capabilities", Class: m.Error.Class, Desc: m.Error.Desc}
		}
		return nil
	}
}

// Close ends the connection and waits for the Monitor's goroutines. QEMU
// keeps running.
func (m *Monitor) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.quit)
		err = m.conn.Close()
		m.wg.Wait()
	})
	// The reader closes the connection itself when QEMU sent garbage.
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("qemu: close monitor: %w", err)
	}
	return nil
}

// commands returns go-qemu's typed commands bound to ctx.
func (m *Monitor) commands(ctx context.Context) *raw.Monitor {
	return raw.NewMonitor(boundMonitor{m: m, ctx: ctx})
}

// Status runs query-status.
func (m *Monitor) Status(ctx context.Context) (Status, error) {
	s, err := m.commands(ctx).QueryStatus()
	if err != nil {
		return Status{}, err
	}
	return Status{Status: s.Status.String(), Running: s.Running}, nil
}

// Cont resumes the guest (or starts it, after -S).
func (m *Monitor) Cont(ctx context.Context) error { return m.commands(ctx).Cont() }

// Stop pauses the guest's vCPUs.
func (m *Monitor) Stop(ctx context.Context) error { return m.commands(ctx).Stop() }

// SystemPowerdown presses the ACPI power button; the guest decides.
func (m *Monitor) SystemPowerdown(ctx context.Context) error {
	return m.commands(ctx).SystemPowerdown()
}

// SystemReset resets the machine, like the reset button.
func (m *Monitor) SystemReset(ctx context.Context) error { return m.commands(ctx).SystemReset() }

// Quit makes QEMU exit at once, without guest shutdown. QEMU may close the
// connection as it replies, so a closed monitor counts as success.
func (m *Monitor) Quit(ctx context.Context) error {
	err := m.commands(ctx).Quit()
	if errors.Is(err, ErrMonitorClosed) {
		return nil
	}
	return err
}

// boundMonitor is the Monitor as go-qemu's qmp.Monitor, with one ctx for
// the commands run through it. The connection is the Monitor's: Connect and
// Disconnect do nothing, and events come from Monitor.Events.
type boundMonitor struct {
	m   *Monitor
	ctx context.Context
}

func (b boundMonitor) Connect() error    { return nil }
func (b boundMonitor) Disconnect() error { return nil }

func (b boundMonitor) Events(context.Context) (<-chan qmp.Event, error) {
	return nil, errors.New("qemu: use Monitor.Events")
}

// Run sends one command as go-qemu's bindings encode it and returns the
// reply line they decode ({"return": …}).
func (b boundMonitor) Run(command []byte) ([]byte, error) {
	var cmd map[string]json.RawMessage
	if err := json.Unmarshal(command, &cmd); err != nil {
		return nil, fmt.Errorf("qemu: qmp: %w", err)
	}
	var name string
	_ = json.Unmarshal(cmd["execute"], &name)
	ret, err := b.m.run(b.ctx, name, cmd)
	if err != nil {
		return nil, err
	}
	if ret == nil {
		ret = json.RawMessage(`{}`)
	}
	return json.Marshal(struct {
		Return json.RawMessage `json:"return"`
	}{ret})
}

// run sends cmd (with the "id" we match its reply by) and waits for that
// reply.
func (m *Monitor) run(ctx context.Context, name string, cmd map[string]json.RawMessage) (json.RawMessage, error) {
	return m.runOOB(ctx, name, cmd, nil)
}

// runOOB is run with ancillary data (SCM_RIGHTS) sent with the command's
// bytes, for add-fd.
func (m *Monitor) runOOB(ctx context.Context, name string, cmd map[string]json.RawMessage, oob []byte) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()

	ch := make(chan reply, 1)
	m.mu.Lock()
	if m.pending == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("qemu: qmp %s: %w", name, ErrMonitorClosed)
	}
	m.nextID++
	id := strconv.FormatUint(m.nextID, 10)
	m.pending[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.pending != nil {
			delete(m.pending, id)
		}
		m.mu.Unlock()
	}()

	cmd["id"], _ = json.Marshal(id)
	line, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if err := m.write(ctx, append(line, '\n'), oob); err != nil {
		return nil, fmt.Errorf("qemu: qmp %s: %w", name, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			var qe *QMPError
			if errors.As(r.err, &qe) {
				qe.Command = name
				return nil, qe
			}
			return nil, fmt.Errorf("qemu: qmp %s: %w", name, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("qemu: qmp %s: %w", name, ctx.Err())
	}
}

// write holds writeMu for one whole line; the deadline keeps a QEMU that
// stopped reading from holding every other caller.
func (m *Monitor) write(ctx context.Context, line, oob []byte) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	dl, _ := ctx.Deadline()
	_ = m.conn.SetWriteDeadline(dl)
	var err error
	if oob == nil {
		_, err = m.conn.Write(line)
	} else if uc, ok := m.conn.(*net.UnixConn); ok {
		// One sendmsg: QEMU attaches the descriptor to these bytes.
		_, _, err = uc.WriteMsgUnix(line, oob, nil)
	} else {
		err = errors.New("passing a descriptor needs a unix socket")
	}
	if err != nil {
		select {
		case <-m.ended:
			return ErrMonitorClosed
		case <-m.quit:
			return ErrMonitorClosed
		default:
		}
	}
	return err
}

// read is the connection's only reader: it routes replies by id and fans
// events out without ever blocking on a subscriber.
func (m *Monitor) read(lr *lineReader) {
	defer m.wg.Done()
	for {
		line, err := lr.next()
		if err != nil {
			_ = m.conn.Close() // a line too long leaves the stream unread
			break
		}
		msg, err := decodeMessage(line)
		if err != nil {
			// Not QMP: nothing after it can be trusted either.
			_ = m.conn.Close()
			break
		}
		if msg.Event != "" {
			ev := Event{
				Name: msg.Event,
				Data: msg.Data,
				Time: time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000),
			}
			m.mu.Lock()
			for _, s := range m.subs {
				s.push(ev)
			}
			m.mu.Unlock()
			continue
		}
		m.mu.Lock()
		ch := m.pending[msg.ID]
		delete(m.pending, msg.ID)
		m.mu.Unlock()
		if ch == nil {
			continue // its caller gave up
		}
		if msg.Error != nil {
			ch <- reply{err: &QMPError{Class: msg.Error.Class, Desc: msg.Error.Desc}}
		} else {
			ch <- reply{ret: msg.Return}
		}
	}
	m.mu.Lock()
	for _, ch := range m.pending {
		ch <- reply{err: ErrMonitorClosed}
	}
	m.pending = nil
	for _, s := range m.subs {
		s.end()
	}
	m.subs = nil
	m.mu.Unlock()
	close(m.ended)
}

// maxQMPLine bounds one QMP message, so that a QEMU a guest has taken over
// cannot make the agent buffer without end. Most answers are a few KiB,
// but the block queries grow with the square of a snapshot chain's depth
// (each node's "json:{…}" filename nests the whole chain below it):
// query-named-block-nodes is 314 KiB for one disk 40 deep, and 9 disks at
// MaxChainDepth come to about 7 MiB. A longer line ends the connection.
const maxQMPLine = 16 << 20

// ErrQMPLineTooLong ends a connection whose peer sent a longer message.
var ErrQMPLineTooLong = errors.New("qemu: qmp message too long")

// lineReader splits QEMU's output into messages: QMP writes one JSON
// object per line.
type lineReader struct {
	br  *bufio.Reader
	buf []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next non-blank line, without its line ending, valid
// until the following call.
func (l *lineReader) next() ([]byte, error) {
	for {
		l.buf = l.buf[:0]
		for {
			frag, err := l.br.ReadSlice('\n')
			if len(l.buf)+len(frag) > maxQMPLine {
				return nil, ErrQMPLineTooLong
			}
			l.buf = append(l.buf, frag...)
			if err == nil {
				break
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return nil, err
			}
		}
		if line := bytes.TrimSpace(l.buf); len(line) > 0 {
			return line, nil
		}
	}
}

// decodeMessage parses one line of QMP: a reply, an error or an event.
func decodeMessage(line []byte) (message, error) {
	var msg message
	if err := json.Unmarshal(line, &msg); err != nil {
		return message{}, fmt.Errorf("qemu: qmp: %w", err)
	}
	return msg, nil
}
