package main

import "github.com/switchboard-rt/switchboard/pkg/server"

// parseTLS reads the TLS and admin options into cfg; get returns an
// option's value and parse checks one, reporting it with its flag and
// variable. Whether the files load is checked by server.New.
func parseTLS(cfg *server.Config, get func(name string) string, parse func(name string, fn func(string) error)) {
	cfg.TLS = server.TLSConfig{
		CertFile:         get("tls-cert"),
		KeyFile:          get("tls-key"),
		GRPCCertFile:     get("grpc-tls-cert"),
		GRPCKeyFile:      get("grpc-tls-key"),
		GRPCClientCAFile: get("grpc-client-ca"),
		PrimaryCAFile:    get("primary-ca"),
	}
	parse("tls-reload-interval", positiveDuration(&cfg.TLS.ReloadInterval))
	cfg.AdminAddr = get("admin-addr")
}
