package web

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlers checks each file the node serves beside /ws: its content
// type, its bytes, CORS for pages on other origins, and an ETag that
// conditional requests are answered with 304 for.
func TestHandlers(t *testing.T) {
	t.Parallel()
	etags := map[string]string{}
	for _, tc := range []struct {
		path, contentType string
		h                 http.Handler
		body              []byte
	}{
		{"/client.js", "text/javascript; charset=utf-8", ClientHandler(), clientJS},
		{"/client.mjs", "text/javascript; charset=utf-8", ModuleHandler(), clientMJS},
		{"/client.d.ts", "application/typescript; charset=utf-8", TypesHandler(), clientDTS},
	} {
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: got %d; want 200", tc.path, rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); got != tc.contentType {
			t.Errorf("%s Content-Type: got %q; want %q", tc.path, got, tc.contentType)
		}
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("%s Access-Control-Allow-Origin: got %q; want *", tc.path, got)
		}
		if len(tc.body) == 0 || rec.Body.String() != string(tc.body) {
			t.Errorf("%s body: got %d bytes; want the %d bytes of the file", tc.path, rec.Body.Len(), len(tc.body))
		}
		etag := rec.Header().Get("ETag")
		if etag == "" || etag[0] != '"' {
			t.Fatalf("%s ETag: got %q; want a quoted strong validator", tc.path, etag)
		}
		if other, ok := etags[etag]; ok {
			t.Errorf("%s has the ETag of %s: %s", tc.path, other, etag)
		}
		etags[etag] = tc.path

		for _, c := range []struct {
			name, ifNoneMatch string
			want              int
		}{
			{"same ETag", etag, http.StatusNotModified},
			{"other ETag", `"stale"`, http.StatusOK},
			{"any", "*", http.StatusNotModified},
		} {
			t.Run(tc.path[1:]+"/"+c.name, func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, tc.path, nil)
				req.Header.Set("If-None-Match", c.ifNoneMatch)
				rec := httptest.NewRecorder()
				tc.h.ServeHTTP(rec, req)
				if rec.Code != c.want {
					t.Errorf("If-None-Match %s: got %d; want %d", c.ifNoneMatch, rec.Code, c.want)
				}
				if c.want == http.StatusNotModified && rec.Body.Len() != 0 {
					t.Errorf("304 carried %d bytes of body", rec.Body.Len())
				}
			})
		}
	}
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
	n := gzipped(clientJS)
	t.Logf("client.js: %d bytes, %d gzipped; client.mjs: %d, %d; client.d.ts: %d, %d",
		len(clientJS), n, len(clientMJS), gzipped(clientMJS), len(clientDTS), gzipped(clientDTS))
	if n > 4096 {
		t.Errorf("client.js gzipped: got %d bytes; want at most 4096", n)
	}
}

func gzipped(b []byte) int {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Len()
}
