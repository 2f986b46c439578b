//go:build unix

package wsedge

import (
	"syscall"
	"unsafe"
)

// haveWritev says that writev can send a batch without copying it.
const haveWritev = true

// iovecs are the buffers of a writev.
type iovecs = []syscall.Iovec

// maxIovecs is how many buffers one writev takes (IOV_MAX on Linux).
const maxIovecs = 1024

// writev writes up to maxIovecs of bufs to fd in one syscall.
func (s *socket) writev(fd uintptr, bufs [][]byte) (int, error) {
	s.iov = s.iov[:0]
	for _, b := range bufs {
		if len(s.iov) == maxIovecs {
			break
		}
		if len(b) > 0 {
			iov := syscall.Iovec{Base: &b[0]}
			iov.SetLen(len(b))
			s.iov = append(s.iov, iov)
		}
	}
	if len(s.iov) == 0 {
		return 0, nil
	}
	n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[0])), uintptr(len(s.iov)))
	clear(s.iov) // the payloads are not the socket's to keep
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// setSendBuffer sets the kernel send buffer of the TCP socket to n bytes
// (SO_SNDBUF), if n > 0.
func (s *socket) setSendBuffer(n int) {
	if n <= 0 || s.tcp == nil {
		return
	}
	s.tcp.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	})
}
