//go:build !unix

package server

// checkFileLimit has no open-file limit to check here.
func (s *Server) checkFileLimit() {}
