// Command demo runs the whole flow on localhost: one Switchboard node and two
// example web servers that share it, plus a trigger that posts a quotation
// every 30 s. Open both web servers' pages: they show the same online count,
// and a message posted to either appears on every page. Ctrl-C stops it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-rt/switchboard/examples/webserver/site"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

type config struct {
	httpAddr   string
	grpcAddr   string
	webAddrs   []string
	quoteEvery time.Duration
}

func main() {
	var cfg config
	var web string
	flag.StringVar(&cfg.httpAddr, "http-addr", "127.0.0.1:8080", "Switchboard's HTTP address (browsers)")
	flag.StringVar(&cfg.grpcAddr, "grpc-addr", "127.0.0.1:9090", "Switchboard's gRPC address (web servers)")
	flag.StringVar(&web, "web-addrs", "127.0.0.1:3001,127.0.0.1:3002", "comma list of the web servers' addresses")
	flag.DurationVar(&cfg.quoteEvery, "quote-every", 30*time.Second, "how often the trigger posts a quotation (0: never)")
	flag.Parse()
	cfg.webAddrs = strings.Split(web, ",")

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run starts the node and the web servers, prints their URLs to out, and
// serves until ctx ends.
func run(ctx context.Context, cfg config, out io.Writer, log *slog.Logger) error {
	// The web servers vouch for their browsers with identity tokens,
	// signed with a secret they share with the node.
	var secret [16]byte
	rand.Read(secret[:])
	tokenSecret := hex.EncodeToString(secret[:])
	node, err := server.New(server.Config{
		HTTPAddr:    cfg.httpAddr,
		GRPCAddr:    cfg.grpcAddr,
		TokenSecret: tokenSecret,
		// The pages come from the web servers, another origin than the node.
		AllowedOrigins: []string{"127.0.0.1:*", "localhost:*", "[::1]:*"},
		Logger:         log,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	wg.Go(func() { node.Run(nodeCtx) })

	sb, err := client.Dial(node.GRPCAddr(), client.WithLogger(log))
	if err != nil {
		return err
	}
	defer sb.Close()
	publicURL := "ws://" + node.HTTPAddr() + "/ws"
	fmt.Fprintf(out, "switchboard: %s (gRPC %s)\n", publicURL, node.GRPCAddr())

	var sites []string
	for i, addr := range cfg.webAddrs {
		ln, err := net.Listen("tcp", strings.TrimSpace(addr))
		if err != nil {
			return fmt.Errorf("failed to listen for web server %d: %w", i+1, err)
		}
		srv := &http.Server{
			Handler: site.New(site.Config{
				Name:        fmt.Sprintf("web-%d", i+1),
				Switchboard: sb,
				PublicURLs:  func() []string { return []string{publicURL} },
				TokenSecret: tokenSecret,
				Logger:      log,
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		wg.Go(func() { srv.Serve(ln) })
		defer srv.Close()
		url := "http://" + ln.Addr().String()
		sites = append(sites, url)
		fmt.Fprintf(out, "web: %s\n", url)
	}
	fmt.Fprintln(out, "Open the web: URLs in a browser; Ctrl-C stops the demo.")

	if cfg.quoteEvery > 0 {
		wg.Go(func() { triggerQuotes(ctx, sites, cfg.quoteEvery, log) })
	}
	<-ctx.Done()
	return nil
}

// triggerQuotes plays the external trigger: every interval it posts to the
// next web server's /api/quote, which fetches a quotation and emits it.
func triggerQuotes(ctx context.Context, sites []string, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		url := sites[i%len(sites)] + "/api/quote"
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(nil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Warn("quote trigger failed", "url", url, "err", err)
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			log.Warn("quote trigger failed", "url", url, "status", resp.Status)
		}
	}
}
