package frame_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want frame.Inbound
	}{
		{name: "subscribe", in: `{"type":"subscribe","channel":"quotes"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "quotes"}},
		{name: "unsubscribe", in: `{"type":"unsubscribe","channel":"quotes"}`, want: frame.Inbound{Op: frame.OpUnsubscribe, Channel: "quotes"}},
		{name: "channel first", in: `{"channel":"a","type":"subscribe"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "a"}},
		{name: "surrounding white space", in: " \t\r\n{ \"type\" : \"subscribe\" ,\n\"channel\":\"a\" } \n", want: frame.Inbound{Op: frame.OpSubscribe, Channel: "a"}},
		{name: "escaped channel", in: `{"type":"subscribe","channel":"\u0071uotes\/x"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "quotes/x"}},
		{name: "non-ASCII channel", in: `{"type":"subscribe","channel":"日本語😀"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "日本語😀"}},
		{name: "subscribe with last", in: `{"type":"subscribe","channel":"quotes","last":1}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "quotes", Last: 1}},
		{name: "last first", in: `{"last":100,"type":"subscribe","channel":"q"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: "q", Last: frame.MaxLast}},
		{name: "longest channel", in: `{"type":"subscribe","channel":"` + strings.Repeat("x", frame.MaxChannelLen) + `"}`, want: frame.Inbound{Op: frame.OpSubscribe, Channel: strings.Repeat("x", frame.MaxChannelLen)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := frame.Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode(%q): got error %v; want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Decode(%q): got %+v; want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
	}{
		{name: "empty", in: ``},
		{name: "white space only", in: "  \n"},
		{name: "last zero", in: `{"type":"subscribe","channel":"a","last":0}`},
		{name: "last too large", in: `{"type":"subscribe","channel":"a","last":101}`},
		{name: "last negative", in: `{"type":"subscribe","channel":"a","last":-1}`},
		{name: "last fraction", in: `{"type":"subscribe","channel":"a","last":1.5}`},
		{name: "last with a point", in: `{"type":"subscribe","channel":"a","last":1.0}`},
		{name: "last exponent", in: `{"type":"subscribe","channel":"a","last":1e1}`},
		{name: "last huge", in: `{"type":"subscribe","channel":"a","last":99999999999999999999999}`},
		{name: "last string", in: `{"type":"subscribe","channel":"a","last":"1"}`},
		{name: "last null", in: `{"type":"subscribe","channel":"a","last":null}`},
		{name: "last repeated", in: `{"type":"subscribe","channel":"a","last":1,"last":2}`},
		{name: "last on unsubscribe", in: `{"type":"unsubscribe","channel":"a","last":1}`},
		{name: "invalid UTF-8", in: "{\"type\":\"subscribe\",\"channel\":\"a\xff\"}"},
		{name: "invalid UTF-8 outside strings", in: "\xff{\"type\":\"subscribe\",\"channel\":\"a\"}"},
		{name: "null", in: `null`},
		{name: "string", in: `"subscribe"`},
		{name: "number", in: `1`},
		{name: "array", in: `[{"type":"subscribe","channel":"a"}]`},
		{name: "empty object", in: `{}`},
		{name: "truncated", in: `{"type":"subscribe","channel":"a"`},
		{name: "bad JSON", in: `{type:"subscribe",channel:"a"}`},
		{name: "single quotes", in: `{'type':'subscribe','channel':'a'}`},
		{name: "trailing comma", in: `{"type":"subscribe","channel":"a",}`},
		{name: "missing colon", in: `{"type" "subscribe","channel":"a"}`},
		{name: "unknown field", in: `{"type":"subscribe","channel":"a","x":1}`},
		{name: "unknown nested field", in: `{"type":"subscribe","channel":"a","x":{"y":[1]}}`},
		{name: "key in other case", in: `{"Type":"subscribe","channel":"a"}`},
		{name: "key in upper case", in: `{"type":"subscribe","CHANNEL":"a"}`},
		{name: "key with Kelvin sign", in: `{"type":"subscribe","channel":"a","\u212aey":1}`},
		{name: "repeated type", in: `{"type":"unsubscribe","type":"subscribe","channel":"a"}`},
		{name: "repeated channel", in: `{"type":"subscribe","channel":"a","channel":"b"}`},
		{name: "unknown type", in: `{"type":"publish","channel":"a"}`},
		{name: "type in other case", in: `{"type":"Subscribe","channel":"a"}`},
		{name: "empty type", in: `{"type":"","channel":"a"}`},
		{name: "type not a string", in: `{"type":1,"channel":"a"}`},
		{name: "type null", in: `{"type":null,"channel":"a"}`},
		{name: "type object", in: `{"type":{},"channel":"a"}`},
		{name: "type array", in: `{"type":["subscribe"],"channel":"a"}`},
		{name: "missing type", in: `{"channel":"a"}`},
		{name: "missing channel", in: `{"type":"subscribe"}`},
		{name: "channel null", in: `{"type":"subscribe","channel":null}`},
		{name: "channel number", in: `{"type":"subscribe","channel":7}`},
		{name: "channel bool", in: `{"type":"subscribe","channel":true}`},
		{name: "empty channel", in: `{"type":"subscribe","channel":""}`},
		{name: "too long channel", in: `{"type":"subscribe","channel":"` + strings.Repeat("x", frame.MaxChannelLen+1) + `"}`},
		{name: "too long multibyte channel", in: `{"type":"subscribe","channel":"` + strings.Repeat("é", frame.MaxChannelLen/2+1) + `"}`},
		{name: "control char in channel", in: `{"type":"subscribe","channel":"a\u0000b"}`},
		{name: "newline in channel", in: `{"type":"subscribe","channel":"a\nb"}`},
		{name: "DEL in channel", in: `{"type":"subscribe","channel":"a\u007f"}`},
		{name: "C1 control in channel", in: `{"type":"subscribe","channel":"a\u0085"}`},
		{name: "space in channel", in: `{"type":"subscribe","channel":"a b"}`},
		{name: "no-break space in channel", in: `{"type":"subscribe","channel":"a\u00a0b"}`},
		{name: "line separator in channel", in: `{"type":"subscribe","channel":"a\u2028b"}`},
		{name: "trailing object", in: `{"type":"subscribe","channel":"a"}{}`},
		{name: "trailing garbage", in: `{"type":"subscribe","channel":"a"} x`},
		{name: "trailing brace", in: `{"type":"subscribe","channel":"a"}}`},
		{name: "trailing bracket", in: `{"type":"subscribe","channel":"a"}]`},
		{name: "trailing comma after object", in: `{"type":"subscribe","channel":"a"},`},
		{name: "trailing NUL", in: "{\"type\":\"subscribe\",\"channel\":\"a\"}\x00"},
		{name: "trailing vertical tab", in: "{\"type\":\"subscribe\",\"channel\":\"a\"}\v"},
		{name: "two values", in: `{"type":"subscribe","channel":"a"} {"type":"subscribe","channel":"b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := frame.Decode([]byte(tt.in))
			if !errors.Is(err, frame.ErrInvalid) {
				t.Fatalf("Decode(%q): got %+v, %v; want an error wrapping %v", tt.in, got, err, frame.ErrInvalid)
			}
			if got != (frame.Inbound{}) {
				t.Errorf("Decode(%q): got %+v with the error; want the zero Inbound", tt.in, got)
			}
			// The text is sent as a WebSocket close reason: at most 123
			// bytes, and none of the peer's input echoed back.
			if msg := err.Error(); len(msg) > 123 || msg == "" {
				t.Errorf("error text %q: got %d bytes; want 1 to 123", msg, len(msg))
			}
		})
	}
}

func TestValidateChannel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		channel string
		ok      bool
	}{
		{name: "simple", channel: "quotes", ok: true},
		{name: "punctuation", channel: "room:42/chat.v1-a_b", ok: true},
		{name: "non-ASCII", channel: "日本", ok: true},
		{name: "max length", channel: strings.Repeat("a", frame.MaxChannelLen), ok: true},
		{name: "empty", channel: ""},
		{name: "too long", channel: strings.Repeat("a", frame.MaxChannelLen+1)},
		{name: "space", channel: " "},
		{name: "tab", channel: "a\tb"},
		{name: "NUL", channel: "\x00"},
		{name: "invalid UTF-8", channel: "a\xff"},
		{name: "paragraph separator", channel: "\u2029"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := frame.ValidateChannel(tt.channel)
			if tt.ok && err != nil {
				t.Errorf("ValidateChannel(%q): got %v; want nil", tt.channel, err)
			}
			if !tt.ok && !errors.Is(err, frame.ErrInvalid) {
				t.Errorf("ValidateChannel(%q): got %v; want an error wrapping %v", tt.channel, err, frame.ErrInvalid)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "empty is the caller's concern", in: "", ok: true},
		{name: "event", in: "ShowMessage", ok: true},
		{name: "long", in: strings.Repeat("a", 1000), ok: true},
		{name: "space", in: "Show Message"},
		{name: "control", in: "a\x1b"},
		{name: "invalid UTF-8", in: "\xc3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := frame.ValidateName(tt.in)
			if tt.ok && err != nil {
				t.Errorf("ValidateName(%q): got %v; want nil", tt.in, err)
			}
			if !tt.ok && !errors.Is(err, frame.ErrInvalid) {
				t.Errorf("ValidateName(%q): got %v; want an error wrapping %v", tt.in, err, frame.ErrInvalid)
			}
		})
	}
}

func TestOpString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		op   frame.Op
		want string
	}{
		{name: "subscribe", op: frame.OpSubscribe, want: "subscribe"},
		{name: "unsubscribe", op: frame.OpUnsubscribe, want: "unsubscribe"},
		{name: "zero", op: 0, want: "Op(0)"},
		{name: "unknown", op: 9, want: "Op(9)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.op.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","channel":"quotes"}`,
		`{"type":"unsubscribe","channel":"quotes"}`,
		`{"channel":"日本","type":"subscribe"}`,
		` {"type":"subscribe","channel":"\u0061"} `,
		`{"type":"subscribe","channel":"a"}}`,
		`{"Type":"subscribe","channel":"a"}`,
		`{"type":"subscribe","channel":"a","channel":"b"}`,
		`{"type":"subscribe","channel":""}`,
		`{"type":"subscribe","channel":"\ud800"}`,
		`{"type":"publish","channel":"a","data":{"x":[1,2]}}`,
		`[]`,
		`null`,
		"{\"type\":\"subscribe\",\"channel\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		in, err := frame.Decode(p)
		if err != nil {
			if !errors.Is(err, frame.ErrInvalid) {
				t.Fatalf("Decode(%q): got %v; want an error wrapping %v", p, err, frame.ErrInvalid)
			}
			if in != (frame.Inbound{}) {
				t.Fatalf("Decode(%q): got %+v with an error; want the zero Inbound", p, in)
			}
			return
		}
		if in.Op != frame.OpSubscribe && in.Op != frame.OpUnsubscribe {
			t.Fatalf("Decode(%q): got op %v; want subscribe or unsubscribe", p, in.Op)
		}
		if err := frame.ValidateChannel(in.Channel); err != nil {
			t.Fatalf("Decode(%q): got channel %q that ValidateChannel refuses: %v", p, in.Channel, err)
		}

		// What Decode accepts, encoding/json must read as an object with
		// exactly the two string fields Decode returned.
		var ref map[string]any
		if err := json.Unmarshal(p, &ref); err != nil {
			t.Fatalf("Decode(%q) accepted what encoding/json refuses: %v", p, err)
		}
		if len(ref) != 2 || ref["type"] != in.Op.String() || ref["channel"] != in.Channel {
			t.Fatalf("Decode(%q): got %+v; encoding/json reads %v", p, in, ref)
		}

		// decode(encode(x)) == x.
		enc, err := json.Marshal(map[string]string{"type": in.Op.String(), "channel": in.Channel})
		if err != nil {
			t.Fatal(err)
		}
		again, err := frame.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(%q) of the re-encoded %+v: got %v; want nil", enc, in, err)
		}
		if again != in {
			t.Fatalf("Decode(%q): got %+v; want %+v", enc, again, in)
		}
		// The same through this package's own encoder.
		enc = append([]byte(`{"type":`), frame.AppendString(nil, in.Op.String())...)
		enc = append(enc, `,"channel":`...)
		enc = append(frame.AppendString(enc, in.Channel), '}')
		if again, err = frame.Decode(enc); err != nil || again != in {
			t.Fatalf("Decode(%q): got %+v, %v; want %+v, nil", enc, again, err, in)
		}
	})
}

var sinkInbound frame.Inbound

func BenchmarkDecode(b *testing.B) {
	p := []byte(`{"type":"subscribe","channel":"quotes"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		in, err := frame.Decode(p)
		if err != nil {
			b.Fatal(err)
		}
		sinkInbound = in
	}
}
