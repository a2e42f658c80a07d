package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"
)

// reachable waits until a UDP datagram from p.a to p.b comes back: the
// overlay needs a WireGuard handshake and ARP across it first.
func reachable(ctx context.Context, p *path, port int, within time.Duration) error {
	stop, err := udpEcho(p.b, port)
	if err != nil {
		return err
	}
	defer stop()
	var c net.Conn
	if err := p.a.in(func() (err error) { c, err = net.Dial("udp4", net.JoinHostPort(p.dst, fmt.Sprint(port))); return }); err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for end := time.Now().Add(within); time.Now().Before(end) && ctx.Err() == nil; {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: %s unreachable after %v", p.name, p.dst, within)
}

// udpEcho serves a UDP echo in n until stop is called; stop waits for the
// serving goroutine.
func udpEcho(n *benchNS, port int) (stop func(), err error) {
	var pc net.PacketConn
	if err := n.in(func() (err error) { pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port)); return }); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	}()
	return func() { pc.Close(); wg.Wait() }, nil
}

// latency times n UDP round trips of a 64-byte datagram, one at a time.
type latency struct {
	n, lost       int
	p50, p99, max time.Duration
}

func pingPong(ctx context.Context, p *path, port, n int) (latency, error) {
	stop, err := udpEcho(p.b, port)
	if err != nil {
		return latency{}, err
	}
	defer stop()
	var c net.Conn
	if err := p.a.in(func() (err error) { c, err = net.Dial("udp4", net.JoinHostPort(p.dst, fmt.Sprint(port))); return }); err != nil {
		return latency{}, err
	}
	defer c.Close()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	rtts := make([]time.Duration, 0, n)
	lost := 0
	for i := -100; i < n && ctx.Err() == nil; i++ { // 100 untimed warm-up round trips
		msg[0], msg[1] = byte(i), byte(i>>8)
		start := time.Now()
		c.Write(msg)
		c.SetReadDeadline(start.Add(time.Second))
		for {
			k, err := c.Read(buf)
			if err != nil {
				lost++
				break
			}
			if k == len(msg) && buf[0] == msg[0] && buf[1] == msg[1] {
				if i >= 0 {
					rtts = append(rtts, time.Since(start))
				}
				break
			} // a late reply to an earlier, lost datagram: keep reading
		}
	}
	if err := ctx.Err(); err != nil {
		return latency{}, err
	}
	if len(rtts) == 0 {
		return latency{}, errors.New("no round trip completed")
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	at := func(q float64) time.Duration { return rtts[min(len(rtts)-1, int(q*float64(len(rtts))))] }
	return latency{n: len(rtts), lost: lost, p50: at(0.50), p99: at(0.99), max: rtts[len(rtts)-1]}, nil
}

// tcpStream sends one TCP stream from p.a to p.b for d and returns the
// receiver's count in MB/s (10^6 bytes). Sender and receiver run in this
// process, as does a userspace WireGuard: all share the machine's cores.
func tcpStream(ctx context.Context, p *path, port int, d time.Duration) (float64, error) {
	var ln net.Listener
	if err := p.b.in(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return }); err != nil {
		return 0, err
	}
	defer ln.Close()
	type result struct {
		n   int64
		dur time.Duration
		err error
	}
	resc := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		var n int64
		var start time.Time
		for {
			k, err := c.Read(buf)
			if n == 0 && k > 0 {
				start = time.Now()
			}
			n += int64(k)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				resc <- result{n: n, dur: time.Since(start), err: err}
				return
			}
		}
	}()
	var c net.Conn
	if err := p.a.in(func() (err error) {
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(p.dst, fmt.Sprint(port)), 5*time.Second)
		return
	}); err != nil {
		ln.Close()
		<-resc
		return 0, err
	}
	buf := make([]byte, 128<<10)
	end := time.Now().Add(d)
	var werr error
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, werr = c.Write(buf); werr != nil {
			break
		}
	}
	c.Close()
	r := <-resc
	if werr != nil {
		return 0, fmt.Errorf("send: %w", werr)
	}
	if r.err != nil {
		return 0, fmt.Errorf("receive: %w", r.err)
	}
	return float64(r.n) / r.dur.Seconds() / 1e6, ctx.Err()
}

// iperf3 runs Debian's iperf3 (one TCP stream for d) between the
// endpoints as two separate processes entered into the namespaces with
// `ip netns exec`; it returns the receiver's MB/s and the sender's TCP
// retransmissions.
func iperf3(ctx context.Context, p *path, port int, d time.Duration) (float64, int, error) {
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.b.name, "iperf3", "-s", "-1", "--forceflush", "-p", fmt.Sprint(port))
	out, err := srv.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := srv.Start(); err != nil {
		return 0, 0, err
	}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	// Only this process we started is ever killed, by its pid; the scanner
	// ends when its pipe closes.
	defer func() { srv.Process.Kill(); <-scanned; srv.Wait() }()
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server listening") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		return 0, 0, errors.New("iperf3 server did not start")
	}
	cli := exec.CommandContext(ctx, "ip", "netns", "exec", p.a.name, "iperf3", "-c", p.dst, "-p", fmt.Sprint(port), "-t", fmt.Sprint(int(d.Seconds())), "-J")
	js, err := cli.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 client: %w: %s", err, js)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(js, &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if res.Error != "" {
		return 0, 0, errors.New("iperf3: " + res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 8 / 1e6, res.End.SumSent.Retransmits, nil
}
