package dnsfwd

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"
)

// serveTCP accepts clients until the listener closes, at most MaxTCPConns
// at a time; each connection may carry several length-prefixed queries.
func (f *Forwarder) serveTCP() {
	defer f.wg.Done()
	for {
		c, err := f.tcp.Accept()
		if err != nil {
			if f.isClosed() {
				return
			}
			f.cfg.Log.Warn("dnsfwd: tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case f.tcpConns <- struct{}{}:
		default:
			c.Close()
			continue
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			c.Close()
			<-f.tcpConns
			return
		}
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
				c.Close()
				<-f.tcpConns
			}()
			f.serveConn(c)
		}()
	}
}

// serveConn answers the queries of one client in order. A query over the
// rate closes the connection.
func (f *Forwarder) serveConn(c net.Conn) {
	src := addrOf(c.RemoteAddr())
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdle))
		q, err := readMsg(c)
		if err != nil {
			return
		}
		if !isQuery(q) || !f.lim.allow(src) {
			return
		}
		ctx, cancel := f.queryContext()
		r, err := f.exchange(ctx, q, true)
		cancel()
		if err != nil {
			if f.isClosed() {
				return
			}
			f.cfg.Log.Debug("dnsfwd: tcp query", "from", src.String(), "err", err)
			r = servfail(q)
		}
		c.SetWriteDeadline(time.Now().Add(tcpIdle))
		if err := writeMsg(c, r); err != nil {
			return
		}
	}
}

// readMsg reads one length-prefixed DNS message (RFC 1035 §4.2.2).
func readMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n < headerLen {
		return nil, errors.New("dnsfwd: short message")
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// writeMsg writes one length-prefixed DNS message in a single write.
func writeMsg(w io.Writer, msg []byte) error {
	if len(msg) > maxMsg {
		return errors.New("dnsfwd: message too long")
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}
