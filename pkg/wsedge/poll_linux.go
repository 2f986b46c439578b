package wsedge

import (
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
)

// poller watches idle connections for input with an epoll instance of its
// own, next to Go's network poller, which already watches the same
// sockets for the reads in progress. The epoll instance is itself in Go's
// network poller, so waiting for it costs a parked goroutine, not a
// thread. Each connection is armed for one event at a time
// (EPOLLONESHOT): its reader re-arms it when it parks.
type poller struct {
	fd      int
	f       *os.File // fd, registered with Go's network poller
	rc      syscall.RawConn
	wake    func(id uint64)
	log     *slog.Logger
	closing atomic.Bool // close was called
	done    chan struct{}
}

// newPoller starts a poller that calls wake with a connection's id when
// the connection has input; wake must not block.
func newPoller(wake func(id uint64), log *slog.Logger) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands it to the network poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{fd: fd, f: f, rc: rc, wake: wake, log: log, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// run delivers events until the poller is closed. Should epoll fail
// otherwise, idle connections are no longer read, and their keep-alive
// ends them: it says so in the log.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	var waitErr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events, 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				waitErr = os.NewSyscallError("epoll_wait", err)
				return true
			}
			for _, ev := range events[:n] {
				p.wake(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32)
			}
			if n < len(events) {
				return false // drained: wait for the next event
			}
		}
	})
	if err = errors.Join(err, waitErr); err != nil && !p.closing.Load() {
		p.log.Error("idle-connection poller stopped: idle browsers are no longer read and their keep-alive will drop them", "err", err)
	}
}

// watch adds a connection, armed.
func (p *poller) watch(rc syscall.RawConn, id uint64) error {
	return p.ctl(rc, syscall.EPOLL_CTL_ADD, id)
}

// rearm arms a connection again after its event. If it already has input,
// the event fires at once.
func (p *poller) rearm(rc syscall.RawConn, id uint64) error {
	return p.ctl(rc, syscall.EPOLL_CTL_MOD, id)
}

// ctl runs epoll_ctl while rc's descriptor is held open, so it cannot be
// closed and reused meanwhile. A socket leaves the epoll instance by
// itself when it is closed.
func (p *poller) ctl(rc syscall.RawConn, op int, id uint64) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(p.fd, op, int(fd), &ev)
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// close stops the poller and waits for it.
func (p *poller) close() {
	p.closing.Store(true)
	p.f.Close()
	<-p.done
}
