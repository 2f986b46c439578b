package web

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClientHandler(t *testing.T) {
	t.Parallel()
	h := ClientHandler()

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/client.js", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET: got %d; want 200", rec.Code)
	}
	if got, want := rec.Header().Get("Content-Type"), "text/javascript; charset=utf-8"; got != want {
		t.Errorf("Content-Type: got %q; want %q", got, want)
	}
	if got := rec.Body.String(); got != string(clientJS) {
		t.Errorf("body: got %d bytes; want the %d bytes of client.js", len(got), len(clientJS))
	}
	etag := rec.Header().Get("ETag")
	if etag == "" || etag[0] != '"' {
		t.Fatalf("ETag: got %q; want a quoted strong validator", etag)
	}

	for _, tc := range []struct {
		name, ifNoneMatch string
		want              int
	}{
		{"same ETag", etag, http.StatusNotModified},
		{"other ETag", `"stale"`, http.StatusOK},
		{"any", "*", http.StatusNotModified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/client.js", nil)
			req.Header.Set("If-None-Match", tc.ifNoneMatch)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("If-None-Match %s: got %d; want %d", tc.ifNoneMatch, rec.Code, tc.want)
			}
			if tc.want == http.StatusNotModified && rec.Body.Len() != 0 {
				t.Errorf("304 carried %d bytes of body", rec.Body.Len())
			}
		})
	}
	t.Logf("client.js: %d bytes", len(clientJS))
}

func TestClientJSIsACopy(t *testing.T) {
	t.Parallel()
	b := ClientJS()
	b[0] = 'X'
	if ClientJS()[0] == 'X' {
		t.Error("ClientJS returned the embedded bytes themselves; a caller could corrupt what is served")
	}
}

// TestClientIsSmall keeps client.js within what a page should pay for a
// socket library: 4 KiB gzipped.
func TestClientIsSmall(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.Write(clientJS)
	zw.Close()
	t.Logf("client.js: %d bytes, %d gzipped", len(clientJS), b.Len())
	if b.Len() > 4096 {
		t.Errorf("client.js gzipped: got %d bytes; want at most 4096", b.Len())
	}
}
