package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"log/slog"
	"strings"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// serverOptions returns the interceptor chain every call passes:
// recovery, request id, Prometheus metrics (when m is not nil), logging,
// with a token bearer auth for all but health and reflection, and
// recovery again.
func serverOptions(log *slog.Logger, token string, m *grpcprom.ServerMetrics) []grpc.ServerOption {
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in gRPC handler", append([]any{"panic", p}, logging.ExtractFields(ctx)...)...)
		return status.Error(codes.Internal, "internal error")
	})
	logger := logging.LoggerFunc(func(ctx context.Context, l logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(l), msg, fields...)
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
	unary = append(unary, logging.UnaryServerInterceptor(logger, logOpts...))
	stream = append(stream, logging.StreamServerInterceptor(logger, logOpts...))
	if token != "" {
		authFn := bearerAuth(token)
		unary = append(unary, selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authFn), selector.MatchFunc(needsAuth)))
		stream = append(stream, selector.StreamServerInterceptor(auth.StreamServerInterceptor(authFn), selector.MatchFunc(needsAuth)))
	}
	unary = append(unary, recovery.UnaryServerInterceptor(onPanic))
	stream = append(stream, recovery.StreamServerInterceptor(onPanic))
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
}

// needsAuth exempts health checks and reflection, so probes and grpcurl
// work without the token.
func needsAuth(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName && !strings.HasPrefix(c.Service, "grpc.reflection.")
}

// bearerAuth accepts calls whose bearer token equals token, comparing in
// constant time.
func bearerAuth(token string) auth.AuthFunc {
	want := []byte(token)
	return func(ctx context.Context) (context.Context, error) {
		got, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return nil, status.Error(codes.Unauthenticated, "invalid API token")
		}
		return ctx, nil
	}
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
