package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Process is a daemonized QEMU, held through a pidfd so that neither Kill
// nor Exited can ever act on a recycled pid.
type Process struct {
	Pid    int
	RunDir string

	pidfd *os.File // pollable; Close unblocks the watcher

	watchOnce sync.Once
	exited    chan struct{} // closed once QEMU is gone (and reaped, if ours)
	watchDone chan struct{} // closed when the watcher goroutine returns
}

// SetChildSubreaper makes the calling process adopt its orphaned
// descendants. A daemonized QEMU then becomes our child, so we learn of its
// exit and reap it ourselves instead of leaving a zombie for PID 1, which
// reaps slowly on some hosts.
func SetChildSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("qemu: set child subreaper: %w", err)
	}
	return nil
}

// Start launches QEMU for s and returns once it is initialised, with the
// QMP and serial sockets listening and the guest paused (-S): the caller
// attaches the serial log, then sends Cont.
func Start(ctx context.Context, s Spec) (*Process, error) {
	argv, err := Argv(s)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, err)
	}
	if p, err := Attach(s.RunDir); err == nil {
		p.Close()
		return nil, fmt.Errorf("%w: vm %s pid %d", ErrAlreadyRunning, s.ID, p.Pid)
	}
	removeRunFiles(s.RunDir) // leftovers of a QEMU that was killed

	// A file rather than a pipe: the daemon inherits the launcher's stderr,
	// and with a pipe exec's Wait would wait for the daemon to close it.
	errf, err := os.CreateTemp(s.RunDir, "start-*.err")
	if err != nil {
		return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, err)
	}
	defer os.Remove(errf.Name())
	defer errf.Close()

	// ctx kills only the launcher; killStrays below finds what it forked.
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = errf
	cmd.Stderr = errf
	// Its own process group: a SIGINT/SIGTERM to the agent's group must not
	// reach QEMU while it initialises (the daemon then calls setsid). Not
	// its own session: staying in ours is how reapQEMUZombies tells this
	// launcher, which exec waits for, from the orphans it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	runErr := cmd.Run()
	if runErr != nil {
		msg, _ := os.ReadFile(errf.Name())
		killStrays(s.RunDir)
		reapQEMUZombies() // a daemon still exiting is left to ReapOrphans
		removeRunFiles(s.RunDir)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu: start vm %s: %w", s.ID, ctx.Err())
		}
		return nil, &StartError{ID: s.ID, Err: runErr, Stderr: string(bytes.TrimSpace(msg))}
	}

	p, err := Attach(s.RunDir)
	if err != nil {
		killStrays(s.RunDir)
		removeRunFiles(s.RunDir)
		return nil, fmt.Errorf("qemu: start vm %s: launcher succeeded but %w", s.ID, err)
	}
	// The middle process of QEMU's double fork is now our zombie.
	reapQEMUZombies()
	return p, nil
}

// ReapOrphans reaps QEMU processes that died as orphans adopted by us
// (see SetChildSubreaper) until ctx ends: the middle process of QEMU's
// double fork, and the daemon of a launch that failed. A running VM's
// daemon is reaped by its Process instead (Exited). The agent runs this
// for its whole life, next to SetChildSubreaper.
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

// reapQEMUZombies reaps our zombie children that are QEMU's double-fork
// products: named qemu-system-* and in a session other than ours (QEMU
// calls setsid). Any other child, the launcher included, belongs to an
// exec.Cmd that will Wait for it. Each is reaped through a pidfd opened
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
// agent restart. It returns ErrNotRunning unless the pid is alive and is a
// QEMU started with this run directory's pid file, so a recycled pid is
// never adopted.
func Attach(runDir string) (*Process, error) {
	b, err := os.ReadFile(PidPath(runDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no pid file in %s", ErrNotRunning, runDir)
		}
		return nil, fmt.Errorf("qemu: attach %s: %w", runDir, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
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
	// The cmdline read below is of the process the pidfd holds only if that
	// process is still alive afterwards; hence the check after it.
	ok := isOurQEMU(pid, runDir)
	if !ok || pidfdExited(fd) {
		pidfd.Close()
		return nil, fmt.Errorf("%w: pid %d is not the qemu of %s", ErrNotRunning, pid, runDir)
	}
	return &Process{
		Pid:       pid,
		RunDir:    runDir,
		pidfd:     pidfd,
		exited:    make(chan struct{}),
		watchDone: make(chan struct{}),
	}, nil
}

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
	close(p.exited)
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
	err := p.pidfd.Close()
	started := true
	p.watchOnce.Do(func() { started = false })
	if started {
		<-p.watchDone
	}
	return err
}

// killStrays kills every process of a failed launch for runDir: a daemon
// that failed after forking, or, when ctx killed the launcher, the middle
// process and daemon that would otherwise carry on without us. They are
// found by command line, since none may have written the pid file yet, and
// waited for, so none can create a file after removeRunFiles. A process
// SIGKILLed in fork may still produce a child, hence the repeated scan.
func killStrays(runDir string) {
	for range 10 {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		var fds []int
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() || !isOurQEMU(pid, runDir) {
				continue
			}
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if isOurQEMU(pid, runDir) {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				fds = append(fds, fd)
			} else {
				unix.Close(fd)
			}
		}
		if len(fds) == 0 {
			return
		}
		for _, fd := range fds {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for {
				if _, err := unix.Poll(pfd, 5000); err != unix.EINTR {
					break
				}
			}
			unix.Close(fd)
		}
	}
}

func removeRunFiles(runDir string) {
	for _, f := range []string{PidFile, QMPSocket, SerialSocket} {
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
	if len(f) < 4 {
		return procStat{}, fmt.Errorf("qemu: malformed /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	sid, _ := strconv.Atoi(f[3])
	comm := ""
	if j := bytes.IndexByte(b, '('); j >= 0 && j < i {
		comm = string(b[j+1 : i])
	}
	return procStat{comm: comm, state: f[0][0], ppid: ppid, sid: sid}, nil
}
