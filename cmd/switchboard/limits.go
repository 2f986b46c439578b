package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// parseLimits reads the limit options into cfg through parse, which
// reports a bad value with its flag and variable.
func parseLimits(cfg *server.Config, parse func(name string, fn func(string) error)) {
	l := &cfg.Limits
	parse("max-conns", limitCount(&l.MaxConns))
	parse("max-conns-per-ip", limitCount(&l.MaxConnsPerIP))
	parse("max-conns-per-visitor", limitCount(&l.MaxConnsPerVisitor))
	parse("trusted-proxies", func(s string) (err error) {
		l.TrustedProxies, err = parsePrefixes(s)
		return err
	})
	parse("max-subscriptions", positiveInt(&cfg.Hub.MaxSubscriptions))
	parse("max-frame-bytes", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return errors.New("want a positive number of bytes")
		}
		if minimum := int64(len(largestSubscribe())); n < minimum {
			return fmt.Errorf("want at least %d bytes, the size of a subscribe frame to the longest channel", minimum)
		}
		l.MaxFrameBytes = n
		return nil
	})
	parse("frame-rate", func(s string) error {
		r, err := parseRate(s)
		if r == 0 {
			r = -1 // off
		}
		l.FrameRate = r
		return err
	})
	parse("frame-burst", positiveInt(&l.FrameBurst))
	parse("emit-rate", func(s string) (err error) {
		l.EmitRate, err = parseRate(s)
		return err
	})
	parse("emit-burst", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number of calls, or 0 for one second's worth")
		}
		l.EmitBurst = n
		return nil
	})
	parse("handshake-timeout", positiveDuration(&l.HandshakeTimeout))
	parse("max-http-conns", limitCount(&l.MaxHTTPConns))
	parse("max-http-conns-per-ip", limitCount(&l.MaxHTTPConnsPerIP))
	parse("max-grpc-conns", limitCount(&l.MaxGRPCConns))
	parse("max-grpc-conns-per-ip", limitCount(&l.MaxGRPCConnsPerIP))
	parse("max-grpc-streams", positiveInt(&l.MaxGRPCStreams))
	parse("idle-timeout", positiveDuration(&l.IdleTimeout))
	parse("max-header-bytes", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1024 {
			return errors.New("want a number of bytes, at least 1024")
		}
		l.MaxHeaderBytes = n
		return nil
	})
	parse("send-buffer", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number of bytes, or 0 for the system's")
		}
		l.SendBuffer = cmp.Or(n, -1)
		return nil
	})
	parse("max-queued-bytes", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return errors.New("want a number of bytes, or 0 for no limit")
		}
		cfg.Hub.MaxQueuedBytes = cmp.Or(n, -1)
		return nil
	})
	parse("public-metrics", func(s string) error {
		public, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		cfg.PrivateMetrics = !public
		return nil
	})
}

// largestSubscribe returns the largest subscribe frame a browser library
// sends: the longest channel, every byte of it one that JSON escapes
// (JSON.stringify and frame.AppendString alike), and the largest "last".
func largestSubscribe() []byte {
	b := []byte(`{"type":`)
	b = frame.AppendString(b, frame.OpSubscribe.String())
	b = append(b, `,"channel":`...)
	b = frame.AppendString(b, strings.Repeat(`"`, frame.MaxChannelLen))
	b = strconv.AppendInt(append(b, `,"last":`...), frame.MaxLast, 10)
	return append(b, '}')
}

// limitCount parses a count where 0 means no limit, stored as -1 since
// zero is a server.Config default.
func limitCount(dst *int) func(string) error {
	return func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number, or 0 for no limit")
		}
		if n == 0 {
			n = -1
		}
		*dst = n
		return nil
	}
}

func positiveInt(dst *int) func(string) error {
	return func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("want a positive number")
		}
		*dst = n
		return nil
	}
}

// parseRate parses "N/s", "N/m" or "N/h" (events per second, minute or
// hour; N may have a fraction) into events per second; "off" or "0" is 0.
func parseRate(s string) (float64, error) {
	if s == "off" || s == "0" {
		return 0, nil
	}
	errRate := errors.New("want a rate such as 100/s, 600/m or 1000/h, or off")
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, errRate
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || !(n > 0) || n > 1e9 {
		return 0, errRate
	}
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m", "min":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		return 0, errRate
	}
	return n / per.Seconds(), nil
}

// parsePrefixes parses a comma list of CIDRs; a bare address is a prefix
// of itself.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, errors.New("want a comma list of CIDRs such as 10.0.0.0/8,192.168.1.7")
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
