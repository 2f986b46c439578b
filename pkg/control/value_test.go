package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// stdJSON encodes v as encoding/json does, without HTML escaping (which
// the frame format does not do; both forms are the same JSON value).
func stdJSON(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("json.Encode(%v): %v", v, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func mustValue(t *testing.T, v any) *structpb.Value {
	t.Helper()
	pv, err := structpb.NewValue(v)
	if err != nil {
		t.Fatalf("structpb.NewValue(%v): %v", v, err)
	}
	return pv
}

func TestAppendNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    float64
	}{
		{"zero", 0},
		{"negative zero", math.Copysign(0, -1)},
		{"one", 1},
		{"minus one", -1},
		{"tenth", 0.1},
		{"pi", math.Pi},
		{"largest exact integer", 1 << 53},
		{"past exact integers", 1<<53 + 2},
		{"1e20", 1e20},
		{"just under 1e21", 999999999999999900000},
		{"1e21", 1e21},
		{"-1e21", -1e21},
		{"1e-6", 1e-6},
		{"just under 1e-6", 9.99e-7},
		{"1e-7", 1e-7},
		{"-1.5e-10", -1.5e-10},
		{"1e-100", 1e-100},
		{"smallest denormal", math.SmallestNonzeroFloat64},
		{"largest", math.MaxFloat64},
		{"int64 max", math.MaxInt64},
		{"1e100", 1e100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := string(appendNumber(nil, tc.f))
			want := string(stdJSON(t, tc.f))
			if got != want {
				t.Errorf("appendNumber(%v): got %s; want %s (encoding/json)", tc.f, got, want)
			}
		})
	}
}

// TestEncodeValueMatchesJSON compares encodeValue with encoding/json of
// AsInterface(): the same bytes, keys sorted the same way.
func TestEncodeValueMatchesJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    *structpb.Value
	}{
		{"null", structpb.NewNullValue()},
		{"true", structpb.NewBoolValue(true)},
		{"false", structpb.NewBoolValue(false)},
		{"number", structpb.NewNumberValue(-12.5)},
		{"string", structpb.NewStringValue("plain")},
		{"string with quotes and controls", structpb.NewStringValue("\"\\\n\r\t\x00\x1f\x7f")},
		{"string with HTML", structpb.NewStringValue("<a href='x'>&amp;</a>")},
		{"string with line separators", structpb.NewStringValue("a\u2028b\u2029c")},
		{"string, multibyte", structpb.NewStringValue("héllo, 世界, 🎉")},
		{"empty list", mustValue(t, []any{})},
		{"list", mustValue(t, []any{1, "a", nil, false, []any{}, map[string]any{}})},
		{"empty struct", mustValue(t, map[string]any{})},
		{"keys sorted bytewise", mustValue(t, map[string]any{"b": 1, "a": 2, "B": 3, "ä": 4, "aa": 5, "": 6, "a\"": 7})},
		{"nested", mustValue(t, map[string]any{"user": map[string]any{"name": "Ann", "tags": []any{"x", "y"}, "age": 42}, "ok": true})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := encodeValue(nil, tc.v, DefaultMaxDataBytes)
			if err != nil {
				t.Fatalf("encodeValue: got %v; want nil", err)
			}
			if want := stdJSON(t, tc.v.AsInterface()); !bytes.Equal(got, want) {
				t.Errorf("encodeValue: got %s; want %s", got, want)
			}
		})
	}

	t.Run("unset is null", func(t *testing.T) {
		t.Parallel()
		got, err := encodeValue(nil, nil, DefaultMaxDataBytes)
		if err != nil || string(got) != "null" {
			t.Errorf("encodeValue(nil): got %s, %v; want null", got, err)
		}
	})
	t.Run("a value with no kind is refused", func(t *testing.T) {
		t.Parallel()
		for _, v := range []*structpb.Value{
			{},
			structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{{}}}),
			structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"text": {}}}),
		} {
			if got, err := encodeValue(nil, v, DefaultMaxDataBytes); err == nil {
				t.Errorf("encodeValue(%v): got %s; want an error", v, got)
			}
		}
	})
	t.Run("appends to dst", func(t *testing.T) {
		t.Parallel()
		got, err := encodeValue([]byte("prefix:"), mustValue(t, []any{1}), 3)
		if err != nil || string(got) != "prefix:[1]" {
			t.Errorf("encodeValue with a prefix: got %s, %v; want prefix:[1]", got, err)
		}
	})
}

