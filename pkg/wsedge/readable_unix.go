//go:build unix

package wsedge

import "syscall"

// hasInput reports whether a read would not block: the buffered reader
// holds bytes, or the socket holds bytes, an end of file or an error. It
// reports true when it cannot tell.
func (s *socket) hasInput() bool {
	if s.br.Buffered() > 0 || s.in.buffered() || s.raw == nil {
		return true
	}
	ready := true
	if s.raw.Control(func(fd uintptr) { ready = peekInput(fd) }) != nil {
		return true // closed: the read reports it
	}
	return ready
}

// waitReadable blocks until hasInput would report true, on a shallow
// stack; it reads nothing.
func (s *socket) waitReadable() error {
	if s.br.Buffered() > 0 || s.in.buffered() || s.raw == nil {
		return nil
	}
	return s.raw.Read(peekInput)
}

// peekInput reports whether a read of fd would not block.
func peekInput(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
