//go:build !linux

package wsedge

import (
	"errors"
	"log/slog"
	"syscall"
)

// poller is unavailable here: every connection has a reader of its own.
type poller struct{}

func newPoller(func(id uint64), *slog.Logger) (*poller, error) {
	return nil, errors.New("no epoll on this system")
}

func (*poller) watch(syscall.RawConn, uint64) error { return errors.ErrUnsupported }
func (*poller) rearm(syscall.RawConn, uint64) error { return errors.ErrUnsupported }
func (*poller) close()                              {}
