// Type declarations of portcullis.js, the browser client of the Portcullis
// gateway (docs/CLIENT.md).

/** The subprotocol offered to the gateway: "portcullis.v1". */
export declare const PROTOCOL: 'portcullis.v1';

/** Connection states, as passed to onState. */
export declare const State: Readonly<{
  IDLE: 'idle';
  CONNECTING: 'connecting';
  OPEN: 'open';
  WAITING: 'waiting';
  CLOSED: 'closed';
}>;
export type StateName = (typeof State)[keyof typeof State];

/** What onState is told with each state. */
export interface StateInfo {
  /** connecting: consecutive failed attempts so far. waiting: the attempt number to come. */
  attempt?: number;
  /** waiting: milliseconds until the next attempt. */
  delay?: number;
  /** waiting, closed: the WebSocket close code that caused it. */
  code?: number | null;
  /** waiting, closed: the close reason or why the client gave up. */
  reason?: string;
  /** open: the gateway's session id and version. */
  session?: string | null;
  server?: string;
  /** closed: close() was called. */
  byClient?: boolean;
}

/** Error codes: the gateway's (docs/PROTOCOL.md) and the client's own. */
export type ErrorCode =
  | 'bad_request' | 'auth_failed' | 'forbidden' | 'rate_limited' | 'too_large' | 'unsupported' | 'internal'
  | 'policy' | 'closed' | 'no_fresh_token' | 'token_callback' | 'timeout' | 'bad_frame' | 'not_open'
  | (string & {});

/** An error reported through onError (or a rejected publish). */
export declare class PortcullisError extends Error {
  constructor(code: ErrorCode, message: string, opts?: { topic?: string | null; closeCode?: number | null; final?: boolean; cause?: unknown });
  readonly name: 'PortcullisError';
  /** The gateway's error code, or one of the client's. */
  code: ErrorCode;
  /** The topic the error is about, or null. */
  topic: string | null;
  /** The WebSocket close code, for errors caused by a close. */
  closeCode: number | null;
  /** True when the client stopped trying: the topic failed, or the connection closed for good. */
  final: boolean;
}

/** Back-off between attempts, in milliseconds: attempt n waits a uniform draw below min(cap, base·2ⁿ), at least min. */
export interface Backoff {
  /** default 1000 */
  base?: number;
  /** default 30000 */
  cap?: number;
  /** default 250 */
  min?: number;
}

export interface Options {
  /**
   * Called for every subscribe and resubscribe: the one-use token for topic
   * (mint a new one on every call), or null/undefined for a topic that needs none.
   */
  getToken?: (topic: string) => string | null | undefined | Promise<string | null | undefined>;
  /** Every event of a subscribed topic. */
  onMessage?: (topic: string, data: unknown) => void;
  /** Every connection state change. */
  onState?: (state: StateName, info: StateInfo) => void;
  /** Every refusal, close and failure. */
  onError?: (err: PortcullisError) => void;
  /** The gateway confirmed a (re)subscription. */
  onSubscribed?: (topic: string) => void;
  backoff?: Backoff;
  /** Milliseconds from opening the socket to the gateway's welcome (default 10000). */
  timeout?: number;
  /** auth_failed answers in a row, each retried with a fresh token, before a topic fails (default 2). */
  authRetries?: number;
}

export type TopicStatus = 'pending' | 'subscribing' | 'subscribed' | 'waiting' | 'failed';

export declare class Client {
  constructor(options?: Options);
  getToken: Options['getToken'] | null;
  onMessage: Options['onMessage'] | null;
  onState: Options['onState'] | null;
  onError: Options['onError'] | null;
  onSubscribed: Options['onSubscribed'] | null;
  /** The connection state. */
  readonly state: StateName;
  /** The gateway's session id of the current connection, or null. */
  readonly session: string | null;
  /** The topics wanted and their status. */
  topics(): Record<string, TopicStatus>;
  /** Opens the connection (ws://, wss://, or http(s):// and relative URLs taken as ws(s)://) and keeps it open until close(). */
  connect(url: string | URL): this;
  /** Subscribes now or once open, and again after every reconnect, each time with a token from getToken. */
  subscribe(topic: string, opts?: { userId?: string | number }): void;
  /** Stops receiving topic; false if it was not subscribed. */
  unsubscribe(topic: string): boolean;
  /** Publishes where the topic rule lets clients publish; resolves when the gateway took it. */
  publish(topic: string, data: unknown): Promise<void>;
  /** Closes and stops reconnecting; connect() starts again with the same topics. */
  close(): void;
}

/** Creates a Client with options and connects it to url. */
export declare function connect(url: string | URL, options?: Options): Client;
