package frame

import (
	"strconv"
	"unicode/utf8"
)

// AppendCount appends a count frame:
// {"type":"count","connections":n,"visitors":v}.
func AppendCount(dst []byte, n, v int64) []byte {
	dst = append(dst, `{"type":"count","connections":`...)
	dst = strconv.AppendInt(dst, n, 10)
	dst = append(dst, `,"visitors":`...)
	dst = strconv.AppendInt(dst, v, 10)
	return append(dst, '}')
}

// AppendMessage appends a message frame:
// {"type":"message","id":…,"offset":n,"event":…,"channel":…,"data":…}.
// data must be valid JSON; an empty data is encoded as null.
func AppendMessage(dst []byte, id string, offset uint64, event, channel string, data []byte) []byte {
	dst = append(dst, `{"type":"message","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	dst = append(dst, `,"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"channel":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"data":`...)
	if len(data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// Recovery is what a welcome frame says of a resume.
type Recovery uint8

// The values of Recovery.
const (
	// NoResume: the connection did not ask to resume; the welcome has no
	// "recovered" field.
	NoResume Recovery = iota
	// Recovered: every message after the resume position follows.
	Recovered
	// NotRecovered: messages after the resume position are lost to the
	// connection; only live ones follow.
	NotRecovered
)

// AppendWelcome appends the frame that opens every connection:
// {"type":"welcome","epoch":…,"offset":n}, with "recovered":true|false
// when the connection asked to resume.
func AppendWelcome(dst []byte, epoch string, offset uint64, r Recovery) []byte {
	dst = append(dst, `{"type":"welcome","epoch":`...)
	dst = AppendString(dst, epoch)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	switch r {
	case Recovered:
		dst = append(dst, `,"recovered":true`...)
	case NotRecovered:
		dst = append(dst, `,"recovered":false`...)
	}
	return append(dst, '}')
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD, and U+2028 and U+2029 are escaped so the output is also valid
// JavaScript.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
