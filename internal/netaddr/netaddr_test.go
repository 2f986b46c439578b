package netaddr

import (
	"net"
	"net/netip"
	"testing"
)

func TestOfAndParse(t *testing.T) {
	for _, tc := range []struct {
		a    net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 80}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 80}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 80}, "2001:db8::1"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "invalid IP"},
	} {
		if got := Of(tc.a).String(); got != tc.want {
			t.Errorf("Of(%v) = %s; want %s", tc.a, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"192.0.2.1:80":         "192.0.2.1",
		"[::ffff:192.0.2.1]:1": "192.0.2.1",
		"[2001:db8::1]:443":    "2001:db8::1",
		"2001:db8::1":          "2001:db8::1",
		"pipe":                 "invalid IP",
	} {
		if got := Parse(in).String(); got != want {
			t.Errorf("Parse(%q) = %s; want %s", in, got, want)
		}
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":              "192.0.2.1",
		"2001:db8:1:2:3:4:5:6":   "2001:db8:1:2::",
		"2001:db8:1:2:ffff::abc": "2001:db8:1:2::",
	} {
		if got := Key(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("Key(%s) = %s; want %s", in, got, want)
		}
	}
}

func TestIn(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::7/128")}
	for in, want := range map[string]bool{
		"10.1.2.3":    true,
		"11.0.0.1":    false,
		"2001:db8::7": true,
		"2001:db8::8": false,
		"2001:db8::":  false, // the /64 key of 2001:db8::7 is not the proxy
	} {
		if got := In(netip.MustParseAddr(in), nets); got != want {
			t.Errorf("In(%s) = %v; want %v", in, got, want)
		}
	}
}
