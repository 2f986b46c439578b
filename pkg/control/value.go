package control

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

// encodeValue appends v as JSON to dst. It fails on values JSON cannot hold
// (NaN, infinities), on lists and structs nested more than MaxDataDepth
// deep, and as soon as the output passes max bytes, so that an oversized
// value is never encoded in full. A nil v is null; object keys are sorted
// so the same value always encodes to the same bytes.
func encodeValue(dst []byte, v *structpb.Value, max int) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	e := valueEncoder{buf: dst, limit: len(dst) + max, max: max}
	if err := e.value(v, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

var errTooDeep = fmt.Errorf("data nests lists and structs deeper than %d levels", MaxDataDepth)

type valueEncoder struct {
	buf   []byte
	limit int // len(buf) may not pass it
	max   int // the limit on the value's own bytes
}

func (e *valueEncoder) tooLarge() error { return tooLargeError(e.max) }

// tooLargeError is the error for data over its limit of that many bytes.
type tooLargeError int

func (e tooLargeError) Error() string {
	return fmt.Sprintf("data is over the limit of %d bytes of JSON", int(e))
}

// value appends v, which sits inside depth lists and structs.
func (e *valueEncoder) value(v *structpb.Value, depth int) error {
	dst := e.buf
	switch k := v.GetKind().(type) {
	case *structpb.Value_ListValue, *structpb.Value_StructValue:
		if depth >= MaxDataDepth {
			return errTooDeep
		}
	case *structpb.Value_StringValue:
		// Escaping only adds: fail before copying a string that cannot fit.
		if len(dst)+len(k.StringValue)+2 > e.limit {
			return e.tooLarge()
		}
	}
	var err error
	switch k := v.GetKind().(type) {
	case nil:
		// Some clients (proto-loader given a plain object) send this for
		// values they failed to convert: refuse rather than deliver null.
		return errors.New("data holds a google.protobuf.Value with no kind set; use null_value for null")
	case *structpb.Value_NullValue:
		dst = append(dst, "null"...)
	case *structpb.Value_BoolValue:
		dst = strconv.AppendBool(dst, k.BoolValue)
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("data holds a number JSON cannot represent (NaN or infinity)")
		}
		dst = appendNumber(dst, f)
	case *structpb.Value_StringValue:
		dst = frame.AppendString(dst, k.StringValue)
	case *structpb.Value_ListValue:
		dst = append(dst, '[')
		for i, elem := range k.ListValue.GetValues() {
			if i > 0 {
				dst = append(dst, ',')
			}
			e.buf = dst
			if err = e.value(elem, depth+1); err != nil {
				return err
			}
			dst = e.buf
		}
		dst = append(dst, ']')
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		dst = append(dst, '{')
		for i, key := range slices.Sorted(maps.Keys(fields)) {
			if i > 0 {
				dst = append(dst, ',')
			}
			if len(dst)+len(key)+3 > e.limit {
				return e.tooLarge()
			}
			dst = frame.AppendString(dst, key)
			dst = append(dst, ':')
			e.buf = dst
			if err = e.value(fields[key], depth+1); err != nil {
				return err
			}
			dst = e.buf
		}
		dst = append(dst, '}')
	default:
		return fmt.Errorf("data holds an unknown kind %T", k)
	}
	if len(dst) > e.limit {
		return e.tooLarge()
	}
	e.buf = dst
	return nil
}

// appendNumber formats f as encoding/json does: integers without an
// exponent up to 1e21, the shortest round-trip form otherwise.
func appendNumber(dst []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}
