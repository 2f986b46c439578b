// Package wsframe holds the WebSocket frame header (RFC 6455 section 5.2)
// shared by the server's edge, which writes frames straight to sockets, and
// the load generator's client.
package wsframe

import "encoding/binary"

// Opcodes.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Header bits: FinBit in the first byte ends a message; MaskBit in the
// second marks a masked payload (every client-to-server frame).
const (
	FinBit  = 0x80
	MaskBit = 0x80
)

// MaxControlPayload is the largest payload of a control frame.
const MaxControlPayload = 125

// MaxHeader is the longest frame header: 2 bytes, 8 of length and 4 of
// masking key.
const MaxHeader = 14

// AppendHeader appends the header of a final frame with opcode and an
// n-byte payload, with the mask bit set if masked; the masking key, which
// follows, is the caller's.
func AppendHeader(b []byte, opcode byte, n int, masked bool) []byte {
	var mask byte
	if masked {
		mask = MaskBit
	}
	b = append(b, FinBit|opcode)
	switch {
	case n < 126:
		return append(b, mask|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, mask|126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, mask|127), uint64(n))
	}
}
