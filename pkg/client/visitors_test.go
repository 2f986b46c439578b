package client_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func dialAs(t *testing.T, ctx context.Context, httpAddr, query string) (*websocket.Conn, int) {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws?"+query, nil)
	if err != nil {
		if resp == nil {
			t.Fatalf("websocket.Dial: %v", err)
		}
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, 0
}

// TestVisitors: a token minted by MintToken makes its browser the token's
// subject on the node; Online, WatchOnline and Presence count and list
// visitors.
func TestVisitors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const secret = "site-secret"
	n := startNode(t, server.Config{TokenSecret: secret})
	c := dial(t, n.GRPCAddr())

	tok, err := client.MintToken(secret, "user-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := client.MintToken("not-the-secret", "user-1", time.Minute)
	if _, status := dialAs(t, ctx, n.HTTPAddr(), "token="+wrong); status != http.StatusUnauthorized {
		t.Fatalf("a token of another secret: got status %d; want 401", status)
	}
	values := make(chan client.Online, 100)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go c.WatchOnline(wctx, "", func(o client.Online) { values <- o })

	dialAs(t, ctx, n.HTTPAddr(), "token="+tok)
	dialAs(t, ctx, n.HTTPAddr(), "token="+tok)
	dialAs(t, ctx, n.HTTPAddr(), "visitor=user-1") // another visitor: an anonymous id is not the token's subject
	for o := (client.Online{}); o != (client.Online{Connections: 3, Visitors: 2}); {
		select {
		case o = <-values:
		case <-ctx.Done():
			t.Fatalf("WatchOnline: last %+v; want 3 connections, 2 visitors", o)
		}
	}
	if o, err := c.Online(ctx, ""); err != nil || o != (client.Online{Connections: 3, Visitors: 2}) {
		t.Errorf("Online: got %+v, %v; want 3 connections, 2 visitors", o, err)
	}
	page, next, err := c.Presence(ctx, "", 1, "")
	if err != nil || len(page) != 1 || page[0] != (client.Visitor{ID: "user-1", Anonymous: true, Connections: 1}) || next == "" {
		t.Fatalf("Presence, first page: got %v, %q, %v; want the anonymous user-1 and a next page", page, next, err)
	}
	page, next, err = c.Presence(ctx, "", 1, next)
	if err != nil || len(page) != 1 || page[0] != (client.Visitor{ID: "user-1", Connections: 2}) || next != "" {
		t.Fatalf("Presence, second page: got %v, %q, %v; want the token's user-1 with 2 connections, the last page", page, next, err)
	}
	if _, err := client.MintToken("", "u", time.Minute); err == nil {
		t.Error("MintToken with no secret: got nil; want an error")
	}
}
