// Package web serves the browser library, client.js, with caching
// validators so that browsers revalidate it cheaply.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed client.js
var clientJS []byte

// ClientJS returns the browser library's source.
func ClientJS() []byte { return bytes.Clone(clientJS) }

var clientETag = func() string {
	sum := sha256.Sum256(clientJS)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

var loaded = time.Now()

// ClientHandler serves client.js with a JavaScript content type, an ETag
// and a short max-age, answering conditional requests with 304.
func ClientHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("ETag", clientETag)
		h.Set("Access-Control-Allow-Origin", "*")
		http.ServeContent(w, r, "client.js", loaded, bytes.NewReader(clientJS))
	})
}
