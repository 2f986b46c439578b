// Package site is the example web server: a page that shows the live
// online count and system messages, and an API that turns a POST into a
// Switchboard emit. Messages are produced exactly where they were before
// Switchboard; only the delivery moved.
package site

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rt/switchboard/pkg/client"
)

// MaxTextLen is the longest message text, in characters, the API accepts.
const MaxTextLen = 2000

// Config configures a Site. Switchboard and PublicURLs are required.
type Config struct {
	// Name labels the page, so a demo can tell its web servers apart.
	Name string
	// Switchboard is the client the site emits and counts through.
	Switchboard *client.Client
	// PublicURLs returns the socket server URLs browsers connect to. It is
	// called on every page request, so a changed environment takes effect
	// without a restart.
	PublicURLs func() []string
	// QuotesURL returns the URL quotations are fetched from; empty means
	// the embedded list. Called on every quote trigger.
	QuotesURL func() string
	// HTTPClient fetches quotations. Default: a client with a 3 s timeout.
	HTTPClient *http.Client
	// Timeout bounds each call to Switchboard. Default: 5s.
	Timeout time.Duration
	// TokenSecret signs the identity tokens the site gives its browsers
	// (GET /api/token), Switchboard's SWITCHBOARD_TOKEN_SECRET: each
	// browser counts as the visitor its cookie names. Default: none, the
	// browsers count by the anonymous id client.js keeps.
	TokenSecret string
	// Logger receives the site's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Site is the example web server's handler.
type Site struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the site's handler.
func New(cfg Config) *Site {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 3 * time.Second}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QuotesURL == nil {
		cfg.QuotesURL = func() string { return "" }
	}
	s := &Site{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /config.json", s.config)
	s.mux.HandleFunc("POST /api/messages", s.postMessage)
	s.mux.HandleFunc("POST /api/quote", s.postQuote)
	s.mux.HandleFunc("GET /api/online", s.online)
	s.mux.HandleFunc("GET /api/token", s.token)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return s
}

// ServeHTTP serves the page and the API.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// pageConfig is what the page learns from its web server at request time.
type pageConfig struct {
	Name     string   `json:"name"`
	URLs     []string `json:"urls"`
	ClientJS string   `json:"clientJS"`
	Token    bool     `json:"token"` // the page asks /api/token for its identity
}

func (s *Site) pageConfig() (pageConfig, error) {
	urls := s.cfg.PublicURLs()
	if len(urls) == 0 {
		return pageConfig{}, errors.New("no socket server URL configured")
	}
	u, err := url.Parse(urls[0])
	if err != nil {
		return pageConfig{}, fmt.Errorf("invalid socket server URL %q: %w", urls[0], err)
	}
	scheme := "http"
	if u.Scheme == "wss" || u.Scheme == "https" {
		scheme = "https"
	}
	return pageConfig{Name: s.cfg.Name, URLs: urls, ClientJS: scheme + "://" + u.Host + "/client.js", Token: s.cfg.TokenSecret != ""}, nil
}

func (s *Site) page(w http.ResponseWriter, _ *http.Request) {
	cfg, err := s.pageConfig()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTemplate.Execute(w, cfg); err != nil {
		s.cfg.Logger.Error("failed to render page", "err", err)
	}
}

func (s *Site) config(w http.ResponseWriter, _ *http.Request) {
	cfg, err := s.pageConfig()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

type messageRequest struct {
	Text string `json:"text"`
}

type emitResponse struct {
	ID         string `json:"id"`
	Offset     uint64 `json:"offset"`
	Recipients int64  `json:"recipients"`
	Text       string `json:"text,omitempty"`
	Author     string `json:"author,omitempty"`
}

// postMessage turns {"text": "..."} into a ShowMessage emit to every page.
func (s *Site) postMessage(w http.ResponseWriter, r *http.Request) {
	var req messageRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "body must be JSON like {\"text\": \"...\"}")
		return
	}
	req.Text = strings.TrimSpace(req.Text)
	switch {
	case req.Text == "":
		httpError(w, http.StatusBadRequest, "text is required")
		return
	case utf8.RuneCountInString(req.Text) > MaxTextLen:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("text is longer than %d characters", MaxTextLen))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	res, err := s.cfg.Switchboard.Emit(ctx, "ShowMessage", map[string]string{"text": req.Text})
	if err != nil {
		s.switchboardError(w, "emit", err)
		return
	}
	writeJSON(w, http.StatusOK, emitResponse{ID: res.ID, Offset: res.Offset, Recipients: res.Recipients})
}

// postQuote is the external trigger: the web server fetches a quotation
// itself and emits it to the "quotes" channel.
func (s *Site) postQuote(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	q, err := s.fetchQuote(ctx)
	if err != nil {
		s.cfg.Logger.Warn("failed to fetch a quotation", "err", err)
		httpError(w, http.StatusBadGateway, "failed to fetch a quotation: "+err.Error())
		return
	}
	res, err := s.cfg.Switchboard.Emit(ctx, "Quote", q, client.ToChannel("quotes"))
	if err != nil {
		s.switchboardError(w, "emit", err)
		return
	}
	writeJSON(w, http.StatusOK, emitResponse{ID: res.ID, Offset: res.Offset, Recipients: res.Recipients, Text: q.Text, Author: q.Author})
}

func (s *Site) online(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	o, err := s.cfg.Switchboard.Online(ctx, r.URL.Query().Get("channel"))
	if err != nil {
		s.switchboardError(w, "count", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"connections": o.Connections, "visitors": o.Visitors})
}

// visitorCookie holds the id the site knows a browser by.
const visitorCookie = "visitor"

// token answers an identity token for the browser's visitor, the one its
// cookie names (a new one, with its cookie, for a browser the site does
// not know yet). A real site would name its signed-in user instead.
func (s *Site) token(w http.ResponseWriter, r *http.Request) {
	if s.cfg.TokenSecret == "" {
		httpError(w, http.StatusNotFound, "this site gives no identity tokens")
		return
	}
	id := ""
	if c, err := r.Cookie(visitorCookie); err == nil && validVisitor(c.Value) {
		id = c.Value
	} else {
		var b [12]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		http.SetCookie(w, &http.Cookie{Name: visitorCookie, Value: id, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	tok, err := client.MintToken(s.cfg.TokenSecret, "visitor-"+id, 5*time.Minute)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, tok)
}

func validVisitor(id string) bool {
	if len(id) != 24 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// switchboardError answers a failed call to Switchboard with an HTTP error
// that says whose fault it is.
func (s *Site) switchboardError(w http.ResponseWriter, what string, err error) {
	st := status.Convert(err)
	s.cfg.Logger.Warn("switchboard call failed", "call", what, "code", st.Code(), "err", st.Message())
	switch st.Code() {
	case codes.InvalidArgument:
		httpError(w, http.StatusBadRequest, st.Message())
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		httpError(w, http.StatusServiceUnavailable, "socket server unavailable, try again: "+st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		httpError(w, http.StatusBadGateway, "the web server's Switchboard token was refused")
	default:
		httpError(w, http.StatusBadGateway, "socket server error: "+st.Message())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
