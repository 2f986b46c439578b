package site

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startNode runs a real Switchboard node on loopback.
func startNode(t *testing.T, token string) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, server.Config{APIToken: token, Logger: quiet})
}

// startSite serves a site that talks to the Switchboard at addr.
func startSite(t *testing.T, addr, token string, cfg Config) *httptest.Server {
	t.Helper()
	sb, err := client.Dial(addr, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	cfg.Switchboard = sb
	cfg.Logger = quiet
	if cfg.PublicURLs == nil {
		cfg.PublicURLs = func() []string { return []string{"ws://127.0.0.1:1/ws"} }
	}
	web := httptest.NewServer(New(cfg))
	t.Cleanup(web.Close)
	return web
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestPostMessageReachesBrowser(t *testing.T) {
	t.Parallel()
	node := startNode(t, "")
	web := startSite(t, node.GRPCAddr(), "", Config{})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+node.HTTPAddr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for range 2 { // the welcome and the count
		if _, _, err := ws.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}

	code, out := do(t, http.MethodPost, web.URL+"/api/messages", `{"text":"  hello <b>world</b>  "}`)
	if code != http.StatusOK || out["recipients"] != float64(1) || out["id"] == "" || out["offset"] != float64(1) {
		t.Fatalf("POST /api/messages: got %d %v; want 200 with 1 recipient at offset 1", code, out)
	}
	_, p, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Type, ID, Event string
		Data            map[string]string
	}
	json.Unmarshal(p, &f)
	if f.Type != "message" || f.Event != "ShowMessage" || f.ID != out["id"] || f.Data["text"] != "hello <b>world</b>" {
		t.Errorf("frame: got %s; want a ShowMessage with id %v and the trimmed text", p, out["id"])
	}

	code, out = do(t, http.MethodGet, web.URL+"/api/online", "")
	if code != http.StatusOK || out["connections"] != float64(1) {
		t.Errorf("GET /api/online: got %d %v; want 200 with 1", code, out)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	node := startNode(t, "")
	web := startSite(t, node.GRPCAddr(), "", Config{})
	for _, tc := range []struct{ name, body string }{
		{"not JSON", `text=hi`},
		{"no text", `{}`},
		{"blank text", `{"text":"   "}`},
		{"text not a string", `{"text":42}`},
		{"too long", `{"text":"` + strings.Repeat("x", MaxTextLen+1) + `"}`},
	} {
		code, out := do(t, http.MethodPost, web.URL+"/api/messages", tc.body)
		if code != http.StatusBadRequest || out["error"] == "" {
			t.Errorf("%s: got %d %v; want 400 with an error", tc.name, code, out)
		}
	}
	if code, _ := do(t, http.MethodPost, web.URL+"/api/messages", `{"text":"`+strings.Repeat("é", MaxTextLen)+`"}`); code != http.StatusOK {
		t.Errorf("%d two-byte characters: got %d; want 200 (the limit counts characters)", MaxTextLen, code)
	}
}

func TestSwitchboardErrors(t *testing.T) {
	t.Parallel()
	t.Run("wrong token is 502", func(t *testing.T) {
		t.Parallel()
		node := startNode(t, "right")
		web := startSite(t, node.GRPCAddr(), "wrong", Config{})
		code, out := do(t, http.MethodPost, web.URL+"/api/messages", `{"text":"hi"}`)
		if code != http.StatusBadGateway || !strings.Contains(out["error"].(string), "token") {
			t.Errorf("got %d %v; want 502 naming the token", code, out)
		}
	})
	t.Run("unreachable socket server is 503, not a hang", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		web := startSite(t, addr, "", Config{Timeout: 500 * time.Millisecond})
		start := time.Now()
		code, out := do(t, http.MethodPost, web.URL+"/api/messages", `{"text":"hi"}`)
		if code != http.StatusServiceUnavailable {
			t.Errorf("got %d %v; want 503", code, out)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("answered after %v; want about the 500ms timeout", took)
		}
	})
}

func TestQuotes(t *testing.T) {
	t.Parallel()
	node := startNode(t, "")
	var status atomic.Int32
	status.Store(http.StatusOK)
	quotesSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, `{"text":"Stay hungry.","author":"Whole Earth Catalog"}`)
	}))
	defer quotesSrv.Close()
	var quotesURL atomic.Value
	quotesURL.Store("")
	web := startSite(t, node.GRPCAddr(), "", Config{QuotesURL: func() string { return quotesURL.Load().(string) }})

	code, out := do(t, http.MethodPost, web.URL+"/api/quote", "")
	if code != http.StatusOK || out["text"] == "" || out["author"] == "" {
		t.Fatalf("embedded quote: got %d %v; want 200 with text and author", code, out)
	}
	quotesURL.Store(quotesSrv.URL)
	code, out = do(t, http.MethodPost, web.URL+"/api/quote", "")
	if code != http.StatusOK || out["text"] != "Stay hungry." {
		t.Errorf("QUOTES_URL quote: got %d %v; want 200 with its text", code, out)
	}
	status.Store(http.StatusInternalServerError)
	if code, out = do(t, http.MethodPost, web.URL+"/api/quote", ""); code != http.StatusBadGateway {
		t.Errorf("failing QUOTES_URL: got %d %v; want 502", code, out)
	}
}

func TestPageLearnsURLsAtRequestTime(t *testing.T) {
	t.Parallel()
	node := startNode(t, "")
	var urls atomic.Value
	urls.Store([]string{"wss://a.example.com/ws"})
	web := startSite(t, node.GRPCAddr(), "", Config{PublicURLs: func() []string { return urls.Load().([]string) }})

	get := func(path string) string {
		resp, err := http.Get(web.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := get("/"); !strings.Contains(body, `https://a.example.com/client.js`) || !strings.Contains(body, `wss://a.example.com/ws`) {
		t.Errorf("page does not point at a.example.com:\n%s", body)
	}
	urls.Store([]string{"ws://b.example.com:8080/ws", "ws://c.example.com/ws</script><script>alert(1)//"})
	body := get("/")
	if !strings.Contains(body, `http://b.example.com:8080/client.js`) {
		t.Errorf("page did not follow the new URLs:\n%s", body)
	}
	if strings.Contains(body, "</script><script>alert(1)") {
		t.Errorf("page embeds a URL unescaped:\n%s", body)
	}
	var cfg pageConfig
	if err := json.Unmarshal([]byte(get("/config.json")), &cfg); err != nil || len(cfg.URLs) != 2 || cfg.URLs[0] != "ws://b.example.com:8080/ws" {
		t.Errorf("/config.json: got %+v, %v; want the two new URLs", cfg, err)
	}
}
