// Package wgtun is a TUN device for wireguard-go that moves VXLAN traffic in
// batches. wireguard-go's own TUN takes TCP super-packets from the kernel,
// but VXLAN hands the kernel UDP-tunnel GSO packets, which that TUN cannot
// accept, so the kernel cuts them into 1,440-byte datagrams and wireguard-go
// reads each with its own system call (BENCHMARKS.md "Overlay"). Since Linux
// 6.17 a TUN can take UDP-tunnel GSO packets (TUN_F_UDP_TUNNEL_GSO, with the
// 24-byte virtio header that carries the tunnel offsets): this device
// accepts them and segments them itself, and on the way back coalesces the
// VXLAN datagrams of one flow into a UDP GSO write. Create reports
// ErrUnsupported on older kernels, and the caller uses wireguard-go's TUN.
package wgtun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// Offload flags of TUNSETOFFLOAD (linux/if_tun.h); the UDP tunnel ones are
// newer than golang.org/x/sys.
const (
	tunFCsum              = 0x01
	tunFTSO4              = 0x02
	tunFUDPTunnelGSO      = 0x080
	tunFUDPTunnelGSOCsum  = 0x100
	offloads              = tunFCsum | tunFTSO4 | tunFUDPTunnelGSO | tunFUDPTunnelGSOCsum
	maxSuperPacket        = 65535 + hdrLen
	cloneDevice           = "/dev/net/tun"
	eventsBuffered        = 4
	batch                 = conn.IdealBatchSize
	maxWriteIovecsPerCall = 1 + maxCoalesce
)

// ErrUnsupported: the kernel's TUN cannot take UDP tunnel GSO packets.
var ErrUnsupported = errors.New("tun: udp tunnel gso unsupported by this kernel")

// Stats counts what the device did, for tests and benchmarks.
type Stats struct {
	// SuperReads are reads that carried a GSO super-packet, Segments the
	// packets split out of them.
	SuperReads, Segments uint64
	// CoalescedWrites are UDP GSO writes, Coalesced the datagrams in them.
	CoalescedWrites, Coalesced uint64
	// Dropped are packets read that could not be split.
	Dropped uint64
}

// Device is a tun.Device; create it with Create in the namespace the
// interface belongs to.
type Device struct {
	file   *os.File
	raw    syscall.RawConn // file's, for writev
	name   string
	events chan tun.Event

	// eventsMu guards sending on events against Close closing it.
	eventsMu sync.Mutex
	closed   bool

	readMu  sync.Mutex
	readBuf []byte

	writeMu sync.Mutex
	runs    []run
	hdr     [hdrLen]byte
	zeroHdr [hdrLen]byte
	iovs    [][]byte

	superReads, segments, coalescedWrites, coalesced, dropped atomic.Uint64
}

var _ tun.Device = (*Device)(nil)

// Create makes TUN interface name in the calling thread's network
// namespace, with UDP tunnel GSO on, or returns ErrUnsupported. The caller
// sets the MTU and brings the link up; the device reports itself up at once
// so wireguard-go opens its sockets.
func Create(name string) (*Device, error) {
	fd, err := unix.Open(cloneDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cloneDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	size := hdrLen
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&size))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: header size %d: %v", ErrUnsupported, size, e)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	file := os.NewFile(uintptr(fd), cloneDevice)
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	d := &Device{file: file, raw: raw, name: name,
		events: make(chan tun.Event, eventsBuffered), readBuf: make([]byte, maxSuperPacket),
		runs: make([]run, 0, batch), iovs: make([][]byte, 0, maxWriteIovecsPerCall)}
	d.events <- tun.EventUp | tun.EventMTUUpdate
	return d, nil
}

// File implements tun.Device.
func (d *Device) File() *os.File { return d.file }

// Name implements tun.Device.
func (d *Device) Name() (string, error) { return d.name, nil }

// Events implements tun.Device.
func (d *Device) Events() <-chan tun.Event { return d.events }

// BatchSize implements tun.Device: a 64 KiB super-packet of 1,340-byte
// segments is 49 packets.
func (d *Device) BatchSize() int { return batch }

// MTU implements tun.Device by asking the kernel; wireguard-go asks after
// MTUChanged. It must run in the interface's namespace.
func (d *Device) MTU() (int, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(d.name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("mtu of %s: %w", d.name, err)
	}
	return int(ifr.Uint32()), nil
}

// MTUChanged tells wireguard-go to read the MTU again (it sizes padding by
// it); the caller changed it.
func (d *Device) MTUChanged() {
	d.eventsMu.Lock()
	defer d.eventsMu.Unlock()
	if d.closed {
		return
	}
	select {
	case d.events <- tun.EventMTUUpdate:
	default: // one pending update is enough
	}
}

// Stats returns the counters so far.
func (d *Device) Stats() Stats {
	return Stats{SuperReads: d.superReads.Load(), Segments: d.segments.Load(),
		CoalescedWrites: d.coalescedWrites.Load(), Coalesced: d.coalesced.Load(), Dropped: d.dropped.Load()}
}

// Close implements tun.Device.
func (d *Device) Close() error {
	d.eventsMu.Lock()
	defer d.eventsMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	close(d.events)
	return d.file.Close()
}

// Read implements tun.Device: one read from the TUN, split into packets.
// A packet that cannot be split is dropped and counted, not returned as an
// error: an error stops wireguard-go's reader.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	for {
		n, err := d.file.Read(d.readBuf)
		if err != nil {
			if errors.Is(err, syscall.EBADFD) {
				err = os.ErrClosed
			}
			return 0, err
		}
		if n < hdrLen {
			d.dropped.Add(1)
			continue
		}
		h := decodeHdr(d.readBuf)
		count, err := split(h, d.readBuf[hdrLen:n], bufs, sizes, offset)
		switch {
		case errors.Is(err, errTooManySegments):
			d.dropped.Add(1)
			return 0, tun.ErrTooManySegments
		case err != nil:
			d.dropped.Add(1)
			continue
		}
		if h.gsoType != gsoNone {
			d.superReads.Add(1)
			d.segments.Add(uint64(count))
		}
		return count, nil
	}
}

// Write implements tun.Device: each packet of bufs (at offset) is written
// with one writev, but consecutive datagrams of one UDP flow go as one UDP
// GSO super-packet. It rewrites the headers of a run's first datagram.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.runs = plan(bufs, offset, d.runs)
	written := 0
	var errs error
	for _, r := range d.runs {
		d.iovs = d.iovs[:0]
		if r.n == 1 {
			d.iovs = append(d.iovs, d.zeroHdr[:], bufs[r.first][offset:])
		} else {
			first := bufs[r.first][offset:]
			coalescedHeader(r, first, d.hdr[:])
			d.iovs = append(d.iovs, d.hdr[:], first)
			for i := r.first + 1; i < r.first+r.n; i++ {
				d.iovs = append(d.iovs, bufs[i][offset+28:])
			}
		}
		if err := d.writev(d.iovs); err != nil {
			if errors.Is(err, syscall.EBADFD) || errors.Is(err, os.ErrClosed) {
				return written, os.ErrClosed
			}
			errs = errors.Join(errs, err)
			continue
		}
		written += r.n
		if r.n > 1 {
			d.coalescedWrites.Add(1)
			d.coalesced.Add(uint64(r.n))
		}
	}
	return written, errs
}

// writev writes iovs as one packet, waiting for room on the non-blocking fd.
func (d *Device) writev(iovs [][]byte) error {
	var werr error
	err := d.raw.Write(func(fd uintptr) bool {
		_, werr = unix.Writev(int(fd), iovs)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}
