//go:build !unix

package wsedge

import "errors"

// haveWritev says that writev can send a batch without copying it.
const haveWritev = false

// iovecs are the buffers of a writev, which this system lacks.
type iovecs = struct{}

// writev is never called without haveWritev.
func (s *socket) writev(uintptr, [][]byte) (int, error) {
	return 0, errors.New("writev is not supported on this system")
}

// setSendBuffer leaves the system's send buffer.
func (s *socket) setSendBuffer(int) {}