// randomValue builds a random value up to depth deep from rng. Strings
// avoid \b and \f, which encoding/json writes in short form since Go 1.22
// and the frame encoder as \u0008 and \u000c: the same JSON either way.
func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	kinds := 6
	if depth <= 0 {
		kinds = 4
	}
	switch rng.IntN(kinds) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case 2:
		switch rng.IntN(3) {
		case 0:
			return structpb.NewNumberValue(float64(rng.Int64N(1<<60) - 1<<59))
		case 1:
			return structpb.NewNumberValue(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30)))
		default:
			return structpb.NewNumberValue(math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.IntN(0x7fe)+1)<<52))
		}
	case 3:
		return structpb.NewStringValue(randomString(rng))
	case 4:
		l := &structpb.ListValue{}
		for range rng.IntN(5) {
			l.Values = append(l.Values, randomValue(rng, depth-1))
		}
		return structpb.NewListValue(l)
	default:
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for range rng.IntN(5) {
			s.Fields[randomString(rng)] = randomValue(rng, depth-1)
		}
		return structpb.NewStructValue(s)
	}
}

func randomString(rng *rand.Rand) string {
	alphabet := []rune("aZ09 \"\\/\n\r\t\x00\x1f\x7f<>&é世🎉\u2028\u2029")
	var sb strings.Builder
	for range rng.IntN(8) {
		sb.WriteRune(alphabet[rng.IntN(len(alphabet))])
	}
	return sb.String()
}

func TestEncodeValueRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 2000 {
		v := randomValue(rng, 4)
		got, err := encodeValue(nil, v, 1<<20)
		if err != nil {
			t.Fatalf("value %d: encodeValue: got %v; want nil", i, err)
		}
		if want := stdJSON(t, v.AsInterface()); !bytes.Equal(got, want) {
			t.Fatalf("value %d: encodeValue: got %s; want %s", i, got, want)
		}
		var back any
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("value %d: output %s is not JSON: %v", i, got, err)
		}
		if !reflect.DeepEqual(back, v.AsInterface()) {
			t.Fatalf("value %d: round trip: got %v; want %v", i, back, v.AsInterface())
		}
	}
}

// nested returns depth lists (or structs) nested around inner.
func nested(depth int, inner *structpb.Value, structs bool) *structpb.Value {
	v := inner
	for range depth {
		if structs {
			v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"k": v}})
		} else {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		}
	}
	return v
}

func TestEncodeValueDepth(t *testing.T) {
	t.Parallel()
	empty := structpb.NewListValue(&structpb.ListValue{})
	tests := []struct {
		name    string
		v       *structpb.Value
		wantErr bool
	}{
		{"lists at the limit", nested(MaxDataDepth, structpb.NewNumberValue(1), false), false},
		{"structs at the limit", nested(MaxDataDepth, structpb.NewNumberValue(1), true), false},
		{"empty list at the limit", nested(MaxDataDepth-1, empty, false), false},
		{"lists past the limit", nested(MaxDataDepth+1, structpb.NewNumberValue(1), false), true},
		{"structs past the limit", nested(MaxDataDepth+1, structpb.NewNumberValue(1), true), true},
		{"empty list past the limit", nested(MaxDataDepth, empty, false), true},
		{"far past the limit", nested(10000, structpb.NewNullValue(), false), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := encodeValue(nil, tc.v, DefaultMaxDataBytes)
			if got := err != nil; got != tc.wantErr {
				t.Fatalf("encodeValue: got error %v; want error %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, errTooDeep) {
				t.Errorf("encodeValue: got %v; want %v", err, errTooDeep)
			}
		})
	}
}

func TestEncodeValueLimits(t *testing.T) {
	t.Parallel()
	const max = 100
	manyNulls := &structpb.ListValue{}
	for range 1000 {
		manyNulls.Values = append(manyNulls.Values, structpb.NewNullValue())
	}
	bigKey := &structpb.Struct{Fields: map[string]*structpb.Value{strings.Repeat("k", 200): structpb.NewNullValue()}}
	tests := []struct {
		name    string
		v       *structpb.Value
		wantErr bool
	}{
		{"string at the limit", structpb.NewStringValue(strings.Repeat("s", max-2)), false},
		{"string one over", structpb.NewStringValue(strings.Repeat("s", max-1)), true},
		{"escapes push it over", structpb.NewStringValue(strings.Repeat("\x01", max/6+1)), true},
		{"string far over", structpb.NewStringValue(strings.Repeat("s", 10*max)), true},
		{"many small values", structpb.NewListValue(manyNulls), true},
		{"long key", structpb.NewStructValue(bigKey), true},
		{"NaN", structpb.NewNumberValue(math.NaN()), true},
		{"+Inf", structpb.NewNumberValue(math.Inf(1)), true},
		{"-Inf in a list", mustValue(t, []any{1, math.Inf(-1)}), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := encodeValue(nil, tc.v, max)
			if (err != nil) != tc.wantErr {
				t.Fatalf("encodeValue: got %d bytes, error %v; want error %v", len(got), err, tc.wantErr)
			}
			if err == nil && len(got) > max {
				t.Errorf("encodeValue: got %d bytes; want at most %d", len(got), max)
			}
		})
	}
}

func BenchmarkEncodeValue(b *testing.B) {
	v := randomValue(rand.New(rand.NewPCG(1, 1)), 5)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeValue(nil, v, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
