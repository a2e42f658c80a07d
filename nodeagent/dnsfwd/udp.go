package dnsfwd

import (
	"context"
	"net"
	"time"
)

// serveUDP reads queries until the listener closes; each allowed query is
// relayed on its own goroutine, at most MaxInFlight at a time.
func (f *Forwarder) serveUDP() {
	defer f.wg.Done()
	buf := make([]byte, maxMsg)
	for {
		n, from, err := f.udp.ReadFrom(buf)
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			f.cfg.Log.Warn("dnsfwd: udp read", "err", err)
			time.Sleep(10 * time.Millisecond) // no hot loop on a persistent error
			continue
		}
		if !isQuery(buf[:n]) || !f.lim.allow(addrOf(from)) {
			continue // dropped silently: answering a flood amplifies it
		}
		select {
		case f.inflight <- struct{}{}:
		default:
			continue
		}
		q := append([]byte(nil), buf[:n]...)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.inflight }()
			f.answerUDP(q, from)
		}()
	}
}

func (f *Forwarder) answerUDP(q []byte, to net.Addr) {
	ctx, cancel := f.queryContext()
	defer cancel()
	r, err := f.exchange(ctx, q, false)
	if err != nil {
		f.cfg.Log.Debug("dnsfwd: udp query", "from", to.String(), "err", err)
		if ctx.Err() != nil && f.isClosed() {
			return
		}
		r = servfail(q)
	}
	if _, err := f.udp.WriteTo(r, to); err != nil && !f.isClosed() {
		f.cfg.Log.Debug("dnsfwd: udp reply", "to", to.String(), "err", err)
	}
}

// queryContext bounds one query by Timeout and by Close.
func (f *Forwarder) queryContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.ctx, f.cfg.Timeout)
}

func (f *Forwarder) isClosed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
