package frame_test

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

func TestParseConnectAccepts(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		query string
		want  frame.Connect
	}{
		{"", frame.Connect{}},
		{"other=1", frame.Connect{}},
		{"other=1&token=x", frame.Connect{HasToken: true, Token: "x"}},
		{"token=", frame.Connect{HasToken: true}},
		{"visitor=Ab-9_z&channel=q", frame.Connect{Channels: []string{"q"}, Visitor: "Ab-9_z"}},
		{"visitor=" + strings.Repeat("v", 64) + "&token=t.u.v", frame.Connect{Visitor: strings.Repeat("v", 64), HasToken: true, Token: "t.u.v"}},
		{"channel=quotes", frame.Connect{Channels: []string{"quotes"}}},
		{"channel=b&channel=a&channel=b", frame.Connect{Channels: []string{"b", "a"}}},
		{"channel=%E6%97%A5%2Fx", frame.Connect{Channels: []string{"日/x"}}},
		{"epoch=abc&offset=0", frame.Connect{Resume: true, Epoch: "abc", Offset: 0}},
		{"offset=18446744073709551615&epoch=A-b_c.9&channel=q", frame.Connect{Channels: []string{"q"}, Resume: true, Epoch: "A-b_c.9", Offset: 1<<64 - 1}},
		{"epoch=" + strings.Repeat("e", frame.MaxEpochLen) + "&offset=7", frame.Connect{Resume: true, Epoch: strings.Repeat("e", frame.MaxEpochLen), Offset: 7}},
	} {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := frame.ParseConnect(q, 3)
		if err != nil || !equalConnect(got, tt.want) {
			t.Errorf("ParseConnect(%q): got %+v, %v; want %+v, nil", tt.query, got, err, tt.want)
		}
	}
}

func TestParseConnectRejects(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		query, reason string
	}{
		{"epoch=abc", `"epoch" and "offset" go together`},
		{"offset=5", `"epoch" and "offset" go together`},
		{"epoch=a&epoch=b&offset=1", `"epoch" is given more than once`},
		{"epoch=a&offset=1&offset=2", `"offset" is given more than once`},
		{"epoch=&offset=1", `"epoch" must be 1 to 64 characters`},
		{"epoch=" + strings.Repeat("e", frame.MaxEpochLen+1) + "&offset=1", `"epoch" must be 1 to 64 characters`},
		{"epoch=a%20b&offset=1", `"epoch" may hold only`},
		{"epoch=a%0Ab&offset=1", `"epoch" may hold only`},
		{"epoch=a&offset=", `"offset" must be a non-negative integer`},
		{"epoch=a&offset=-1", `"offset" must be a non-negative integer`},
		{"epoch=a&offset=%2B1", `"offset" must be a non-negative integer`},
		{"epoch=a&offset=1.0", `"offset" must be a non-negative integer`},
		{"epoch=a&offset=0x10", `"offset" must be a non-negative integer`},
		{"epoch=a&offset=18446744073709551616", `below 2^64`},
		{"channel=", "invalid channel parameter: channel name is empty"},
		{"channel=a%20b", "invalid channel parameter"},
		{"channel=" + strings.Repeat("x", frame.MaxChannelLen+1), "invalid channel parameter: channel name is too long"},
		{"channel=a%FF", "invalid channel parameter"},
		{"channel=a&channel=b&channel=c&channel=d", "too many channels: at most 3"},
		{"token=a&token=b", `"token" is given more than once`},
		{"visitor=a&visitor=a", `"visitor" is given more than once`},
		{"visitor=", `"visitor" must be 1 to 64 characters`},
		{"visitor=" + strings.Repeat("v", 65), `"visitor" must be 1 to 64 characters`},
		{"visitor=a.b", `"visitor" may hold only letters, digits, '-' and '_'`},
		{"visitor=a%20b", `"visitor" may hold only`},
		{"visitor=%C3%A9", `"visitor" may hold only`},
	} {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = frame.ParseConnect(q, 3)
		if !errors.Is(err, frame.ErrInvalid) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("ParseConnect(%q): got %v; want ErrInvalid saying %q", tt.query, err, tt.reason)
		}
	}
}

func equalConnect(a, b frame.Connect) bool {
	return slices.Equal(a.Channels, b.Channels) && a.Resume == b.Resume && a.Epoch == b.Epoch && a.Offset == b.Offset &&
		a.HasToken == b.HasToken && a.Token == b.Token && a.Visitor == b.Visitor
}

// FuzzParseConnect checks that any query either parses into a Connect that
// keeps every promise of ParseConnect and survives a round trip, or is
// refused with an ErrInvalid.
func FuzzParseConnect(f *testing.F) {
	for _, s := range []string{"", "channel=a", "epoch=e&offset=1&channel=q&channel=q", "epoch=e", "offset=1&epoch=%00", "channel=%FF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		c, err := frame.ParseConnect(q, 4)
		if err != nil {
			if !errors.Is(err, frame.ErrInvalid) {
				t.Fatalf("ParseConnect(%q): error %v does not wrap ErrInvalid", raw, err)
			}
			return
		}
		if len(c.Channels) > 4 {
			t.Fatalf("ParseConnect(%q): %d channels; at most 4", raw, len(c.Channels))
		}
		for i, ch := range c.Channels {
			if frame.ValidateChannel(ch) != nil || slices.Contains(c.Channels[:i], ch) {
				t.Fatalf("ParseConnect(%q): channel %q invalid or repeated", raw, ch)
			}
		}
		if c.Resume != q.Has("epoch") || (!c.Resume && (c.Epoch != "" || c.Offset != 0)) {
			t.Fatalf("ParseConnect(%q): got %+v; resume must follow the epoch parameter", raw, c)
		}
		back := url.Values{"channel": c.Channels}
		if c.HasToken {
			back.Set("token", c.Token)
		}
		if c.Visitor != "" {
			back.Set("visitor", c.Visitor)
		}
		if c.Resume {
			back.Set("epoch", c.Epoch)
			back.Set("offset", strconv.FormatUint(c.Offset, 10))
		}
		again, err := frame.ParseConnect(back, 4)
		if err != nil || !equalConnect(again, c) {
			t.Fatalf("round trip of %q: got %+v, %v; want %+v", raw, again, err, c)
		}
	})
}
