package wsedge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
)

var testSecret = []byte("the-site-and-the-nodes-share-this")

func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialQuery tries an upgrade with query and returns the status and body
// of a refusal, or 0 and the open connection.
func (e *edge) dialQuery(t *testing.T, query string) (int, string, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, e.url+"?"+query, &websocket.DialOptions{HTTPClient: e.srv.Client()})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return 0, "", ws
	}
	if resp == nil {
		t.Fatalf("Dial: got %v without a response", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), nil
}

func TestIdentityTokens(t *testing.T) {
	t.Parallel()
	exp := time.Now().Add(time.Minute).Unix()
	valid := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp})
	tests := []struct {
		name    string
		require bool
		query   string
		status  int
		reason  string
	}{
		{"valid", false, "token=" + valid, 0, ""},
		{"valid when required", true, "token=" + valid, 0, ""},
		{"expired", false, "token=" + signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), 401, "identity token expired"},
		{"wrong secret", false, "token=" + signed(t, jwt.SigningMethodHS256, []byte("another secret"), jwt.MapClaims{"sub": "alice", "exp": exp}), 401, "not signed with HS256 and this node's secret"},
		{"alg none", false, "token=" + signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp}), 401, "not signed with HS256"},
		{"garbage", false, "token=garbage", 401, "invalid identity token: not a JWT"},
		{"empty", false, "token=", 401, "invalid identity token: not a JWT"},
		{"no exp", false, "token=" + signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"}), 401, `"exp" is required`},
		{"missing when required", true, "", 401, "an identity token is required"},
		{"anonymous when required", true, "visitor=abc", 401, "an identity token is required"},
		{"anonymous", false, "visitor=abc", 0, ""},
		{"bad anonymous id", false, "visitor=a.b", 400, `"visitor" may hold only letters, digits, '-' and '_'`},
		{"two tokens", false, "token=" + valid + "&token=" + valid, 400, `"token" is given more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, Config{Identity: identity.NewVerifier(testSecret), RequireToken: tt.require})
			status, body, _ := e.dialQuery(t, tt.query)
			if status != tt.status || !strings.Contains(body, tt.reason) {
				t.Fatalf("dial ?%.40s: got %d %q; want %d saying %q", tt.query, status, body, tt.status, tt.reason)
			}
			want := hub.Online{}
			if status == 0 {
				want = hub.Online{Connections: 1, Visitors: 1}
			}
			eventually(t, func() (bool, string) {
				got := e.hub.Online("")
				return got == want, fmt.Sprintf("counts %+v; want %+v", got, want)
			})
			limit := map[int]string{401: LimitIdentityToken, 400: LimitInvalidParameter}[status]
			if limit != "" && e.h.Rejections()[limit] != 1 {
				t.Errorf("Rejections()[%s]: got %d; want 1", limit, e.h.Rejections()[limit])
			}
		})
	}
}

// TestNoSecretRefusesTokens: a node without a secret takes no token, even
// one that would be valid elsewhere.
func TestNoSecretRefusesTokens(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{})
	tok := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Minute).Unix()})
	if status, body, _ := e.dialQuery(t, "token="+tok); status != http.StatusUnauthorized || !strings.Contains(body, "no token secret") {
		t.Fatalf("dial with a token: got %d %q; want 401 saying the node takes no token", status, body)
	}
	if status, _, _ := e.dialQuery(t, "visitor=v1"); status != 0 {
		t.Fatalf("dial anonymously: got %d; want an upgrade", status)
	}
}

// TestVisitorsThroughTheEdge: the token's alice and the anonymous alice
// are two visitors; two tabs of one visitor are one.
func TestVisitorsThroughTheEdge(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{Identity: identity.NewVerifier(testSecret)})
	tok := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Minute).Unix()})
	for _, q := range []string{"token=" + tok, "token=" + tok + "&visitor=alice", "visitor=alice", "visitor=alice", ""} {
		if status, body, _ := e.dialQuery(t, q); status != 0 {
			t.Fatalf("dial ?%.30s: got %d %q; want an upgrade", q, status, body)
		}
	}
	eventually(t, func() (bool, string) {
		got := e.hub.Online("")
		return got == hub.Online{Connections: 5, Visitors: 3}, fmt.Sprintf("counts %+v; want 5 connections, 3 visitors", got)
	})
	page, _ := e.hub.Presence("", "", 10)
	if len(page) != 2 || page[0] != (hub.Visit{Visitor: identity.AnonymousKey("alice"), Connections: 2}) ||
		page[1] != (hub.Visit{Visitor: identity.TokenKey("alice"), Connections: 2}) {
		t.Errorf("presence: got %v; want the anonymous and the token's alice, 2 connections each", page)
	}
}

func TestConnectionsPerVisitor(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{MaxConnsPerVisitor: 2})
	var open []*websocket.Conn
	for i, want := range []int{0, 0, 429} {
		status, body, ws := e.dialQuery(t, "visitor=tabby")
		if status != want {
			t.Fatalf("dial %d: got %d %q; want %d", i, status, body, want)
		}
		if ws != nil {
			open = append(open, ws)
		}
	}
	if status, _, _ := e.dialQuery(t, "visitor=other"); status != 0 {
		t.Fatalf("another visitor: got %d; want an upgrade", status)
	}
	if got := e.h.Rejections()[LimitConnectionsPerVisitor]; got != 1 {
		t.Errorf("Rejections()[%s]: got %d; want 1", LimitConnectionsPerVisitor, got)
	}
	// A closed tab gives its slot back.
	open[0].Close(websocket.StatusNormalClosure, "")
	eventually(t, func() (bool, string) {
		status, _, _ := e.dialQuery(t, "visitor=tabby")
		return status == 0, "the slot is not given back"
	})
}
