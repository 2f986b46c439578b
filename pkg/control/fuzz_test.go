package control

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// valueReader builds a structpb.Value from fuzz bytes, so the fuzzer can
// reach every kind: kind-less values, NaN and infinities, strings that are
// not UTF-8, and nesting past MaxDataDepth.
type valueReader struct {
	b     []byte
	dirty bool // a string that is not valid UTF-8 was made
}

func (r *valueReader) next() byte {
	if len(r.b) == 0 {
		return 1 // null: an exhausted input ends every value
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *valueReader) str() string {
	n := int(r.next() % 24)
	n = min(n, len(r.b))
	s := string(r.b[:n])
	r.b = r.b[n:]
	if !utf8.ValidString(s) {
		r.dirty = true
	}
	return s
}

func (r *valueReader) value(depth int) *structpb.Value {
	if depth > 2*MaxDataDepth {
		return structpb.NewNullValue()
	}
	switch r.next() % 10 {
	case 0:
		return &structpb.Value{} // no kind
	case 1:
		return structpb.NewNullValue()
	case 2:
		return structpb.NewBoolValue(r.next()%2 == 0)
	case 3:
		var buf [8]byte
		for i := range buf {
			buf[i] = r.next()
		}
		return structpb.NewNumberValue(math.Float64frombits(binary.LittleEndian.Uint64(buf[:])))
	case 4:
		return structpb.NewNumberValue(float64(int8(r.next())))
	case 5:
		return structpb.NewStringValue(r.str())
	case 6:
		n := int(r.next() % 5)
		l := &structpb.ListValue{}
		for range n {
			l.Values = append(l.Values, r.value(depth+1))
		}
		return structpb.NewListValue(l)
	case 7:
		n := int(r.next() % 5)
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for range n {
			s.Fields[r.str()] = r.value(depth + 1)
		}
		return structpb.NewStructValue(s)
	case 8:
		// A chain of lists, to reach the depth limit cheaply.
		d := int(r.next() % (MaxDataDepth + 8))
		v := r.value(depth + d)
		for range d {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		}
		return v
	default:
		return structpb.NewStringValue(strings.Repeat("x", int(r.next())*8))
	}
}

// FuzzEncodeValue checks that encodeValue never panics, that what it
// accepts is valid JSON within the limit, and that it holds the same value
// as the input (when every string in it is UTF-8: others get U+FFFD).
func FuzzEncodeValue(f *testing.F) {
	f.Add([]byte{7, 2, 1, 'a', 3, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f}, uint16(100)) // {"a": NaN}
	f.Add([]byte{6, 3, 5, 3, 'h', 'i', '"', 2, 0, 0}, uint16(1000))
	f.Add([]byte{8, 40, 1}, uint16(4000))
	f.Add([]byte{0}, uint16(10))
	f.Add([]byte{5, 2, 0xff, 0xfe}, uint16(10))
	f.Add([]byte{9, 200}, uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		max := int(limit)%4096 + 1
		r := &valueReader{b: data}
		v := r.value(0)
		prefix := []byte("prefix")
		out, err := encodeValue(append([]byte(nil), prefix...), v, max)
		if err != nil {
			return
		}
		if !strings.HasPrefix(string(out), string(prefix)) {
			t.Fatalf("output lost the prefix: %q", out)
		}
		out = out[len(prefix):]
		if len(out) > max {
			t.Fatalf("accepted %d bytes over a limit of %d", len(out), max)
		}
		if !json.Valid(out) {
			t.Fatalf("accepted output is not valid JSON: %q", out)
		}
		var got any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("json.Unmarshal(%q): %v", out, err)
		}
		if !r.dirty && !reflect.DeepEqual(got, v.AsInterface()) {
			t.Fatalf("round trip: got %v; want %v", got, v.AsInterface())
		}
	})
}

