//go:build unix

package server

import "syscall"

// checkFileLimit warns when the connection limits allow more connections
// than the process may open files: past the open-file limit, accepting
// fails for everyone, browsers, probes and web servers alike.
func (s *Server) checkFileLimit() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	l := s.cfg.Limits
	browsers, http, grpc := orDefault(l.MaxConns, 100_000), orDefault(l.MaxHTTPConns, 10_000), orDefault(l.MaxGRPCConns, 1_000)
	if browsers < 0 || http < 0 || grpc < 0 {
		s.log.Warn("a connection limit is off: clients may take every file descriptor", "open_file_limit", rl.Cur)
		return
	}
	// A few descriptors for the listeners, the poller and the logs.
	if need := uint64(browsers+http+grpc) + 64; need > rl.Cur {
		s.log.Warn("the connection limits allow more connections than the process may open: raise the open-file limit (ulimit -n) or lower SWITCHBOARD_MAX_CONNS",
			"open_file_limit", rl.Cur, "max_conns", browsers, "max_http_conns", http, "max_grpc_conns", grpc)
	}
}
