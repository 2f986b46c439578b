package frame

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"

	"github.com/switchboard-rt/switchboard/pkg/identity"
)

// MaxEpochLen is the longest epoch a browser may name.
const MaxEpochLen = 64

// Connect is what a browser asks for in the query string of its upgrade
// to /ws.
type Connect struct {
	// Channels are subscribed at the upgrade, as subscribe frames would;
	// each once, in the order first named.
	Channels []string
	// Resume asks for every message after Offset in Epoch that the
	// connection is a recipient of, before the live ones.
	Resume bool
	Epoch  string
	Offset uint64
	// HasToken says the browser sent an identity token, Token; verifying
	// it is the edge's job.
	HasToken bool
	Token    string
	// Visitor is the browser's anonymous id, if it sent one: 1 to
	// identity.MaxVisitorIDLen of A-Z a-z 0-9 _ -.
	Visitor string
}

// ParseConnect reads the query of an upgrade: "channel" (repeated, at
// most maxChannels distinct ones), "epoch" with "offset" to resume, the
// identity "token" and the anonymous "visitor" id, each at most once.
// Other parameters are left to others. Any error wraps ErrInvalid and its
// text is safe to show the browser.
func ParseConnect(q url.Values, maxChannels int) (Connect, error) {
	var c Connect
	epochs, offsets := q["epoch"], q["offset"]
	switch {
	case len(epochs) > 1:
		return Connect{}, invalid(`"epoch" is given more than once`)
	case len(offsets) > 1:
		return Connect{}, invalid(`"offset" is given more than once`)
	case len(epochs) != len(offsets):
		return Connect{}, invalid(`"epoch" and "offset" go together: give both to resume, or neither`)
	case len(epochs) == 1:
		if err := validateEpoch(epochs[0]); err != nil {
			return Connect{}, err
		}
		off, err := parseOffset(offsets[0])
		if err != nil {
			return Connect{}, err
		}
		c.Resume, c.Epoch, c.Offset = true, epochs[0], off
	}
	switch tokens, visitors := q["token"], q["visitor"]; {
	case len(tokens) > 1:
		return Connect{}, invalid(`"token" is given more than once`)
	case len(visitors) > 1:
		return Connect{}, invalid(`"visitor" is given more than once`)
	default:
		if len(tokens) == 1 {
			c.HasToken, c.Token = true, tokens[0]
		}
		if len(visitors) == 1 {
			if err := identity.ValidateVisitorID(visitors[0]); err != nil {
				return Connect{}, invalid(err.Error())
			}
			c.Visitor = visitors[0]
		}
	}
	for _, ch := range q["channel"] {
		if err := ValidateChannel(ch); err != nil {
			return Connect{}, invalid(fmt.Sprintf("invalid channel parameter: %v", err))
		}
		// Past one too many, more names change nothing: the look-up
		// for duplicates stays bounded however long the query.
		if len(c.Channels) <= maxChannels && !slices.Contains(c.Channels, ch) {
			c.Channels = append(c.Channels, ch)
		}
	}
	if len(c.Channels) > maxChannels {
		return Connect{}, invalid(fmt.Sprintf("too many channels: at most %d", maxChannels))
	}
	return c, nil
}

// validateEpoch accepts 1 to MaxEpochLen letters, digits, '-', '_' or '.':
// the epochs nodes make, and nothing a log line or a frame must escape.
func validateEpoch(e string) error {
	if e == "" || len(e) > MaxEpochLen {
		return invalid(fmt.Sprintf(`"epoch" must be 1 to %d characters`, MaxEpochLen))
	}
	for i := range len(e) {
		b := e[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.') {
			return invalid(`"epoch" may hold only letters, digits, '-', '_' and '.'`)
		}
	}
	return nil
}

// parseOffset accepts a non-negative decimal integer that fits 64 bits.
func parseOffset(s string) (uint64, error) {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, invalid(`"offset" must be a non-negative integer`)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, invalid(`"offset" must be a non-negative integer below 2^64`)
	}
	return n, nil
}
