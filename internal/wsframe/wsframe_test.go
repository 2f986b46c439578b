package wsframe

import (
	"bytes"
	"testing"
)

func TestAppendHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		op     byte
		n      int
		masked bool
		want   []byte
	}{
		{OpText, 0, false, []byte{0x81, 0}},
		{OpText, 125, false, []byte{0x81, 125}},
		{OpText, 126, false, []byte{0x81, 126, 0, 126}},
		{OpText, 65535, false, []byte{0x81, 126, 0xff, 0xff}},
		{OpText, 65536, false, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{OpPong, 0, true, []byte{0x8a, 0x80}},
		{OpText, 126, true, []byte{0x81, 0x80 | 126, 0, 126}},
		{OpBinary, 65536, true, []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := AppendHeader(nil, tc.op, tc.n, tc.masked); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendHeader(%#x, %d, %v): got % x; want % x", tc.op, tc.n, tc.masked, got, tc.want)
		}
	}
}
