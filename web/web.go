// Package web serves the browser library: client.js, the same code as an
// ES module (client.mjs), and its TypeScript declarations (client.d.ts),
// each with caching validators so that browsers revalidate it cheaply.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

var (
	//go:embed client.js
	clientJS []byte
	//go:embed client.mjs
	clientMJS []byte
	//go:embed client.d.ts
	clientDTS []byte
)

// ClientJS returns the browser library's source.
func ClientJS() []byte { return bytes.Clone(clientJS) }

var loaded = time.Now()

var (
	clientAsset = newAsset("client.js", "text/javascript; charset=utf-8", clientJS)
	moduleAsset = newAsset("client.mjs", "text/javascript; charset=utf-8", clientMJS)
	typesAsset  = newAsset("client.d.ts", "application/typescript; charset=utf-8", clientDTS)
)

// ClientHandler serves client.js with a JavaScript content type, an ETag
// and a short max-age, answering conditional requests with 304.
func ClientHandler() http.Handler { return clientAsset }

// ModuleHandler serves client.mjs, the ES module that exports client.js's
// API (it imports ./client.js), as ClientHandler serves client.js.
func ModuleHandler() http.Handler { return moduleAsset }

// TypesHandler serves client.d.ts, the library's TypeScript declarations,
// as application/typescript, with an ETag and 304s as ClientHandler.
func TypesHandler() http.Handler { return typesAsset }

// asset is one embedded file, served with a strong ETag of its contents.
type asset struct {
	name, contentType, etag string
	body                    []byte
}

func newAsset(name, contentType string, body []byte) *asset {
	sum := sha256.Sum256(body)
	return &asset{name: name, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, body: body}
}

func (a *asset) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("ETag", a.etag)
	// Pages load these from other origins; a module script needs CORS.
	h.Set("Access-Control-Allow-Origin", "*")
	http.ServeContent(w, r, a.name, loaded, bytes.NewReader(a.body))
}
