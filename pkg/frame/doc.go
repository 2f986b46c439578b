// Package frame is the browser wire format: one JSON object per WebSocket
// text frame. It encodes the server's frames by appending to a caller's
// buffer, so a broadcast is encoded once, and it strictly decodes the frames
// browsers send. It does no I/O.
package frame
