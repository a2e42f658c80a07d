package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/internal/atomicfile"
	"github.com/otherix/otherix/nodeagent/qcow2"
)

// Process is a QEMU, held through a pidfd so that neither Kill
// nor Exited can ever act on a recycled pid.
type Process struct {
	Pid    int
	RunDir string

	pidfd  *os.File    // pollable; Close unblocks the watcher
	stderr *tailBuffer // QEMU's stderr, when this agent started it
	// stderrR is the pipe drainStderr reads, closed when it returns.
	stderrR *os.File
	drained chan struct{}

	watchOnce sync.Once
	exited    chan struct{} // closed once QEMU is gone (and reaped, if ours)
	watchDone chan struct{} // closed when the watcher goroutine returns
}

// SetChildSubreaper makes the calling process adopt its orphaned
// descendants: a QEMU whose starter died (a test helper, a daemonized QEMU
// of an older agent's launch) becomes our child, so it is reaped here
// instead of being left as a zombie for PID 1, which reaps slowly on some
// hosts.
func SetChildSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("qemu: set child subreaper: %w", err)
	}
	return nil
}

// startTimeout bounds QEMU's initialisation when ctx has no earlier
// deadline: exec to a QMP greeting takes well under a second, even under TCG.
const startTimeout = time.Minute

// Start launches QEMU for s and returns once it is initialised, with the
// QMP and serial sockets listening and the guest paused (-S): the caller
// attaches the serial log, then sends Cont.
//
// QEMU is the agent's direct child in a session of its own, exec'd as
// s.User: it never holds root, not even while it opens its files, because
// the agent opens them (sockets, disks, seed, taps) and QEMU inherits the
// descriptors. Nothing daemonizes, so the seccomp sandbox can deny fork,
// exec and set*id outright.
func Start(ctx context.Context, s Spec) (*Process, error) {
	argv, fds, err := plan(s)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, err)
	}
	if p, err := Attach(s.RunDir); err == nil {
		p.Close()
		return nil, fmt.Errorf("%w: vm %s pid %d", ErrAlreadyRunning, s.ID, p.Pid)
	}
	removeRunFiles(s.RunDir) // leftovers of a QEMU that was killed
	// The image policy is nodeagent/images (CheckDisk, before every start).
	// This guard stays because it completes the argv, for any caller: the
	// argv gives disk0 its backing explicitly, so a backing name in the
	// header is never followed, but a qcow2 blockdev cannot be told "no data
	// file", and the VM disk is QEMU's to write (after a guest escape, the
	// attacker's). Only the data file, then, whatever else the header says.
	if h, err := qcow2.Read(s.Disk); err != nil {
		return nil, &StartError{ID: s.ID, Err: err}
	} else if h.ExternalData() || h.RawExternalData() || h.DataFileExtension {
		return nil, &StartError{ID: s.ID, Err: fmt.Errorf("%w: disk %s names an external data file", ErrUnsafeImage, s.Disk)}
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, &StartError{ID: s.ID, Err: err}
	}
	files, err := openInherited(fds)
	defer closeAll(files)
	if err != nil {
		removeRunFiles(s.RunDir)
		return nil, &StartError{ID: s.ID, Err: err}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		removeRunFiles(s.RunDir)
		return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, err)
	}
	defer devnull.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		removeRunFiles(s.RunDir)
		return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, err)
	}
	pidfd := -1
	attr := &os.ProcAttr{
		Dir: "/", // QEMU may not be able to enter the agent's directory
		// Only what QEMU needs: the agent's environment may hold secrets.
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: append([]*os.File{devnull, errW, errW}, files...),
		Sys: &syscall.SysProcAttr{
			// Its own session: signals to the agent's process group or
			// terminal never reach it, and it outlives the agent.
			Setsid: true,
			PidFD:  &pidfd,
		},
	}
	if s.User != nil {
		attr.Sys.Credential = s.User.credential()
	}
	proc, err := os.StartProcess(bin, argv, attr)
	errW.Close()
	closeAll(files)
	files = nil
	if err != nil {
		errR.Close()
		removeRunFiles(s.RunDir)
		return nil, &StartError{ID: s.ID, Err: err}
	}
	pid := proc.Pid
	_ = proc.Release() // reaped through our pidfd, never by os.Process
	// Nonblocking, so the runtime poller can wait on it (see watch).
	if err := unix.SetNonblock(pidfd, true); err != nil {
		errR.Close()
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		unix.Close(pidfd)
		removeRunFiles(s.RunDir)
		return nil, &StartError{ID: s.ID, Err: err}
	}
	p := newProcess(pid, s.RunDir, os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(pid)))
	p.stderr = newTailBuffer(stderrTail)
	p.stderrR, p.drained = errR, make(chan struct{})
	go p.drainStderr(errR)

	fail := func(err error) (*Process, error) {
		_ = p.Kill()
		<-p.Exited()
		p.Close()
		removeRunFiles(s.RunDir)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, ctx.Err())
		}
		return nil, &StartError{ID: s.ID, Err: err, Stderr: p.Stderr()}
	}
	st, err := readStat(p.Pid)
	if err != nil {
		return fail(err)
	}
	if err := atomicfile.Write(PidPath(s.RunDir), []byte(fmt.Sprintf("%d %d\n", p.Pid, st.start)), 0o600); err != nil {
		return fail(err)
	}
	cctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := awaitGreeting(cctx, QMPPath(s.RunDir), p.Exited()); err != nil {
		return fail(err)
	}
	return p, nil
}

