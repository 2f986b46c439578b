package browsersim

import (
	"encoding/json"
	"testing"
)

func TestMessageFrame(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"type":"message","id":"k1","offset":42,"event":"ShowMessage","channel":"","data":{"text":"steady 7"}}`, true},
		{`{"type":"message","id":"k2","offset":3,"event":"Quote","channel":"quotes","data":{"text":"a","author":"b"}}`, true},
		{`{"type":"message","id":"k\"3","offset":3,"event":"E","channel":"","data":null}`, false},
		{`{"type":"message","id":"k4","offset":3,"event":"E","channel":"","data":{"text":"a \"b\""}}`, false},
		{`{"type":"count","connections":3}`, false},
	} {
		var f frameIn
		ok := messageFrame([]byte(tc.in), &f)
		if ok != tc.ok {
			t.Errorf("messageFrame(%s): got %v; want %v", tc.in, ok, tc.ok)
			continue
		}
		var want frameIn
		if ok && json.Unmarshal([]byte(tc.in), &want) == nil && f != want {
			t.Errorf("messageFrame(%s): got %+v; want %+v, as the JSON decoder reads it", tc.in, f, want)
		}
	}
}
