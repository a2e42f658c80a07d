package capacity

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kvmProbeImage is a 512-byte boot sector (kvmprobe.S) that switches to long
// mode with paging and prints kvmProbeMarker on the first serial port.
//
//go:embed kvmprobe.bin
var kvmProbeImage []byte

const kvmProbeMarker = "OTXKVMLM"

// BootProbeTimeout bounds the KVM boot probe: firmware plus the payload take
// well under a second where KVM works; a host where it does not never prints.
const BootProbeTimeout = 10 * time.Second

// ErrProbeNoMarker means the probe guest never printed its marker.
var ErrProbeNoMarker = errors.New("the long-mode test payload did not boot")

// BootProbe boots the probe payload with qemu (a qemu-system-x86_64 path)
// under accel and reports how long it took to print its marker. It uses only
// a temporary file and a QEMU child it kills itself.
func BootProbe(ctx context.Context, qemu, accel string, timeout time.Duration) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "otherix-kvmprobe")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "probe.img")
	if err := os.WriteFile(img, kvmProbeImage, 0o600); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", accel, "-machine", "pc", "-m", "16",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-drive", "file="+img+",format=raw,if=ide,index=0,media=disk")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	found := make(chan bool, 1)
	go func() {
		r := bufio.NewReader(out)
		var seen bytes.Buffer
		buf := make([]byte, 256)
		for {
			n, err := r.Read(buf)
			seen.Write(buf[:n])
			if strings.Contains(seen.String(), kvmProbeMarker) {
				found <- true
				_, _ = io.Copy(io.Discard, r)
				return
			}
			if err != nil {
				found <- false
				return
			}
		}
	}()
	var ok bool
	select {
	case ok = <-found:
	case <-ctx.Done():
	}
	took := time.Since(start)
	cancel() // ends QEMU (CommandContext kills it)
	_ = cmd.Wait()
	if ok {
		return took, nil
	}
	if msg := strings.TrimSpace(lastLine(stderr.String())); msg != "" && ctx.Err() == nil {
		return took, fmt.Errorf("%w: qemu: %s", ErrProbeNoMarker, msg)
	}
	return took, fmt.Errorf("%w within %s", ErrProbeNoMarker, timeout)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
