// Command webserver is an example web server that uses Switchboard: it
// serves a page showing the live online count and system messages, and
// turns POST /api/messages and POST /api/quote into emits.
//
// Environment: LISTEN_ADDR (default :3000), SWITCHBOARD_ADDR (gRPC target,
// default 127.0.0.1:9090), SWITCHBOARD_API_TOKEN, SWITCHBOARD_PUBLIC_URLS
// (comma list of the socket server URLs browsers use, read on every page
// request; default ws://localhost:8080/ws), QUOTES_URL (optional).
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-rt/switchboard/examples/webserver/site"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("webserver failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	sb, err := client.Dial(env("SWITCHBOARD_ADDR", "127.0.0.1:9090"), client.WithToken(os.Getenv("SWITCHBOARD_API_TOKEN")))
	if err != nil {
		return err
	}
	defer sb.Close()
	srv := &http.Server{
		Addr: env("LISTEN_ADDR", ":3000"),
		Handler: site.New(site.Config{
			Name:        os.Getenv("SITE_NAME"),
			Switchboard: sb,
			PublicURLs:  func() []string { return splitList(env("SWITCHBOARD_PUBLIC_URLS", "ws://localhost:8080/ws")) },
			QuotesURL:   func() string { return os.Getenv("QUOTES_URL") },
			TokenSecret: os.Getenv("SWITCHBOARD_TOKEN_SECRET"),
			Logger:      log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Info("web server listening", "addr", srv.Addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
