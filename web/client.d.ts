// Type declarations for client.js, the Switchboard browser client: the
// global Switchboard of a plain <script>, the CommonJS module and the ES
// module (client.mjs) alike.

export = Switchboard;
export as namespace Switchboard;

declare namespace Switchboard {
  /** The connection's state; onState reports every change. */
  type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

  /** Socket server URLs: one, several in an array, or a comma-separated list; null or "" is "/ws". */
  type URLs = string | readonly string[] | null;

  /** An identity token (a JWT the site's web server signed), or a function that makes one. */
  type Token = string | (() => string | Promise<string>);

  /**
   * Backoff between reconnects: min(maxDelay, minDelay × factor^failures), with equal jitter;
   * and who the browser is.
   */
  interface Options {
    /** Milliseconds before the first reconnect. Default: 250. */
    minDelay?: number;
    /** Milliseconds the backoff grows to at most. Default: 10000. */
    maxDelay?: number;
    /** Growth of the backoff per failed attempt. Default: 2. */
    factor?: number;
    /**
     * The visitor's identity token; a function is called before every connect, so a page can
     * fetch a fresh one. Without one the browser counts by an anonymous id kept in localStorage.
     */
    token?: Token;
  }

  interface SubscribeOptions {
    /**
     * The channel's newest `last` messages (1 to 100) first, such as the current quotation,
     * and again after a reconnect that could not recover. Default: none.
     */
    last?: number;
  }

  /** A message frame, as handlers receive it beside its data. */
  interface Message<T = any> {
    type: 'message';
    /** Unique per message: the emit's idempotency key when it had one. */
    id: string;
    /** Its position in the node's log: one more than the message before it, across every channel. */
    offset: number;
    /** The emit's event name. */
    event: string;
    /** The channel it was emitted to; "" for a message to every connection. */
    channel: string;
    /** Any JSON value; null when the emit had none. */
    data: T;
  }

  /** Removes the handler it was returned for. */
  type Off = () => void;

  class Client {
    /** Connects at once; Switchboard.connect(urls, opts) is the same. */
    constructor(urls?: URLs, opts?: Options);
    /** The current state. */
    readonly state: State;
    /** The last online count received; null before the first. */
    readonly count: number | null;
    /** The distinct visitors of that count; null before the first. */
    readonly visitors: number | null;
    /** Calls fn(data, message) for every message of event ("*": every event). */
    on<T = any>(event: string, fn: (data: T, message: Message<T>) => void): Off;
    /** Calls fn with the online count and its distinct visitors, at once if they are known. */
    onCount(fn: (count: number, visitors: number) => void): Off;
    /** Calls fn on every change of state, at once with the current one. */
    onState(fn: (state: State) => void): Off;
    /**
     * Calls fn each time the client is back after a disconnect: recovered is true when every
     * message missed meanwhile has been delivered, false when some may be lost.
     */
    onReconnect(fn: (recovered: boolean) => void): Off;
    /** Joins channel, now and after every reconnect. */
    subscribe(channel: string, opts?: SubscribeOptions): void;
    /** Leaves channel. */
    unsubscribe(channel: string): void;
    /** Disconnects for good: the state becomes "closed". */
    close(): void;
  }

  /**
   * Opens a client to one or more socket server URLs ("wss://host/ws", "https://host/ws" or
   * "/ws"). Relative URLs, and the default "/ws", are resolved against a plain <script>'s own
   * src, else against the page.
   */
  function connect(urls?: URLs, opts?: Options): Client;
}
