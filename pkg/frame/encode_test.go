package frame_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

// sanitized is what a JSON encoder must turn s into: every byte that is not
// part of valid UTF-8 becomes U+FFFD, one per byte, as encoding/json does.
func sanitized(s string) string {
	return string([]rune(s))
}

// checkWireSafe fails if out, an encoded frame, is not valid JSON or holds a
// raw control character, U+2028 or U+2029, any of which would break a
// browser's JSON.parse or a JavaScript consumer.
func checkWireSafe(t *testing.T, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("json.Valid(%q) = false; want true", out)
	}
	if !utf8.Valid(out) {
		t.Errorf("utf8.Valid(%q) = false; want true", out)
	}
	for i, b := range out {
		if b < 0x20 {
			t.Errorf("output %q holds raw control byte %#x at %d; want it escaped", out, b, i)
		}
	}
	for _, r := range []string{"\u2028", "\u2029"} {
		if bytes.Contains(out, []byte(r)) {
			t.Errorf("output %q holds a raw %U; want it escaped", out, []rune(r)[0])
		}
	}
}

func TestAppendCount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n, v int64
	}{
		{name: "zero", n: 0, v: 0},
		{name: "one", n: 1, v: 1},
		{name: "tabs", n: 3, v: 1},
		{name: "large", n: 1234567890123, v: 123456789012},
		{name: "max", n: math.MaxInt64, v: math.MaxInt64},
		{name: "negative", n: -1, v: -2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := frame.AppendCount(nil, tt.n, tt.v)
			checkWireSafe(t, out)
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.DisallowUnknownFields()
			var got struct {
				Type        string `json:"type"`
				Connections int64  `json:"connections"`
				Visitors    int64  `json:"visitors"`
			}
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("decode %q: got %v; want nil", out, err)
			}
			if got.Type != "count" {
				t.Errorf("type: got %q; want %q", got.Type, "count")
			}
			if got.Connections != tt.n {
				t.Errorf("connections: got %d; want %d", got.Connections, tt.n)
			}
			if got.Visitors != tt.v {
				t.Errorf("visitors: got %d; want %d", got.Visitors, tt.v)
			}
		})
	}
}

func TestAppendCountAppends(t *testing.T) {
	t.Parallel()
	prefix := []byte("prefix:")
	out := frame.AppendCount(prefix, 7, 2)
	if want := `prefix:{"type":"count","connections":7,"visitors":2}`; string(out) != want {
		t.Errorf("got %q; want %q", out, want)
	}
}

type message struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Offset  uint64          `json:"offset"`
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

func TestAppendMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		id, event, channel string
		data               string
		wantData           string
	}{
		{name: "plain", id: "n-1", event: "ShowMessage", channel: "", data: `{"text":"hi"}`, wantData: `{"text":"hi"}`},
		{name: "channel", id: "n-2", event: "Quote", channel: "quotes", data: `[1,2,3]`, wantData: `[1,2,3]`},
		{name: "empty data is null", id: "n-3", event: "Ping", data: ``, wantData: `null`},
		{name: "string data", id: "n-4", event: "E", data: `"x"`, wantData: `"x"`},
		{name: "number data", id: "n-5", event: "E", data: `-1.5e3`, wantData: `-1.5e3`},
		{name: "quotes and backslashes", id: `a"b`, event: `c\d`, channel: `"\"`, data: `true`, wantData: `true`},
		{name: "control characters", id: "\x00\x01\x1f", event: "tab\tnew\nline\rcr\b\f", channel: "\x7f", data: `null`, wantData: `null`},
		{name: "invalid UTF-8", id: "a\xffb", event: "\xc3", channel: "\xed\xa0\x80x", data: `1`, wantData: `1`},
		{name: "line and paragraph separators", id: "\u2028", event: "a\u2029b", channel: "\u2028\u2029", data: `{}`, wantData: `{}`},
		{name: "html characters", id: "<script>", event: "a&b", channel: ">", data: `0`, wantData: `0`},
		{name: "non-ASCII", id: "ü", event: "日本語", channel: "😀", data: `"ü"`, wantData: `"ü"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := frame.AppendMessage(nil, tt.id, 1<<63+7, tt.event, tt.channel, []byte(tt.data))
			checkWireSafe(t, out)
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.DisallowUnknownFields()
			var got message
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("decode %q: got %v; want nil", out, err)
			}
			if got.Type != "message" {
				t.Errorf("type: got %q; want %q", got.Type, "message")
			}
			if want := sanitized(tt.id); got.ID != want {
				t.Errorf("id: got %q; want %q", got.ID, want)
			}
			if got.Offset != 1<<63+7 {
				t.Errorf("offset: got %d; want %d", got.Offset, uint64(1<<63+7))
			}
			if want := sanitized(tt.event); got.Event != want {
				t.Errorf("event: got %q; want %q", got.Event, want)
			}
			if want := sanitized(tt.channel); got.Channel != want {
				t.Errorf("channel: got %q; want %q", got.Channel, want)
			}
			if string(got.Data) != tt.wantData {
				t.Errorf("data: got %s; want %s", got.Data, tt.wantData)
			}
		})
	}
}

func TestAppendMessageAppends(t *testing.T) {
	t.Parallel()
	a := frame.AppendMessage(nil, "1", 1, "E", "", []byte(`1`))
	b := frame.AppendMessage(a, "2", 2, "F", "c", nil)
	if !bytes.Equal(b[:len(a)], a) {
		t.Fatalf("prefix: got %q; want %q", b[:len(a)], a)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for i, want := range []message{
		{Type: "message", ID: "1", Offset: 1, Event: "E", Data: json.RawMessage(`1`)},
		{Type: "message", ID: "2", Offset: 2, Event: "F", Channel: "c", Data: json.RawMessage(`null`)},
	} {
		var got message
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("frame %d: got %v; want nil", i, err)
		}
		if got.ID != want.ID || got.Offset != want.Offset || got.Event != want.Event || got.Channel != want.Channel || string(got.Data) != string(want.Data) {
			t.Errorf("frame %d: got %+v; want %+v", i, got, want)
		}
	}
}

func TestAppendWelcome(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		epoch  string
		offset uint64
		r      frame.Recovery
		want   string
	}{
		{"e1", 0, frame.NoResume, `{"type":"welcome","epoch":"e1","offset":0}`},
		{"e1", 42, frame.Recovered, `{"type":"welcome","epoch":"e1","offset":42,"recovered":true}`},
		{"e\"2", 1<<64 - 1, frame.NotRecovered, `{"type":"welcome","epoch":"e\"2","offset":18446744073709551615,"recovered":false}`},
	} {
		out := frame.AppendWelcome(nil, tt.epoch, tt.offset, tt.r)
		if string(out) != tt.want {
			t.Errorf("AppendWelcome(%q, %d, %d): got %s; want %s", tt.epoch, tt.offset, tt.r, out, tt.want)
		}
		if !json.Valid(out) {
			t.Errorf("AppendWelcome(%q, %d, %d): %s is not valid JSON", tt.epoch, tt.offset, tt.r, out)
		}
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    string
	}{
		{name: "empty", s: ""},
		{name: "ascii", s: "hello, world"},
		{name: "quote", s: `say "hi"`},
		{name: "backslash", s: `C:\path\`},
		{name: "slash", s: "a/b</script>"},
		{name: "html", s: "<a href='x'>&amp;</a>"},
		{name: "whitespace escapes", s: "\n\r\t\b\f"},
		{name: "nul", s: "a\x00b"},
		{name: "del", s: "\x7f"},
		{name: "two-byte", s: "é ß ñ"},
		{name: "three-byte", s: "日本語 €"},
		{name: "four-byte", s: "😀 𝄞"},
		{name: "separators", s: "a\u2028b\u2029c"},
		{name: "replacement char itself", s: "\uFFFD"},
		{name: "BOM", s: "\uFEFF"},
		{name: "max rune", s: "\U0010FFFF"},
	}
	var all strings.Builder
	for b := range 0x80 {
		all.WriteByte(byte(b))
	}
	tests = append(tests, struct {
		name string
		s    string
	}{name: "every ASCII byte", s: all.String()})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := frame.AppendString(nil, tt.s)
			checkWireSafe(t, out)
			var got string
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("unmarshal %q: got %v; want nil", out, err)
			}
			if got != tt.s {
				t.Errorf("round trip: got %q; want %q", got, tt.s)
			}
			ref, err := json.Marshal(tt.s)
			if err != nil {
				t.Fatal(err)
			}
			var want string
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("against encoding/json: got %q; want %q", got, want)
			}
		})
	}
}

func TestAppendStringInvalidUTF8(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    string
		want string
	}{
		{name: "lone continuation", s: "\x80", want: "\uFFFD"},
		{name: "0xff", s: "a\xffb", want: "a\uFFFDb"},
		{name: "truncated two-byte", s: "\xc3", want: "\uFFFD"},
		{name: "truncated three-byte", s: "\xe6\x97", want: "\uFFFD\uFFFD"},
		{name: "surrogate", s: "\xed\xa0\x80", want: "\uFFFD\uFFFD\uFFFD"},
		{name: "overlong", s: "\xc0\xaf", want: "\uFFFD\uFFFD"},
		{name: "mixed", s: "ok\xffé\xfe", want: "ok\uFFFDé\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := frame.AppendString(nil, tt.s)
			checkWireSafe(t, out)
			var got string
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("unmarshal %q: got %v; want nil", out, err)
			}
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			// encoding/json replaces invalid bytes the same way.
			ref, _ := json.Marshal(tt.s)
			var want string
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("against encoding/json: got %q; want %q", got, want)
			}
		})
	}
}

// TestAppendStringEveryByte checks each one-byte string, valid or not.
func TestAppendStringEveryByte(t *testing.T) {
	t.Parallel()
	for b := range 256 {
		s := string([]byte{byte(b)})
		out := frame.AppendString(nil, s)
		if !json.Valid(out) {
			t.Errorf("byte %#x: json.Valid(%q) = false; want true", b, out)
			continue
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("byte %#x: unmarshal: got %v; want nil", b, err)
			continue
		}
		if want := sanitized(s); got != want {
			t.Errorf("byte %#x: got %q; want %q", b, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00\x1f\x7f", "\u2028\u2029", "\xff\xfe", "日本語😀", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := frame.AppendString([]byte("x"), s)
		if out[0] != 'x' {
			t.Fatalf("prefix: got %q; want %q", out[0], 'x')
		}
		out = out[1:]
		if !json.Valid(out) {
			t.Fatalf("json.Valid(%q) = false; want true", out)
		}
		if bytes.Contains(out, []byte("\u2028")) || bytes.Contains(out, []byte("\u2029")) {
			t.Fatalf("output %q holds a raw U+2028 or U+2029", out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("unmarshal %q: got %v; want nil", out, err)
		}
		if want := sanitized(s); got != want {
			t.Fatalf("got %q; want %q", got, want)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("valid UTF-8 round trip: got %q; want %q", got, s)
		}
	})
}

var sink []byte

func BenchmarkAppendMessage(b *testing.B) {
	data := []byte(`{"text":"hello, world","from":"alice","n":42}`)
	tests := []struct {
		name               string
		id, event, channel string
	}{
		{name: "ascii", id: "k3v9q2-1z", event: "ShowMessage", channel: "quotes"},
		{name: "escapes", id: "k3v9q2-1z", event: "Show\"Message\"\n", channel: "日本語\u2028"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = frame.AppendMessage(buf[:0], tt.id, 12345, tt.event, tt.channel, data)
			}
			b.SetBytes(int64(len(buf)))
			sink = buf
		})
	}
}

func BenchmarkAppendCount(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = frame.AppendCount(buf[:0], 123456, 23456)
	}
	sink = buf
}
