//go:build !unix

package wsedge

// hasInput reports true: without a way to wait for input outside a read,
// the reader waits in its reads.
func (s *socket) hasInput() bool { return true }

// waitReadable returns at once (see hasInput).
func (s *socket) waitReadable() error { return nil }
