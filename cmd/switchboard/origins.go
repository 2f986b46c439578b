package main

import (
	"fmt"
	"path"
	"strings"
)

// parseOrigins parses the comma list of allowed origin patterns into dst,
// refusing a pattern that could never match a browser's Origin header: a
// malformed one, one with a path, or one whose scheme is neither http nor
// https. A bad pattern would otherwise show only as a 403 for every page
// from another origin.
func parseOrigins(dst *[]string) func(string) error {
	return func(s string) error {
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if err := checkOrigin(p); err != nil {
				return fmt.Errorf("%q %w", p, err)
			}
			out = append(out, p)
		}
		*dst = out
		return nil
	}
}

// checkOrigin reports why pattern can never match an Origin, as the edge
// matches them: "scheme://host[:port]" against the whole Origin, a pattern
// without a scheme against its host and port (see wsedge.Config).
func checkOrigin(pattern string) error {
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Errorf("is not a valid pattern (%v): patterns use path.Match syntax, such as *.example.com", err)
	}
	host := pattern
	if scheme, rest, ok := strings.Cut(pattern, "://"); ok {
		http, _ := path.Match(strings.ToLower(scheme), "http")
		https, _ := path.Match(strings.ToLower(scheme), "https")
		if !http && !https {
			return fmt.Errorf("has the scheme %s, which an Origin never has: an Origin is the page's, http:// or https://", scheme)
		}
		host = rest
	}
	if i := strings.IndexByte(host, '/'); i >= 0 {
		return fmt.Errorf("has a path (%s), which an Origin never has: want [scheme://]host[:port], such as https://example.com", host[i:])
	}
	if host == "" {
		return fmt.Errorf("has no host: want [scheme://]host[:port], such as https://example.com")
	}
	return nil
}
