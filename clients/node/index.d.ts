// Type declarations for switchboard-client.

import type { ChannelCredentials, ChannelOptions, status as grpcStatus } from '@grpc/grpc-js';

/** Any value JSON can hold: what a message's data may be. */
export type JSONValue = string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue | undefined };

/** PEM bytes or text. */
export type PEM = string | Uint8Array;

export interface TLSOptions {
  /** CA certificates that signed the node's certificate. Default: the system's roots. */
  ca?: PEM;
  /** A client certificate, for a node that requires one (SWITCHBOARD_GRPC_CLIENT_CA). Needs key. */
  cert?: PEM;
  /** The private key of cert. */
  key?: PEM;
  /** The name the node's certificate must carry, when it is not the target's host. */
  servername?: string;
}

export interface ClientOptions {
  /** Sent as "authorization: Bearer <token>" with every call; empty sends nothing. Default: none. */
  token?: string;
  /** TLS: true verifies the node against the system's roots. Default: plaintext. */
  tls?: boolean | TLSOptions;
  /** Transport credentials of your own, in place of tls. */
  credentials?: ChannelCredentials;
  /** Deadline of each emit and count, retries included, in ms. Default: 5000. */
  deadlineMs?: number;
  /** Extra gRPC channel options, applied last. */
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** This call's deadline in ms, retries included. Default: the client's deadlineMs. */
  deadlineMs?: number;
  /** Aborting it cancels the call (CANCELLED). */
  signal?: AbortSignal;
}

export interface EmitOptions extends CallOptions {
  /** Only the subscribers of this channel receive the message. Default: every browser. */
  channel?: string;
  /**
   * The emit's idempotency key and the message id browsers see: 1 to 128 bytes of
   * printable UTF-8. A key the node saw in the last few minutes is not delivered again.
   * Default: a random 128-bit key, shared by the emit's retries.
   */
  key?: string;
}

export interface EmitResult {
  /** The message's id, as browsers receive it. */
  id: string;
  /** Browser connections on the node the message was queued to. */
  recipients: number;
  /** The key matched an earlier emit, which was not delivered again. */
  duplicate: boolean;
  /**
   * The message's position in the node's log, as browsers receive it ("offset"): one more
   * than the message before it. A duplicate has the first emit's.
   */
  offset: number;
}

export interface WatchOptions {
  /** Aborting it ends the watch, as close() does. */
  signal?: AbortSignal;
  /** Called each time the stream breaks and is about to be reopened. */
  onError?: (err: SwitchboardError, info: { retryInMs: number }) => void;
}

/** A watched count: see Client.watch. */
export declare class Watch {
  /**
   * Resolves once the watch is closed (close(), its signal, Client.close()); rejects with a
   * SwitchboardError when retrying cannot help: INVALID_ARGUMENT, UNAUTHENTICATED,
   * PERMISSION_DENIED, UNIMPLEMENTED.
   */
  readonly done: Promise<void>;
  /** Ends the watch. */
  close(): void;
}

/** Every failure of the client, with the gRPC status of the node's answer. */
export declare class SwitchboardError extends Error {
  /** The gRPC status code: compare with status.UNAVAILABLE and so on. */
  readonly code: grpcStatus;
  /** The code's name, such as "UNAVAILABLE". */
  readonly codeName: string;
  /** The node's message. */
  readonly details: string;
}

export declare class Client {
  /** The gRPC target. */
  readonly target: string;
  /**
   * Sends event with data to every browser, or to the subscribers of options.channel.
   * Retries UNAVAILABLE (a node down, draining, or a standby handing over) with backoff
   * from 50 ms to 2 s until the deadline, every attempt with the same idempotency key.
   * Data JSON cannot hold (NaN, a cycle) fails at once with INVALID_ARGUMENT.
   */
  emit(event: string, data?: unknown, options?: EmitOptions): Promise<EmitResult>;
  /** Open browser connections, or the subscribers of channel when it is not empty. */
  count(channel?: string, options?: CallOptions): Promise<number>;
  /**
   * Calls fn with the count at once, then with every change, until the watch is closed.
   * The stream is reopened whenever it breaks (the node restarts, drains, hands over), with
   * backoff from 100 ms to 5 s; fn is called only when the value changes.
   */
  watch(channel: string, fn: (count: number) => void, options?: WatchOptions): Watch;
  /** Closes the connection: calls in flight fail with CANCELLED, every watch ends. */
  close(): void;
}

/**
 * Returns an identity token for the browser of sub (1 to 128 bytes), a signed-in user: a JWT
 * signed with HS256 and secret (the nodes' SWITCHBOARD_TOKEN_SECRET), valid for ttlSeconds
 * (default 300). The page passes it to Switchboard.connect(urls, { token }) and counts as sub.
 * Throws a TypeError for an empty secret, a bad sub or ttl.
 */
export declare function mintToken(secret: string | Uint8Array, sub: string, ttlSeconds?: number): string;

/** Returns a client for target, such as "switchboard:9090"; the first call connects. */
export declare function connect(target: string, options?: ClientOptions): Client;

/** gRPC status codes, as SwitchboardError.code has them. */
export declare const status: typeof grpcStatus;

/** google.protobuf.Value in proto-loader's object form. */
export type ProtoValue =
  | { nullValue: 'NULL_VALUE' }
  | { stringValue: string }
  | { numberValue: number }
  | { boolValue: boolean }
  | { listValue: { values: ProtoValue[] } }
  | { structValue: { fields: { [key: string]: ProtoValue } } };

/** Converts a JSON value as JSON.stringify would; throws a TypeError for NaN, infinities or too deep nesting. */
export declare function toValue(v: unknown): ProtoValue;
/** Converts a decoded google.protobuf.Value back to a JSON value. */
export declare function fromValue(v: ({ kind?: string } & Record<string, unknown>) | null | undefined): JSONValue;

/** The path of the switchboard.v1 .proto the package ships. */
export declare const PROTO_PATH: string;
