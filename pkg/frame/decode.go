package frame

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// MaxChannelLen is the longest channel name, in bytes, that browsers and
// web servers may use.
const MaxChannelLen = 128

// Op is the action an inbound frame asks for.
type Op uint8

// The inbound operations.
const (
	OpSubscribe Op = iota + 1
	OpUnsubscribe
)

// String returns the op's wire name.
func (o Op) String() string {
	switch o {
	case OpSubscribe:
		return "subscribe"
	case OpUnsubscribe:
		return "unsubscribe"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// MaxLast is the most messages a subscribe frame may ask for with "last".
const MaxLast = 100

// Inbound is a decoded browser frame.
type Inbound struct {
	Op      Op
	Channel string
	// Last, for a subscribe, is how many of the channel's newest messages
	// to send first: 0 (none) or 1 to MaxLast.
	Last int
}

// ErrInvalid is wrapped by every error Decode returns: the frame breaks the
// protocol and the connection that sent it should be closed.
var ErrInvalid = errors.New("invalid frame")

// Decode parses one text frame sent by a browser. It accepts exactly the
// objects {"type":"subscribe"|"unsubscribe","channel":"name"}, and for a
// subscribe an optional "last":K with K an integer from 1 to MaxLast: each
// key spelled exactly so, once, and nothing but JSON white space after the
// object. Anything else yields an error wrapping
// ErrInvalid whose text is safe to send back as a close reason.
func Decode(p []byte) (Inbound, error) {
	if !utf8.Valid(p) {
		return Inbound{}, invalid("frame is not valid UTF-8")
	}
	// encoding/json alone is too lenient here: it matches keys without
	// regard to case, lets a repeated key win, and Decoder.More stops at a
	// stray '}' or ']'. So the object is walked token by token.
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Inbound{}, invalid("frame is not a JSON object")
	}
	var typ, channel string
	var haveType, haveChannel, haveLast bool
	var last json.Number
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Inbound{}, invalid("frame is not valid JSON")
		}
		key, _ := tok.(string) // inside an object, Token yields keys as strings
		tok, err = dec.Token()
		if err != nil {
			return Inbound{}, invalid("frame is not valid JSON")
		}
		val, ok := tok.(string)
		switch key {
		case "type":
			if haveType {
				return Inbound{}, invalid(`frame repeats "type"`)
			}
			if !ok {
				return Inbound{}, invalid(`frame "type" is not a string`)
			}
			typ, haveType = val, true
		case "channel":
			if haveChannel {
				return Inbound{}, invalid(`frame repeats "channel"`)
			}
			if !ok {
				return Inbound{}, invalid(`frame "channel" is not a string`)
			}
			channel, haveChannel = val, true
		case "last":
			if haveLast {
				return Inbound{}, invalid(`frame repeats "last"`)
			}
			n, ok := tok.(json.Number)
			if !ok {
				return Inbound{}, invalid(`frame "last" is not a number`)
			}
			last, haveLast = n, true
		default:
			return Inbound{}, invalid("frame has an unknown field")
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return Inbound{}, invalid("frame is not valid JSON")
	}
	for _, b := range p[dec.InputOffset():] {
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return Inbound{}, invalid("frame holds more than one JSON value")
		}
	}
	if !haveType {
		return Inbound{}, invalid(`frame has no "type"`)
	}
	var op Op
	switch typ {
	case "subscribe":
		op = OpSubscribe
	case "unsubscribe":
		op = OpUnsubscribe
	default:
		return Inbound{}, invalid("unknown frame type")
	}
	if !haveChannel {
		return Inbound{}, invalid(`frame has no "channel"`)
	}
	if err := ValidateChannel(channel); err != nil {
		return Inbound{}, err
	}
	in := Inbound{Op: op, Channel: channel}
	if haveLast {
		if op != OpSubscribe {
			return Inbound{}, invalid(`only a subscribe frame takes "last"`)
		}
		k, err := strconv.Atoi(string(last))
		if err != nil || k < 1 || k > MaxLast {
			return Inbound{}, invalid(fmt.Sprintf(`frame "last" must be an integer from 1 to %d`, MaxLast))
		}
		in.Last = k
	}
	return in, nil
}

// ValidateChannel reports whether name can be subscribed to: 1 to
// MaxChannelLen bytes of UTF-8 with no control or space characters.
func ValidateChannel(name string) error {
	if name == "" {
		return invalid("channel name is empty")
	}
	if len(name) > MaxChannelLen {
		return invalid("channel name is too long")
	}
	return ValidateName(name)
}

// ValidateName reports whether name is valid UTF-8 with no control or space
// characters, as channel and event names must be.
func ValidateName(name string) error {
	if !utf8.ValidString(name) {
		return invalid("name is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return invalid("name has a control or space character")
		}
	}
	return nil
}

type invalidError string

func (e invalidError) Error() string { return string(e) }
func (e invalidError) Unwrap() error { return ErrInvalid }

func invalid(reason string) error { return invalidError(reason) }
