package server

import (
	"context"
	"crypto/rand"
	"log/slog"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rt/switchboard/internal/lograte"
)

// serverOptions returns the interceptor chain every call passes:
// recovery, request id, Prometheus metrics (when m is not nil), logging,
// and recovery again. The API token is checked before any of them, by
// grpcGuard. Finished calls are logged at most once a second for each
// method and code, with the number of calls since the last line, so that
// a caller repeating a bad call cannot flood the log.
func serverOptions(log *slog.Logger, m *grpcprom.ServerMetrics) []grpc.ServerOption {
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in gRPC handler", append([]any{"panic", p}, logging.ExtractFields(ctx)...)...)
		return status.Error(codes.Internal, "internal error")
	})
	calls := lograte.New(log, 0)
	logger := logging.LoggerFunc(func(ctx context.Context, l logging.Level, msg string, fields ...any) {
		if slog.Level(l) <= slog.LevelDebug {
			log.Log(ctx, slog.Level(l), msg, fields...)
			return
		}
		calls.LogKey(ctx, callKind(fields), slog.Level(l), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(callLevel),
	}

	unary := []grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(onPanic), unaryRequestID}
	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(onPanic), streamRequestID}
	if m != nil {
		unary = append(unary, m.UnaryServerInterceptor())
		stream = append(stream, m.StreamServerInterceptor())
	}
	unary = append(unary, logging.UnaryServerInterceptor(logger, logOpts...), recovery.UnaryServerInterceptor(onPanic))
	stream = append(stream, logging.StreamServerInterceptor(logger, logOpts...), recovery.StreamServerInterceptor(onPanic))
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
}

// callKind names a logged call by its method and code, from the logging
// interceptor's fields: the methods are the server's, so the kinds are
// few.
func callKind(fields []any) string {
	var service, method, code string
	for i := 0; i+1 < len(fields); i += 2 {
		v, _ := fields[i+1].(string)
		switch fields[i] {
		case logging.ServiceFieldKey:
			service = v
		case logging.MethodFieldKey:
			method = v
		case "grpc.code":
			code = v
		}
	}
	return service + "/" + method + " " + code
}

// RequestIDKey is the metadata key of a call's request id: taken from the
// caller's request metadata when it sends a usable one, generated
// otherwise, logged with the call as request_id and returned in the
// response header metadata.
const RequestIDKey = "x-request-id"

// maxRequestIDLen bounds a request id taken from a caller.
const maxRequestIDLen = 128

// requestID returns the caller's request id if it is usable (1 to 128
// printable ASCII characters, no spaces), or a new random one.
func requestID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(RequestIDKey); len(v) > 0 && validRequestID(v[0]) {
		return v[0]
	}
	return rand.Text()
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// withRequestID adds id to the logging fields of ctx.
func withRequestID(ctx context.Context, id string) context.Context {
	return logging.InjectFields(ctx, logging.Fields{"request_id", id})
}

func unaryRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id := requestID(ctx)
	// Failing to set the header (the call already ended) is harmless.
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDKey, id))
	return handler(withRequestID(ctx, id), req)
}

func streamRequestID(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id := requestID(ss.Context())
	_ = ss.SetHeader(metadata.Pairs(RequestIDKey, id))
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = withRequestID(ss.Context(), id)
	return handler(srv, w)
}

// callLevel is the level a finished call is logged at. Success, and the
// refusals a node makes by design (UNAVAILABLE while draining or passive,
// RESOURCE_EXHAUSTED past a limit), are debug: callers retry them in bulk,
// and grpc_server_handled_total counts them by code.
func callLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Unavailable, codes.ResourceExhausted:
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(c)
}
