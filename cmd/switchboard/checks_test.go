package main

import (
	"bytes"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

// TestParseOrigins checks that a pattern that could never match an Origin
// is refused at start, naming the flag, the variable and the pattern.
func TestParseOrigins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   string
		want    []string // nil: refused
		wantErr string   // in the error
	}{
		{name: "hosts and origins", value: "example.com, *.example.org,,localhost:*,https://example.net,http*://a.test:3000",
			want: []string{"example.com", "*.example.org", "localhost:*", "https://example.net", "http*://a.test:3000"}},
		{name: "any", value: "*", want: []string{"*"}},
		{name: "malformed pattern", value: "[bad,localhost:3000", wantErr: `"[bad" is not a valid pattern`},
		{name: "bad escape", value: `example.com\`, wantErr: "is not a valid pattern"},
		{name: "path", value: "https://example.com/app", wantErr: `"https://example.com/app" has a path (/app)`},
		{name: "trailing slash", value: "https://example.com/", wantErr: "has a path (/)"},
		{name: "host with a path", value: "example.com/", wantErr: "has a path"},
		{name: "websocket scheme", value: "ws://localhost:3000", wantErr: "has the scheme ws"},
		{name: "no host", value: "https://", wantErr: "has no host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, from := range []string{"flag", "env"} {
				var args []string
				vars := map[string]string{}
				if from == "flag" {
					args = []string{"--allowed-origins=" + tc.value}
				} else {
					vars["SWITCHBOARD_ALLOWED_ORIGINS"] = tc.value
				}
				cfg, _, err := parseConfig(args, env(vars), io.Discard)
				if tc.want != nil {
					if err != nil || !reflect.DeepEqual(cfg.AllowedOrigins, tc.want) {
						t.Errorf("from %s: got %q, %v; want %q, nil", from, cfg.AllowedOrigins, err, tc.want)
					}
					continue
				}
				if err == nil {
					t.Fatalf("from %s: got %q; want an error", from, cfg.AllowedOrigins)
				}
				for _, want := range []string{"invalid --allowed-origins / SWITCHBOARD_ALLOWED_ORIGINS " + strconv.Quote(tc.value), tc.wantErr} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("from %s: error %q does not contain %q", from, err, want)
					}
				}
			}
		})
	}
}

// TestAPITokenOfSpaces checks that a token of only spaces, which would
// turn authentication off, is refused.
func TestAPITokenOfSpaces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{env: map[string]string{"SWITCHBOARD_API_TOKEN": "   "}},
		{env: map[string]string{"SWITCHBOARD_API_TOKEN": "\t"}},
		{args: []string{"--api-token= "}},
	} {
		_, _, err := parseConfig(tc.args, env(tc.env), io.Discard)
		want := "invalid --api-token / SWITCHBOARD_API_TOKEN: only spaces"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseConfig(%q, %q): got %v; want an error containing %q", tc.args, tc.env, err, want)
		}
	}
	if cfg, _, err := parseConfig(nil, env(map[string]string{"SWITCHBOARD_API_TOKEN": " t "}), io.Discard); err != nil || cfg.APIToken != "t" {
		t.Errorf("token %q: got %q, %v; want %q, nil", " t ", cfg.APIToken, err, "t")
	}
}

// TestMaxFrameBytesFitsASubscribe checks the smallest frame limit: a
// subscribe frame to the longest channel must fit.
func TestMaxFrameBytesFitsASubscribe(t *testing.T) {
	t.Parallel()
	largest := largestSubscribe()
	// Without its "last" field it is a frame the edge accepts, to a
	// channel of the longest length allowed.
	without := bytes.Replace(largest, []byte(`,"last":100`), nil, 1)
	in, err := frame.Decode(without)
	if err != nil || in.Op != frame.OpSubscribe || len(in.Channel) != frame.MaxChannelLen {
		t.Fatalf("Decode(%s): got %+v, %v; want a subscribe to a channel of %d bytes", without, in, err, frame.MaxChannelLen)
	}
	if len(without) < 2*frame.MaxChannelLen {
		t.Fatalf("largest subscribe: %d bytes; want the channel's %d bytes escaped to twice as many", len(without), frame.MaxChannelLen)
	}
	n := len(largest)
	t.Logf("smallest --max-frame-bytes: %d", n)
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{strconv.Itoa(n), true},
		{"4096", true},
		{strconv.Itoa(n - 1), false},
		{"64", false},
	} {
		cfg, _, err := parseConfig(nil, env(map[string]string{"SWITCHBOARD_MAX_FRAME_BYTES": tc.value}), io.Discard)
		if tc.ok {
			if err != nil || strconv.FormatInt(cfg.Limits.MaxFrameBytes, 10) != tc.value {
				t.Errorf("%s: got %d, %v; want %s, nil", tc.value, cfg.Limits.MaxFrameBytes, err, tc.value)
			}
			continue
		}
		want := "want at least " + strconv.Itoa(n) + " bytes"
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--max-frame-bytes / SWITCHBOARD_MAX_FRAME_BYTES") {
			t.Errorf("%s: got %v; want an error containing %q", tc.value, err, want)
		}
	}
}

func TestUnknownEnv(t *testing.T) {
	t.Parallel()
	environ := []string{
		"PATH=/usr/bin",
		"SWITCHBOARD_API_TOKN=x",
		"SWITCHBOARD_HTTP_ADDR=:8080",
		"SWITCHBOARD_ALLOWED_ORIGIN=example.com",
		"SWITCHBOARD_PUBLIC_URLS=ws://localhost:8080/ws",
		"SWITCHBOARD_ADDR=switchboard:9090",
		"SWITCHBOARD_BIN=/tmp/switchboard",
		"SWITCHBOARD_REQUIRE_TEST_TOOLS=1",
		"SWITCHBOARD_KEEP_ALIVE=5s",
		"switchboard_http_addr=:1",
		"SWITCHBOARD_MAXCONNS=10",
	}
	got := unknownEnv(environ)
	want := []unknownVar{
		{"SWITCHBOARD_ALLOWED_ORIGIN", "SWITCHBOARD_ALLOWED_ORIGINS"},
		{"SWITCHBOARD_API_TOKN", "SWITCHBOARD_API_TOKEN"},
		{"SWITCHBOARD_KEEP_ALIVE", "SWITCHBOARD_KEEPALIVE"},
		{"SWITCHBOARD_MAXCONNS", "SWITCHBOARD_MAX_CONNS"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unknownEnv:\ngot  %v\nwant %v", got, want)
	}
}

// TestOtherProgramsAreNotOptions keeps the list of variables read by
// other programs apart from the node's own.
func TestOtherProgramsAreNotOptions(t *testing.T) {
	t.Parallel()
	for _, name := range otherPrograms {
		if isOption(name) {
			t.Errorf("%s is an option and in otherPrograms", name)
		}
	}
}

// TestRunWarnsAboutUnknownEnv checks that the warning reaches the log at
// start, in the log's format.
func TestRunWarnsAboutUnknownEnv(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	vars := map[string]string{"SWITCHBOARD_HTTP_ADDR": "127.0.0.1:0", "SWITCHBOARD_GRPC_ADDR": "127.0.0.1:-1", "SWITCHBOARD_LOG_FORMAT": "json"}
	if got := run(nil, env(vars), &stderr, "SWITCHBOARD_API_TOKN=x", "SWITCHBOARD_HTTP_ADDR=127.0.0.1:0"); got != 1 {
		t.Fatalf("run = %d; want 1 (stderr: %s)", got, stderr.String())
	}
	want := `"level":"WARN","msg":"ignoring an unknown environment variable","var":"SWITCHBOARD_API_TOKN","did_you_mean":"SWITCHBOARD_API_TOKEN"`
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not contain %q", stderr.String(), want)
	}
	if strings.Count(stderr.String(), "unknown environment variable") != 1 {
		t.Errorf("stderr %q: want exactly one warning", stderr.String())
	}
}