// awaitGreeting waits until QEMU's monitor greets on qmpPath, which it does
// only once initialised, or until QEMU exits or ctx ends.
func awaitGreeting(ctx context.Context, qmpPath string, exited <-chan struct{}) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", qmpPath)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	done := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err == nil && !strings.Contains(line, `"QMP"`) {
			err = fmt.Errorf("unexpected QMP greeting %.80q", line)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// Most likely QEMU exited during initialisation.
			return fmt.Errorf("qemu exited during initialisation")
		}
		return nil
	case <-exited:
		conn.Close()
		<-done
		return fmt.Errorf("qemu exited during initialisation")
	}
}

// openInherited opens, in order, the descriptors plan listed. On error it
// returns what it opened so far, for the caller to close.
func openInherited(fds []inherit) ([]*os.File, error) {
	var out []*os.File
	for _, in := range fds {
		f, err := openOne(in)
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

func openOne(in inherit) (*os.File, error) {
	switch in.kind {
	case fdListen:
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: in.path, Net: "unix"})
		if err != nil {
			return nil, err
		}
		// The socket file must outlive this listener: QEMU keeps serving
		// on it, and a restarted agent dials it by path.
		l.SetUnlinkOnClose(false)
		defer l.Close()
		if err := os.Chmod(in.path, 0o600); err != nil {
			return nil, err
		}
		return l.File()
	case fdReadOnly:
		return os.OpenFile(in.path, os.O_RDONLY, 0)
	case fdReadWrite:
		return os.OpenFile(in.path, os.O_RDWR, 0)
	case fdTap:
		return openTap(in.path)
	}
	return nil, fmt.Errorf("qemu: unknown descriptor kind %d", in.kind)
}

// openTap attaches to the existing persistent tap name the way QEMU's own
// tap_open would (single queue, no packet info, with virtio-net headers);
// the flags must match the tap the data plane created.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// stderrTail is how much of QEMU's last words a Process keeps.
const stderrTail = 4 << 10

// drainStderr reads QEMU's stderr until every writer is gone, keeping the
// tail: QEMU must never block on a full pipe.
func (p *Process) drainStderr(r *os.File) {
	defer close(p.drained)
	defer r.Close()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		p.stderr.Write(buf[:n])
		if err != nil {
			return
		}
	}
}

// Stderr returns the last few KiB QEMU wrote to stderr, if this agent
// started it.
func (p *Process) Stderr() string {
	if p.stderr == nil {
		return ""
	}
	return strings.TrimSpace(p.stderr.String())
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// ReapOrphans reaps QEMU processes that died as our children with nobody
// watching them (see SetChildSubreaper) until ctx ends: a QEMU whose
// Process was closed while it ran, or one adopted as an orphan. A watched
// QEMU is reaped by its Process instead (Exited). The agent runs this for
// its whole life, next to SetChildSubreaper.
func ReapOrphans(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		reapQEMUZombies()
		select {
		case <-ctx.Done():
			return
		case <-ch: // coalesced, so each wake-up sweeps them all
		}
	}
}

// reapQEMUZombies reaps our zombie children that are QEMUs: named
// qemu-system-* and in a session other than ours (Start gives QEMU its
// own). Any other child belongs to an exec.Cmd that will Wait for it. Each is reaped through a pidfd opened
// and checked first, so a pid reaped meanwhile (by Exited) and reused can
// never be waited for.
func reapQEMUZombies() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	sid, err := unix.Getsid(0)
	if err != nil {
		return
	}
	isOurs := func(pid int) bool {
		st, err := readStat(pid)
		return err == nil && st.ppid == self && st.state == 'Z' && st.sid != sid &&
			strings.HasPrefix(st.comm, "qemu-system-")
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isOurs(pid) {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		if isOurs(pid) {
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		}
		unix.Close(fd)
	}
}