// FuzzValidateEvent checks that an accepted event is a non-empty UTF-8
// name within MaxEventLen, without control or space characters, that
// encodes to valid JSON, and that a refusal is INVALID_ARGUMENT.
func FuzzValidateEvent(f *testing.F) {
	for _, s := range []string{"", "ShowMessage", "a b", "a\x00", "\xff", "Zeigé", strings.Repeat("e", MaxEventLen+1), "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validateEvent(s)
		checkName(t, s, err, MaxEventLen, false)
	})
}

// FuzzValidateChannel is FuzzValidateEvent for channels, where empty
// means every browser.
func FuzzValidateChannel(f *testing.F) {
	for _, s := range []string{"", "quotes", "a b", "\t", "\xc3", strings.Repeat("c", frame.MaxChannelLen+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validateChannel(s)
		checkName(t, s, err, frame.MaxChannelLen, true)
	})
}

func checkName(t *testing.T, s string, err error, maxLen int, emptyOK bool) {
	t.Helper()
	if err != nil {
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%q: got %v; want INVALID_ARGUMENT", s, err)
		}
		return
	}
	if s == "" {
		if !emptyOK {
			t.Fatalf("accepted an empty name")
		}
		return
	}
	if len(s) > maxLen || !utf8.ValidString(s) {
		t.Fatalf("accepted %q: too long or not UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			t.Fatalf("accepted %q with %U", s, r)
		}
	}
	if out := frame.AppendString(nil, s); !json.Valid(out) {
		t.Fatalf("accepted %q encodes to invalid JSON %q", s, out)
	}
}

// FuzzValidateKey checks that an accepted idempotency key is printable
// UTF-8 within MaxKeyLen.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "order 42/é", "a\n", "\xff", strings.Repeat("k", MaxKeyLen+1), "\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validateKey(s)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%q: got %v; want INVALID_ARGUMENT", s, err)
			}
			return
		}
		if len(s) > MaxKeyLen || !utf8.ValidString(s) {
			t.Fatalf("accepted %q: too long or not UTF-8", s)
		}
		for _, r := range s {
			if !unicode.IsPrint(r) {
				t.Fatalf("accepted %q with unprintable %U", s, r)
			}
		}
	})
}

// FuzzEmitMessage feeds EmitMessage whatever request the fuzz bytes
// unmarshal to: it never panics, answers OK or INVALID_ARGUMENT, and what
// it accepts reaches a browser as a valid JSON frame.
func FuzzEmitMessage(f *testing.F) {
	seed := func(r *switchboardv1.EmitMessageRequest) {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&switchboardv1.EmitMessageRequest{Event: "ShowMessage", Data: structpb.NewStringValue("hi")})
	seed(&switchboardv1.EmitMessageRequest{Event: "E", Channel: "quotes", IdempotencyKey: "k", Data: structpb.NewNumberValue(math.NaN())})
	seed(&switchboardv1.EmitMessageRequest{Event: "E", Data: &structpb.Value{}})
	h, err := hub.New(hub.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), IdempotencyKeys: 1000})
	if err != nil {
		f.Fatal(err)
	}
	defer h.Close()
	s := New(Config{Hub: h, MaxDataBytes: 2048})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req switchboardv1.EmitMessageRequest
		if proto.Unmarshal(b, &req) != nil {
			return // gRPC refuses it before the service sees it
		}
		_, err := s.EmitMessage(context.Background(), &req)
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument {
				t.Fatalf("EmitMessage(%v): got %v; want OK or INVALID_ARGUMENT", &req, err)
			}
			return
		}
		out := frame.AppendMessage(nil, "id", 1, req.GetEvent(), req.GetChannel(), mustEncode(t, &req))
		if !json.Valid(out) {
			t.Fatalf("accepted request gives an invalid frame %q", out)
		}
	})
}

func mustEncode(t *testing.T, req *switchboardv1.EmitMessageRequest) []byte {
	data, err := encodeValue(nil, req.GetData(), 2048)
	if err != nil {
		t.Fatalf("encodeValue after EmitMessage accepted it: %v", err)
	}
	return data
}
