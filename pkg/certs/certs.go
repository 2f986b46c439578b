// Package certs serves TLS certificates read from PEM files and re-read
// without a restart: on demand (SIGHUP) and when the files change.
//
// A Store holds the current certificate, and optionally a pool of CAs
// whose client certificates it requires (mutual TLS), behind an atomic
// pointer; the tls.Config it returns picks them up at every handshake
// through GetConfigForClient. A reload that fails (a missing file, a key
// that does not match, a half-written file) keeps the previous
// certificate and is logged, so a node never stops serving TLS because of
// a bad renewal.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often Watch looks at the files by default.
const DefaultInterval = 5 * time.Second

// Files names the PEM files of a Store.
type Files struct {
	// Cert is the certificate chain, leaf first. Required.
	Cert string
	// Key is the private key of the leaf. Required.
	Key string
	// ClientCA, when set, holds the CAs whose client certificates are
	// accepted; every client must then present one (mutual TLS). Default:
	// unset, no client certificates asked for.
	ClientCA string
}

func (f Files) paths() []string {
	p := []string{f.Cert, f.Key}
	if f.ClientCA != "" {
		p = append(p, f.ClientCA)
	}
	return p
}

// Store holds the current certificate read from Files. Create it with
// Load; all methods are safe for concurrent use.
type Store struct {
	files Files
	log   *slog.Logger
	cur   atomic.Pointer[snapshot]

	mu     sync.Mutex // serializes reloads
	stamps []stamp    // of the files at the last attempt, for Watch
}

// snapshot is one successful read of the files.
type snapshot struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool
}

// stamp is what Watch compares to notice a change.
type stamp struct {
	mod  time.Time
	size int64
	err  bool
}

// Load reads the files once and returns a Store serving them. It fails
// when they cannot be read or do not hold a usable certificate: a node
// must not start with TLS it cannot serve. log receives reloads and their
// failures; nil means slog.Default().
func Load(f Files, log *slog.Logger) (*Store, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("failed to load TLS certificate: both a certificate and a key file are required")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Store{files: f, log: log}
	s.stamps = s.stat()
	snap, err := read(f)
	if err != nil {
		return nil, err
	}
	s.cur.Store(snap)
	return s, nil
}

// read reads and checks every file.
func read(f Files) (*snapshot, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("failed to load TLS certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	snap := &snapshot{cert: &cert}
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("failed to read client CA file: %w", err)
		}
		snap.clientCAs = x509.NewCertPool()
		if !snap.clientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("failed to load client CA file %s: no PEM certificate in it", f.ClientCA)
		}
	}
	return snap, nil
}

// Reload re-reads the files. On failure the Store keeps serving what it
// had, logs the error and returns it.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reload()
}

func (s *Store) reload() error {
	s.stamps = s.stat()
	snap, err := read(s.files)
	if err != nil {
		s.log.Error("TLS reload failed; still serving the previous certificate", "cert", s.files.Cert, "err", err)
		return err
	}
	s.cur.Store(snap)
	s.log.Info("TLS certificate reloaded", "cert", s.files.Cert, "serial", serial(snap.cert), "not_after", notAfter(snap.cert))
	return nil
}

// Watch reloads the files when their modification time or size has
// changed and then held still for one look, looking every interval
// (DefaultInterval when not positive), until ctx ends: a certificate and
// key being written one after the other are read once both are done. A
// change that fails to load is logged once and retried at the next
// change.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending []stamp // a change seen at the last look
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		cur := s.stat()
		switch {
		case !changed(s.stamps, cur):
			pending = nil
		case pending != nil && !changed(pending, cur):
			pending = nil
			s.reload() // logs its own failure
		default:
			pending = cur
		}
		s.mu.Unlock()
	}
}

func (s *Store) stat() []stamp {
	paths := s.files.paths()
	st := make([]stamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			st[i].err = true
			continue
		}
		st[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return st
}

func changed(a, b []stamp) bool {
	for i := range a {
		if a[i].err != b[i].err || a[i].size != b[i].size || !a[i].mod.Equal(b[i].mod) {
			return true
		}
	}
	return false
}

// Certificate returns the certificate served now.
func (s *Store) Certificate() *tls.Certificate { return s.cur.Load().cert }

// MutualTLS reports whether clients must present a certificate.
func (s *Store) MutualTLS() bool { return s.files.ClientCA != "" }

// ServerConfig returns a server tls.Config that serves the Store's
// current certificate at every handshake (TLS 1.2 at least) and, with a
// ClientCA, requires and verifies a client certificate. nextProtos are
// offered by ALPN ("h2" for gRPC, "http/1.1" for WebSocket).
func (s *Store) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		// A fresh config per handshake: its callers (grpc-go) may
		// modify what it returns.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			snap := s.cur.Load()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   append([]string(nil), nextProtos...),
				Certificates: []tls.Certificate{*snap.cert},
			}
			if snap.clientCAs != nil {
				c.ClientCAs = snap.clientCAs
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

func serial(c *tls.Certificate) string {
	if c.Leaf == nil {
		return ""
	}
	return c.Leaf.SerialNumber.String()
}

func notAfter(c *tls.Certificate) time.Time {
	if c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}