// Attach re-adopts the QEMU whose pid file is in runDir, typically after an
// agent restart. It returns ErrNotRunning unless the pid is alive and is the
// very QEMU the pid file names, so a recycled pid is never adopted: the
// agent records the process's start time next to its pid. A pid file with
// a pid alone was written by a daemonized QEMU of an older agent, which is
// recognised by its -pidfile argument instead.
func Attach(runDir string) (*Process, error) {
	b, err := os.ReadFile(PidPath(runDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no pid file in %s", ErrNotRunning, runDir)
		}
		return nil, fmt.Errorf("qemu: attach %s: %w", runDir, err)
	}
	f := strings.Fields(string(b))
	var pid int
	var start uint64
	if len(f) >= 1 {
		pid, err = strconv.Atoi(f[0])
	}
	if len(f) == 2 && err == nil {
		start, err = strconv.ParseUint(f[1], 10, 64)
	}
	if len(f) < 1 || len(f) > 2 || err != nil || pid <= 0 {
		return nil, fmt.Errorf("%w: bad pid file in %s", ErrNotRunning, runDir)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("%w: pid %d is gone", ErrNotRunning, pid)
		}
		return nil, fmt.Errorf("qemu: attach %s: pidfd_open %d: %w", runDir, pid, err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	// What is read of /proc below is of the process the pidfd holds only
	// if that process is still alive afterwards; hence the check after it.
	var ok bool
	if len(f) == 2 {
		st, err := readStat(pid)
		ok = err == nil && st.start == start && strings.HasPrefix(st.comm, "qemu-system-")
	} else {
		ok = isOurQEMU(pid, runDir)
	}
	if !ok || pidfdExited(fd) {
		pidfd.Close()
		return nil, fmt.Errorf("%w: pid %d is not the qemu of %s", ErrNotRunning, pid, runDir)
	}
	return newProcess(pid, runDir, pidfd), nil
}

func newProcess(pid int, runDir string, pidfd *os.File) *Process {
	return &Process{Pid: pid, RunDir: runDir, pidfd: pidfd, exited: make(chan struct{}), watchDone: make(chan struct{})}
}

// isOurQEMU recognises a daemonized QEMU of an older agent by its command
// line.
func isOurQEMU(pid int, runDir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if !strings.HasPrefix(filepath.Base(args[0]), "qemu-system-") {
		return false
	}
	want := PidPath(runDir)
	for i := 1; i+1 < len(args); i++ {
		if args[i] == "-pidfile" && filepath.Clean(args[i+1]) == want {
			return true
		}
	}
	return false
}

func pidfdExited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// Exited returns a channel closed when QEMU is gone. If QEMU is our child
// (we started it as a subreaper), it is also reaped, so no zombie remains.
func (p *Process) Exited() <-chan struct{} {
	p.watchOnce.Do(func() { go p.watch() })
	return p.exited
}

// watch waits in the runtime poller rather than a blocked thread, so many
// VMs cost no threads. It returns early, without closing exited, when the
// Process is closed.
func (p *Process) watch() {
	defer close(p.watchDone)
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return
	}
	err = rc.Read(func(fd uintptr) bool { return pidfdExited(int(fd)) })
	if err != nil {
		return // closed
	}
	_ = rc.Control(func(fd uintptr) {
		// P_PIDFD reaps exactly this process; ECHILD when it is not ours.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG, nil)
			if err != unix.EINTR {
				return
			}
		}
	})
	p.removePidFile()
	close(p.exited)
}

// removePidFile removes the pid file once QEMU is gone, unless it already
// names another process (a new Start since).
func (p *Process) removePidFile() {
	b, err := os.ReadFile(PidPath(p.RunDir))
	if err != nil {
		return
	}
	if f := strings.Fields(string(b)); len(f) > 0 && f[0] == strconv.Itoa(p.Pid) {
		_ = os.Remove(PidPath(p.RunDir))
	}
}

// Kill sends SIGKILL; it is only for a poweroff that QEMU did not honour.
// A QEMU that is already gone is not an error.
func (p *Process) Kill() error {
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return fmt.Errorf("qemu: kill pid %d: %w", p.Pid, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return fmt.Errorf("qemu: kill pid %d: %w", p.Pid, err)
	}
	if serr != nil && serr != unix.ESRCH {
		return fmt.Errorf("qemu: kill pid %d: %w", p.Pid, serr)
	}
	return nil
}

// Close releases the pidfd and stops watching; QEMU keeps running. Exited's
// channel is then never closed.
func (p *Process) Close() error {
	running := true
	select {
	case <-p.exited:
		running = false
	default:
	}
	err := p.pidfd.Close()
	started := true
	p.watchOnce.Do(func() { started = false })
	if started {
		<-p.watchDone
	}
	if p.stderrR != nil && running {
		// Nobody reads a running QEMU's stderr from now on, as after an
		// agent restart: QEMU ignores SIGPIPE and loses what it writes
		// there. An exited QEMU's pipe ends by itself, its tail intact.
		_ = p.stderrR.Close()
		<-p.drained
	}
	return err
}

func removeRunFiles(runDir string) {
	for _, f := range []string{PidFile, QMPSocket, SerialSocket, GuestAgentSocket} {
		_ = os.Remove(filepath.Join(runDir, f))
	}
}

// Alive reports whether process pid exists and is not a zombie waiting to
// be reaped (a daemonized QEMU that exited is one until its reaper runs).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(pid)
	return err == nil && st.state != 'Z'
}

type procStat struct {
	comm  string
	state byte
	ppid  int
	sid   int
	start uint64 // clock ticks after boot: with the pid, names one process
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("qemu: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("qemu: malformed /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	sid, _ := strconv.Atoi(f[3])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	comm := ""
	if j := bytes.IndexByte(b, '('); j >= 0 && j < i {
		comm = string(b[j+1 : i])
	}
	return procStat{comm: comm, state: f[0][0], ppid: ppid, sid: sid, start: start}, nil
}
