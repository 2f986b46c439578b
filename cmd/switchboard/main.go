// Command switchboard runs a Switchboard node: browsers connect over
// WebSocket, web servers emit and count over gRPC.
//
// Every flag has an environment variable; flags win over the environment,
// which wins over the defaults. Run "switchboard -h" for the list.
//
// SIGHUP re-reads the TLS certificates, which are also re-read when their
// files change.
//
// "switchboard version" (or --version) prints the module version and the
// VCS revision it was built from.
//
// "switchboard healthcheck" probes a running node over HTTP and exits 0
// when it answers; container health checks use it, as the image has no
// shell tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard-rt/switchboard/pkg/server"
)

func main() {
	if isVersion(os.Args[1:]) {
		printVersion(os.Stdout)
		return
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, os.Environ()...))
}

// run is main with its inputs made explicit; it returns the exit code: 0
// after a clean shutdown, 1 when the node fails, 2 for a bad configuration.
// environ, the process's KEY=value entries, is only read for SWITCHBOARD_
// variables that no option reads, which are logged as warnings.
func run(args []string, getenv func(string) string, stderr io.Writer, environ ...string) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], getenv, stderr)
	}
	// Catch signals before binding anything, so that a SIGTERM during
	// start-up still shuts down cleanly instead of killing the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default action: a second
		// one kills a shutdown that hangs.
		<-ctx.Done()
		stop()
	}()

	cfg, logger, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "switchboard: %v\n", err)
		return 2
	}
	for _, u := range unknownEnv(environ) {
		logger.Warn("ignoring an unknown environment variable", "var", u.name, "did_you_mean", u.nearest)
	}
	srv, err := server.New(cfg)
	if err != nil {
		logger.Error("failed to start", "err", err)
		return 1
	}
	defer reloadOnHangup(srv, logger)()
	if err := srv.Run(ctx); err != nil {
		logger.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}

// reloadOnHangup re-reads the TLS certificates on each SIGHUP until the
// returned function is called. Without TLS, SIGHUP is ignored rather
// than killing the node.
func reloadOnHangup(srv *server.Server, logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				if h, g := srv.TLS(); !h && !g {
					logger.Info("SIGHUP: no TLS certificate to reload")
					continue
				}
				logger.Info("SIGHUP: reloading TLS certificates")
				srv.ReloadCerts() // logs its own failure
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// newLogger returns a logger writing to w at level, in JSON when format is
// "json" and as text otherwise.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
