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
// (NaN, infinities), on nesting deeper than MaxDataDepth, and once the
// output passes max bytes. A nil v is null; object keys are sorted so the
// same value always encodes to the same bytes.
func encodeValue(dst []byte, v *structpb.Value, max int) ([]byte, error) {
	dst, err := appendValue(dst, v, 0)
	if err != nil {
		return nil, err
	}
	if len(dst) > max {
		return nil, fmt.Errorf("data is %d bytes of JSON, over the limit of %d", len(dst), max)
	}
	return dst, nil
}

var errTooDeep = fmt.Errorf("data nests deeper than %d levels", MaxDataDepth)

func appendValue(dst []byte, v *structpb.Value, depth int) ([]byte, error) {
	if depth > MaxDataDepth {
		return nil, errTooDeep
	}
	var err error
	switch k := v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		dst = append(dst, "null"...)
	case *structpb.Value_BoolValue:
		dst = strconv.AppendBool(dst, k.BoolValue)
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("data holds a number JSON cannot represent (NaN or infinity)")
		}
		dst = appendNumber(dst, f)
	case *structpb.Value_StringValue:
		dst = frame.AppendString(dst, k.StringValue)
	case *structpb.Value_ListValue:
		dst = append(dst, '[')
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendValue(dst, e, depth+1); err != nil {
				return nil, err
			}
		}
		dst = append(dst, ']')
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		dst = append(dst, '{')
		for i, key := range slices.Sorted(maps.Keys(fields)) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = frame.AppendString(dst, key)
			dst = append(dst, ':')
			if dst, err = appendValue(dst, fields[key], depth+1); err != nil {
				return nil, err
			}
		}
		dst = append(dst, '}')
	default:
		return nil, fmt.Errorf("data holds an unknown kind %T", k)
	}
	return dst, nil
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
