package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchboard-rt/switchboard/pkg/certs"
)

// TLSConfig serves the listeners over TLS from PEM files, re-read without
// a restart (see Server.ReloadCerts and ReloadInterval). The zero value
// serves plain text.
type TLSConfig struct {
	// CertFile and KeyFile, when set, serve the HTTP listener (wss://,
	// https://) and the gRPC listener over TLS. Both or neither. Default:
	// unset, plain text.
	CertFile, KeyFile string
	// GRPCCertFile and GRPCKeyFile, when set, serve the gRPC listener
	// with another certificate than CertFile, or serve only it over TLS.
	// Both or neither. Default: CertFile and KeyFile.
	GRPCCertFile, GRPCKeyFile string
	// GRPCClientCAFile, when set, makes the gRPC listener require a
	// client certificate signed by one of its CAs (mutual TLS) of every
	// caller, health and reflection included. It needs a gRPC
	// certificate. With it, the gRPC API may listen beyond loopback
	// without an API token: the certificate authenticates callers.
	// Default: unset, no client certificate asked for.
	GRPCClientCAFile string
	// PrimaryCAFile, on a standby, holds the CAs that sign its primary's
	// gRPC certificate: the standby then watches the primary's health over
	// TLS, verifying that the certificate names the host of PrimaryAddr,
	// and presents its own gRPC certificate if the primary asks for one
	// (it must then allow client authentication). Read once at start.
	// Required on a standby that serves gRPC over TLS. Default: unset, the
	// standby watches its primary in plain text.
	PrimaryCAFile string
	// ReloadInterval is how often the files are checked for a change of
	// modification time or size, and re-read when they changed. A file
	// that fails to load keeps the previous certificate and is logged.
	// Default: 5s.
	ReloadInterval time.Duration
}

func (c TLSConfig) httpFiles() (certs.Files, bool) {
	return certs.Files{Cert: c.CertFile, Key: c.KeyFile}, c.CertFile != ""
}

func (c TLSConfig) grpcFiles() (certs.Files, bool) {
	f := certs.Files{Cert: c.CertFile, Key: c.KeyFile, ClientCA: c.GRPCClientCAFile}
	if c.GRPCCertFile != "" {
		f.Cert, f.Key = c.GRPCCertFile, c.GRPCKeyFile
	}
	return f, f.Cert != ""
}

func (c TLSConfig) interval() time.Duration {
	if c.ReloadInterval <= 0 {
		return certs.DefaultInterval
	}
	return c.ReloadInterval
}

// mutual reports whether gRPC callers must present a client certificate.
func (c TLSConfig) mutual() bool { return c.GRPCClientCAFile != "" }

// check checks the settings; primary is the node's PrimaryAddr.
func (c TLSConfig) check(primary string) error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("invalid TLS configuration: set both SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY, or neither")
	}
	if (c.GRPCCertFile == "") != (c.GRPCKeyFile == "") {
		return errors.New("invalid TLS configuration: set both SWITCHBOARD_GRPC_TLS_CERT and SWITCHBOARD_GRPC_TLS_KEY, or neither")
	}
	if _, ok := c.grpcFiles(); ok && primary != "" && c.PrimaryCAFile == "" {
		return errors.New("invalid TLS configuration: a standby serving gRPC over TLS needs SWITCHBOARD_PRIMARY_CA, the CAs of its primary's certificate")
	}
	if _, ok := c.grpcFiles(); c.GRPCClientCAFile != "" && !ok {
		return errors.New("invalid TLS configuration: SWITCHBOARD_GRPC_CLIENT_CA needs a gRPC certificate (SWITCHBOARD_TLS_CERT or SWITCHBOARD_GRPC_TLS_CERT)")
	}
	return nil
}

// loadCerts reads the certificates of both listeners, if any.
func (s *Server) loadCerts() (err error) {
	if f, ok := s.cfg.TLS.httpFiles(); ok {
		if s.httpCerts, err = certs.Load(f, s.log); err != nil {
			return err
		}
	}
	if f, ok := s.cfg.TLS.grpcFiles(); ok {
		if s.httpCerts != nil && f == (certs.Files{Cert: s.cfg.TLS.CertFile, Key: s.cfg.TLS.KeyFile}) {
			s.grpcCerts = s.httpCerts
			return nil
		}
		if s.grpcCerts, err = certs.Load(f, s.log); err != nil {
			return err
		}
	}
	return nil
}

// stores returns the distinct certificate stores of the node.
func (s *Server) stores() []*certs.Store {
	var st []*certs.Store
	if s.httpCerts != nil {
		st = append(st, s.httpCerts)
	}
	if s.grpcCerts != nil && s.grpcCerts != s.httpCerts {
		st = append(st, s.grpcCerts)
	}
	return st
}

// ReloadCerts re-reads the TLS certificate files now; the command calls
// it on SIGHUP. A file that fails to load keeps the previous certificate;
// the error says why. Without TLS it does nothing.
func (s *Server) ReloadCerts() error {
	var errs []error
	for _, st := range s.stores() {
		errs = append(errs, st.Reload())
	}
	return errors.Join(errs...)
}

// TLS reports whether the HTTP and the gRPC listener serve TLS.
func (s *Server) TLS() (http, grpc bool) { return s.httpCerts != nil, s.grpcCerts != nil }

// watchCerts re-reads changed certificate files until ctx ends.
func (s *Server) watchCerts(ctx context.Context, wg *sync.WaitGroup) {
	if s.httpCerts != nil || s.grpcCerts != nil {
		s.log.Info("serving TLS", "http", s.httpCerts != nil, "grpc", s.grpcCerts != nil, "grpc_client_certs", s.cfg.TLS.mutual(), "reload_interval", s.cfg.TLS.interval())
	}
	for _, st := range s.stores() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.Watch(ctx, s.cfg.TLS.interval())
		}()
	}
}

// tlsListener wraps the HTTP listener in TLS when it has a certificate.
func (s *Server) tlsListener(ln net.Listener) net.Listener {
	if s.httpCerts == nil {
		return ln
	}
	// WebSocket upgrades need HTTP/1.1.
	return tls.NewListener(ln, s.httpCerts.ServerConfig("http/1.1"))
}

// grpcOptions returns the gRPC server's interceptors and, with a
// certificate, its TLS credentials.
func (s *Server) grpcOptions() []grpc.ServerOption {
	opts := serverOptions(s.log, s.grpcMetrics)
	if s.grpcCerts != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.grpcCerts.ServerConfig("h2"))))
	}
	return opts
}

// primaryCreds returns the credentials a standby watches its primary with:
// TLS with PrimaryCAFile, plain text without.
func (s *Server) primaryCreds() (credentials.TransportCredentials, error) {
	if s.cfg.TLS.PrimaryCAFile == "" {
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(s.cfg.TLS.PrimaryCAFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the primary's CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("failed to load the primary's CA file %s: no PEM certificate in it", s.cfg.TLS.PrimaryCAFile)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if st := s.grpcCerts; st != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return st.Certificate(), nil
		}
	}
	return credentials.NewTLS(tc), nil
}
