package site

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/pkg/identity"
)

// TestToken: the site names each browser by a cookie and vouches for it
// with a token the node's secret verifies; the same browser gets the same
// subject again, another browser another.
func TestToken(t *testing.T) {
	node := startNode(t, "")
	const secret = "demo-secret"
	web := startSite(t, node.GRPCAddr(), "", Config{TokenSecret: secret})
	v := identity.NewVerifier([]byte(secret))
	subOf := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get(web.URL + "/api/token")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		sub, err := v.Verify(string(b))
		if resp.StatusCode != http.StatusOK || err != nil || !strings.HasPrefix(sub, "visitor-") {
			t.Fatalf("GET /api/token: got %s %q (%v); want a token for a visitor", resp.Status, b, err)
		}
		return sub
	}
	jar1, _ := cookiejar.New(nil)
	jar2, _ := cookiejar.New(nil)
	one, other := &http.Client{Jar: jar1}, &http.Client{Jar: jar2}
	first := subOf(one)
	if again := subOf(one); again != first {
		t.Errorf("the same browser: got %q, then %q; want one subject", first, again)
	}
	if second := subOf(other); second == first {
		t.Errorf("another browser got the first one's subject %q", first)
	}

	plain := startSite(t, node.GRPCAddr(), "", Config{})
	if code, _ := do(t, http.MethodGet, plain.URL+"/api/token", ""); code != http.StatusNotFound {
		t.Errorf("GET /api/token without a secret: got %d; want 404", code)
	}
}
