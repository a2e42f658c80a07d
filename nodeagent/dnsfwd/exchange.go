package dnsfwd

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// exchange relays q to the upstreams in order until one answers, over TCP
// if tcp (a TCP client may expect an answer larger than UDP carries), else
// UDP. The answer is relayed unchanged: a truncated UDP answer keeps its TC
// bit and the client retries over TCP.
func (f *Forwarder) exchange(ctx context.Context, q []byte, tcp bool) ([]byte, error) {
	ups, err := f.upstreams()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, up := range ups {
		if ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		var r []byte
		if tcp {
			r, err = f.exchangeTCP(actx, up.String(), q)
		} else {
			r, err = f.exchangeUDP(actx, up.String(), q)
		}
		cancel()
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return nil, errors.Join(errs...)
}

// exchangeUDP sends q from a fresh socket (a random source port, so a
// spoofed answer must guess it as well as the id) and waits for the answer
// carrying q's id.
func (f *Forwarder) exchangeUDP(ctx context.Context, addr string, q []byte) ([]byte, error) {
	c, err := f.socks.dial(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMsg)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err // ICMP port unreachable and the like
		}
		// Anything else on this connected socket (a stale or forged
		// answer) is skipped.
		if n >= headerLen && buf[0] == q[0] && buf[1] == q[1] && buf[2]&0x80 != 0 {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// exchangeTCP sends q over a fresh TCP connection.
func (f *Forwarder) exchangeTCP(ctx context.Context, addr string, q []byte) ([]byte, error) {
	c, err := f.socks.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeMsg(c, q); err != nil {
		return nil, err
	}
	r, err := readMsg(c)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if r[0] != q[0] || r[1] != q[1] {
		return nil, errors.New("answer id differs from the query's")
	}
	return r, nil
}
