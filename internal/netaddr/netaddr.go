// Package netaddr is what the node's per-address limits share about a
// client's address: how to read it, the key one host counts under, and
// whether it is in a list of networks.
package netaddr

import (
	"net"
	"net/netip"
)

// Of returns the IP of a TCP address; anything else is the zero Addr,
// which counts as one address.
func Of(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Parse returns the IP of a host:port or a bare host; an unparsable one
// (not from a TCP listener) is the zero Addr, which counts as one address.
func Parse(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// Key is what ip counts as: itself, or its /64 for IPv6, the smallest
// network a host is usually given, so that one host cannot take a fresh
// address for each connection. Ask In of the address itself, not of its
// key: a /128 in a list names one address, not its /64.
func Key(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// In reports whether ip is in one of nets.
func In(ip netip.Addr, nets []netip.Prefix) bool {
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
