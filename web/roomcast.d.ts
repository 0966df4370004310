// Type declarations of roomcast.js, the client of the roomcast relay.
// Checked with `tsc --strict` against typecheck/usage.ts (see tsconfig.json).

/** The transport a client is connected over. */
export type Transport = 'sse' | 'poll';

/** Who sent an event: set by the relay from the sender's token. */
export interface Sender {
  user: string;
  name?: string;
}

/** An event as the relay delivers it. */
export interface Envelope<T = unknown> {
  /** The event's id ("null" for a volatile event). */
  id: string | null;
  /** The room it reached this client through ("#user:ID" for a private event). */
  room: string;
  /** Every room of a multi-room publish. */
  rooms?: string[];
  event: string;
  /** The published data: JSON, or base64 text when encoding is "base64". */
  data: T;
  encoding?: 'base64';
  from: Sender | null;
  /** The client id of the sender's connection, when it named one. */
  client: string | null;
  /** When the relay accepted it, in ms since the epoch. */
  ts: number;
}

/** Options of connect(); every one is optional. */
export interface ConnectOptions {
  /** The user's JWT; none in open mode. */
  token?: string;
  /** Called for a new token when the relay refuses or is about to expire the one in use. */
  getToken?: () => string | Promise<string>;
  /** The tabs of one origin and user share one stream (needs Web Locks and BroadcastChannel). */
  shareAcrossTabs?: boolean;
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** The EventSource to use; undefined polls from the start (default: globalThis.EventSource). */
  EventSource?: (new (url: string) => EventSource) | undefined;
  /** First reconnect delay in ms, doubling per failure with jitter (500). */
  backoffMin?: number;
  /** Longest reconnect delay in ms (10000). */
  backoffMax?: number;
  /** A stream whose first event is later than this (ms) is taken for a buffering proxy (4000). */
  connectTimeout?: number;
  /** Stream attempts failing in a row before falling back to long-polling (3). */
  sseFailures?: number;
  /** How long to poll (ms) before trying a stream again, doubling up to 16 times (60000). */
  sseRetry?: number;
  /** Seconds a long-poll is held (25). */
  pollTimeout?: number;
  /** Bytes of padding asked for on a stream's first attempt (2048). */
  padding?: number;
  /** Ms a join(), leave(), emit() or presence() may stay pending before it rejects with code "timeout" (30000). */
  timeout?: number;
  /** Ms an HTTP request, or a getToken call, may take; a long-poll, this more than its hold (15000). */
  requestTimeout?: number;
  /** Failed attempts in a row that, lasting unreachableAfter, make an "unreachable" error (5). */
  unreachableFailures?: number;
  /** Ms; see unreachableFailures (300000). */
  unreachableAfter?: number;
}

/**
 * The code of a RoomcastError: the relay's error code (see docs/api.md), or
 * one of the client's own.
 */
export type ErrorCode =
  | 'unauthenticated' // the token is refused (error event; the client keeps trying)
  | 'cors' // the relay does not allow this page's origin (error event; the client keeps trying)
  | 'unreachable' // no answer for unreachableAfter ms (error event; the client keeps trying)
  | 'timeout' // a join, leave, emit or presence took longer than the timeout option
  | 'closed' // the client was closed
  | 'banned' // the user is banned: the client stopped
  | (string & {});

/** An error of the relay (code is its error code) or of the client. */
export class RoomcastError extends Error {
  constructor(code: ErrorCode, message?: string, status?: number);
  readonly code: ErrorCode;
  /** The HTTP status of the relay's answer, when there was one. */
  readonly status: number | undefined;
  /** For error events: what the relay or getToken answered last. */
  cause?: unknown;
}

/** A room's presence list. */
export interface Presence {
  room: string;
  users: number;
  connections: number;
  members: { user: string; name: string; connections: number }[];
  anonymous: number;
}

/** The data of roomcast:join and roomcast:leave. */
export interface PresenceChange {
  user: string;
  name?: string;
}

/** Lifecycle events and their arguments. */
export interface LifecycleEvents {
  connect: (info: { transport: Transport; client: string }) => void;
  disconnect: (reason: string) => void;
  reconnect_attempt: (attempt: number) => void;
  reconnect: (transport: Transport) => void;
  reset: (info: { reason: string; room?: string }) => void;
  transport: (transport: Transport) => void;
  /** Once per problem until a connection works again (see ErrorCode). */
  error: (error: RoomcastError) => void;
  'roomcast:join': (data: PresenceChange, envelope: Envelope<PresenceChange>) => void;
  'roomcast:leave': (data: PresenceChange, envelope: Envelope<PresenceChange>) => void;
}

/** Where emit publishes: a room, several rooms, or a user. */
export interface Target {
  /** Resolves with the event's id once the relay took it. */
  emit<T = unknown>(event: string, data?: T): Promise<string>;
  /** Best effort: resolves with null, and is dropped while disconnected. */
  volatile: { emit<T = unknown>(event: string, data?: T): Promise<string | null> };
}

/** One client: a page's, or one tab's view of a stream it shares with other tabs. */
export interface Roomcast {
  /** Whether a connection is up. */
  readonly connected: boolean;
  readonly transport: Transport | null;
  /** The connection's id (a stream's, or a poller's token). */
  readonly id: string | null;
  /** Whether this tab holds the connection (always, unless tabs share one). */
  readonly leading: boolean;
  on<K extends keyof LifecycleEvents>(name: K, fn: LifecycleEvents[K]): this;
  /** A published event: fn gets its data and its envelope. */
  on<T = any, N extends string = string>(name: N extends keyof LifecycleEvents ? never : N, fn: (data: T, envelope: Envelope<T>) => void): this;
  off(name: string, fn?: (...args: any[]) => void): this;
  /** Resolves once the relay confirmed the join. */
  join(room: string): Promise<void>;
  /** Resolves once the relay confirmed the leave. */
  leave(room: string): Promise<void>;
  /** Everyone in the room(s), this client included. */
  to(room: string | string[]): Target;
  /** Everyone in the room(s) but this client. */
  readonly broadcast: { to(room: string | string[]): Target };
  /** Every connection of a user. */
  user(id: string): { emit<T = unknown>(event: string, data?: T): Promise<string> };
  presence(room: string): Promise<Presence>;
  /** Ends the connection for good. */
  close(): void;
  disconnect(): void;
}

/** connect opens a client to the relay at url ('' for the page's origin; required outside a browser). */
export function connect(url: string, options?: ConnectOptions): Roomcast;

/** The delay before reconnect attempt n (0-based): exponential, capped, with jitter. */
export function backoff(n: number, min?: number, max?: number, random?: () => number): number;
/** A Retry-After header (seconds or an HTTP date) in ms; undefined when absent or unreadable. */
export function retryAfter(value: string | null | undefined, now?: number): number | undefined;
/** A room's canonical name: the default namespace has no prefix. */
export function canonRoom(room: string): string;
/** A query string; arrays repeat the key, empty values are left out. */
export function query(params: Record<string, unknown>): string;

declare const roomcast: { connect: typeof connect };
export default roomcast;
