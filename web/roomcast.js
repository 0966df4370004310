// roomcast.js: the browser client of the roomcast relay. A plain ES module
// with no dependencies and no build step; its API follows Socket.IO's:
//
//   import roomcast from '/roomcast.js';
//   const rc = roomcast.connect('', {token});
//   rc.on('chat', (data, envelope) => ...);
//   await rc.join('lobby');
//   await rc.to('lobby').emit('chat', {text: 'hi'});
//
// One multi-room Server-Sent Events stream carries every room; it falls back
// to long-polling where streams do not get through, resumes from the last
// cursor after every disconnect, and sends emits in order, exactly once.

const SYSTEM = 'roomcast:';
const LIFECYCLE = ['connect', 'disconnect', 'reconnect_attempt', 'reconnect', 'reset', 'transport', 'error'];
const SYSTEM_EVENTS = ['connected', 'joined', 'left', 'reset', 'closing', 'error', 'token-expiring'].map((n) => SYSTEM + n);

const defaults = {
  backoffMin: 500, // first reconnect delay, ms (doubles per failure, with jitter)
  backoffMax: 10000, // longest reconnect delay, ms
  connectTimeout: 4000, // a stream whose first event is later than this is taken for a buffering proxy
  sseFailures: 3, // stream attempts failing in a row before falling back to polling
  sseRetry: 60000, // how long to poll before trying a stream again (doubles up to 16x)
  pollTimeout: 25, // seconds a long-poll is held
  padding: 2048, // bytes of padding asked for on a stream's first attempt
  timeout: 30000, // ms a join(), leave(), emit() or presence() may stay pending before it rejects with code 'timeout'
  requestTimeout: 15000, // ms an HTTP request may take (a long-poll: this more than its hold)
  unreachableFailures: 5, // failed attempts in a row, lasting unreachableAfter, before an 'unreachable' error
  unreachableAfter: 300000, // ms
};

/** An error of the relay (code is its error code) or of the client. */
export class RoomcastError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.name = 'RoomcastError';
    this.code = code;
    this.status = status;
  }
}

/** backoff returns the delay before reconnect attempt n (0-based): exponential, capped, with jitter. */
export function backoff(n, min = defaults.backoffMin, max = defaults.backoffMax, random = Math.random) {
  const d = Math.min(max, min * 2 ** Math.min(n, 30));
  return Math.round(d / 2 + (random() * d) / 2);
}

/** retryAfter reads a Retry-After header (seconds or an HTTP date) as ms; undefined when absent or unreadable. */
export function retryAfter(value, now = Date.now()) {
  if (value == null || value === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** canonRoom is a room's canonical name: the default namespace has no prefix. */
export function canonRoom(room) {
  room = String(room);
  return room.startsWith('default:') ? room.slice(8) : room;
}

/** query builds a query string; arrays repeat the key, empty values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const x of [].concat(v)) if (x !== undefined && x !== null && x !== '') q.append(k, x);
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

const enc = encodeURIComponent;
// dots is a name that the relay refuses and that a URL path takes for "."
// or "..": /v1/users/../events is /v1/events to fetch, even encoded.
const dots = (name) => /^\.+$/.test(name);
const refuse = (code, what, name) => Promise.reject(new RoomcastError(code, `invalid ${what} ${JSON.stringify(name)}: not all dots`, 400));
const randomID = (n = 16) => {
  const b = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(b, (x) => 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_'[x & 63]).join('');
};
// TOKEN matches a bearer token (RFC 6750's token68).
const TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const isRoom = (room) => typeof room === 'string' && !room.startsWith('#');

// userOf returns a JWT's sub without verifying it: only to tell users'
// shared streams apart.
function userOf(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub || '';
  } catch {
    return '';
  }
}

// Link owns the relay connection: the transport, the rooms it is in, the
// queue of emits. Each Roomcast client has one, or, when tabs share, the
// leading tab has one for all of them. out receives what tabs must see:
// {t:'ev', env, cursor, kind} for events and {t:'life', name, arg, ...state}.
class Link {
  constructor(base, o, out, init = {}) {
    this.base = base;
    this.o = o;
    this.out = out;
    this.fetch = o.fetch || globalThis.fetch.bind(globalThis);
    this.ES = 'EventSource' in o ? o.EventSource : globalThis.EventSource;
    this.token = o.token;
    this.client = init.client || randomID();
    // proof proves client (the relay hands it out with the id): an id is
    // its first user's, and an anonymous client sends the proof to use
    // it again.
    this.proof = init.proof || null;
    this.cursor = init.cursor || null; // where to resume
    this.cursorKind = init.cursorKind || null; // 'sse' (a stream's id) or 'poll' (a poll's cursor)
    this.tabs = new Map(); // tab -> Set of rooms it joined
    this.names = new Set(); // event names tabs listen to
    this.confirmed = new Set(); // rooms the current connection is in
    this.waiters = []; // {room, join, res, rej}
    this.queue = [];
    this.seen = new Set(); // recent event ids, against duplicates on transport switches
    this.tabTokens = new Map();
    this.mode = this.ES ? 'sse' : 'poll';
    this.padding = true;
    this.sseFails = 0;
    this.sseRetry = o.sseRetry;
    this.conn = null; // the stream's connection id, or the poll's client token
    this.transport = null;
    this.state = 'connecting';
    this.everConnected = false;
    this.wakers = new Set();
    this.readers = []; // waiting for a connection
    this.reported = new Set(); // error codes told to the app since the last connection
    this.renewed = false; // getToken gave the token in use since the last connection
    this.closer = new AbortController(); // aborts every request under way when the client closes
    this.reconcileFails = 0; // joins and leaves in a row the relay could not take (503, 429, no answer)
  }

  get desired() {
    const all = new Set();
    for (const rooms of this.tabs.values()) for (const r of rooms) all.add(r);
    return all;
  }

  life(name, arg) {
    this.out({ t: 'life', name, arg, state: this.state, transport: this.transport, conn: this.conn, client: this.client, proof: this.proof });
  }

  // delay is how long to wait before retry n (0-based): the backoff, or
  // longer when the relay says so (Retry-After, reconnect_ms). Never
  // shorter: a proxy answering "Retry-After: 0" is not hammered.
  delay(n, wait) {
    return Math.max(wait ?? 0, backoff(n, this.o.backoffMin, this.o.backoffMax));
  }

  // report tells the app about a lasting problem with an error event, once
  // until a connection works again: the client keeps retrying meanwhile.
  report(code, message, cause) {
    if (this.reported.has(code)) return;
    this.reported.add(code);
    const err = new RoomcastError(code, message, cause?.status);
    if (cause) err.cause = cause;
    this.life('error', err);
  }

  start() {
    this.online = () => this.wake();
    globalThis.addEventListener?.('online', this.online);
    this.run();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    globalThis.removeEventListener?.('online', this.online);
    this.closer.abort();
    clearTimeout(this.tokenTimer);
    this.stop?.({ reason: 'client' });
    this.pollAbort?.abort();
    this.kick?.();
    this.wake();
    for (const r of this.readers.splice(0)) r();
    for (const it of this.queue.splice(0)) it.rej(new RoomcastError('closed', 'the client was closed'));
    for (const w of this.waiters.splice(0)) (w.join ? w.rej(new RoomcastError('closed', 'the client was closed')) : w.res());
  }

  // sleep waits ms, or less when woken (the browser came back online, or
  // the client closed).
  sleep(ms, signal) {
    return new Promise((res) => {
      const done = () => {
        clearTimeout(t);
        this.wakers.delete(done);
        signal?.removeEventListener('abort', done);
        res();
      };
      const t = setTimeout(done, ms);
      this.wakers.add(done);
      signal?.addEventListener('abort', done);
    });
  }

  wake() {
    for (const w of [...this.wakers]) w();
  }

  async run() {
    let failures = 0; // attempts in a row that never connected
    let attempt = 0; // reconnect attempts since the last disconnect
    let down = 0; // attempts in a row that did not reach the relay
    let downSince = 0;
    while (!this.closed) {
      let r;
      try {
        r = this.mode === 'sse' ? await this.stream() : await this.poll();
      } catch (e) {
        r = { reason: String(e) };
      }
      if (this.closed) return;
      if (r.opened) {
        failures = 0;
        attempt = 0;
      } else failures++;
      if (r.opened || r.refused || r.cors) down = 0;
      else if (!down++) downSince = Date.now();
      if (down >= this.o.unreachableFailures && Date.now() - downSince >= this.o.unreachableAfter) {
        this.report('unreachable', `the relay has not answered for ${Math.round((Date.now() - downSince) / 1000)} s; still trying`);
      }
      if (r.cors) {
        this.report('cors', `the relay at ${this.base} does not allow this page's origin (${globalThis.location?.origin}): add it to ROOMCAST_ALLOWED_ORIGINS; still trying`);
      }
      if (r.refused) await this.refused(r.refused);
      if (r.fatal) {
        this.state = 'closed';
        this.life('error', r.fatal);
        this.close();
        return;
      }
      if (this.mode === 'sse') {
        if (r.opened || r.unreachable) this.sseFails = 0;
        else this.sseFails++;
        if (r.timeout || this.sseFails >= this.o.sseFailures) {
          // A proxy buffers or blocks streams: poll, and try again later.
          this.mode = 'poll';
          this.sseFails = 0;
          this.padding = true;
          continue;
        }
      } else if (r.upgrade) {
        this.mode = 'sse';
        this.sseRetry = Math.min(this.sseRetry * 2, this.o.sseRetry * 16);
        continue;
      }
      if (r.refresh) await this.refreshToken().catch(() => {});
      // Even after a connection that worked, the first retry waits a
      // little: a relay or proxy that drops every stream at once is not
      // hammered, and clients that lost the same relay spread out.
      const delay = this.delay(Math.max(failures - 1, 0), r.delay);
      this.life('reconnect_attempt', ++attempt);
      await this.sleep(delay);
    }
  }

  // connected records a new connection and brings its rooms in line.
  connected(transport, conn, rooms) {
    const again = this.everConnected;
    this.conn = conn;
    this.state = 'connected';
    this.reported.clear();
    this.renewed = false;
    this.confirmed = new Set(rooms);
    if (transport !== this.transport) {
      this.transport = transport;
      this.life('transport', transport);
    }
    this.life('connect', { transport, client: this.client });
    if (again) this.life('reconnect', transport);
    this.everConnected = true;
    if (transport === 'sse') this.sseRetry = this.o.sseRetry;
    this.settle();
    this.reconcile();
    for (const r of this.readers.splice(0)) r();
  }

  disconnected(reason) {
    this.conn = null;
    this.state = 'connecting';
    this.confirmed = new Set();
    this.settle();
    this.life('disconnect', reason);
  }

  // whenConnected resolves once a connection other than `not` is up.
  async whenConnected(not, signal) {
    while (!this.closed && !signal?.aborted && (!this.conn || this.conn === not)) {
      await new Promise((res) => {
        this.readers.push(res);
        signal?.addEventListener('abort', res, { once: true });
      });
    }
    if (this.closed) throw new RoomcastError('closed', 'the client was closed');
  }

  // req makes one request to the relay, answering {ok, status, body, wait}
  // or, for a request that got no answer, {network, code}: 'timeout' after
  // timeout ms, 'cors' when the relay answers but not to this origin.
  async req(method, path, { body, headers = {}, signal, timeout = this.o.requestTimeout } = {}) {
    const h = { ...headers };
    if (this.token) h.Authorization = 'Bearer ' + this.token;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const ctl = new AbortController();
    const abort = () => ctl.abort();
    const timer = setTimeout(abort, timeout);
    signal?.addEventListener('abort', abort);
    this.closer.signal.addEventListener('abort', abort);
    let res, text;
    try {
      if (signal?.aborted || this.closed) throw new RoomcastError('aborted');
      res = await this.fetch(this.base + path, { method, headers: h, body, signal: ctl.signal, cache: 'no-store' });
      text = await res.text();
    } catch (e) {
      if (signal?.aborted || this.closed) return { aborted: true };
      if (ctl.signal.aborted) return { network: true, status: 0, code: 'timeout', message: `no answer within ${timeout} ms` };
      if (await this.refusedOrigin()) return { network: true, cors: true, status: 0, code: 'cors', message: String(e) };
      return { network: true, status: 0, code: 'network_error', message: String(e) };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
      this.closer.signal.removeEventListener('abort', abort);
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {}
    const r = { ok: res.ok, status: res.status, body: data, wait: retryAfter(res.headers.get('Retry-After')), key: res.headers.get('Idempotency-Key') };
    if (!res.ok) {
      r.code = data?.error?.code || 'http_' + res.status;
      r.message = data?.error?.message || res.statusText;
    }
    return r;
  }

  // refusedOrigin tells, after a request to another origin failed, whether
  // CORS refused it: the relay still answers a request that asks for no
  // CORS (its answer is opaque), where a relay that is down does not.
  async refusedOrigin() {
    const here = globalThis.location?.origin;
    if (!here || here === 'null' || !this.base || new URL(this.base, here).origin === here) return false;
    try {
      await this.fetch(this.base + '/readyz', { mode: 'no-cors', cache: 'no-store', signal: AbortSignal.timeout?.(this.o.requestTimeout) });
      return true;
    } catch {
      return false;
    }
  }

  // refused handles a refused credential: a new one from getToken for the
  // next attempt; the app hears of it once there is no getToken, or when
  // getToken fails or its token is refused too.
  async refused(r) {
    const cause = new RoomcastError(r.code, r.message, r.status);
    if (!this.o.getToken) {
      return this.report('unauthenticated', 'the relay refused the token (' + r.code + ') and there is no getToken; still trying', cause);
    }
    if (this.renewed) this.report('unauthenticated', 'the relay refused the token getToken gave (' + r.code + '); still trying', cause);
    try {
      await this.refreshToken();
      this.renewed = true;
    } catch (e) {
      this.report('unauthenticated', 'getToken failed: ' + (e?.message || e), e);
    }
  }

  // refreshToken asks getToken for a new token. A getToken that throws,
  // does not answer within requestTimeout, or gives something that is not
  // a token fails like a getToken that rejects: the client never hangs on
  // it, nor sends a stream or a request without the token it was given.
  refreshToken() {
    if (!this.o.getToken) return Promise.reject(new RoomcastError('invalid_token', 'the token was refused and there is no getToken'));
    this.refreshing ??= new Promise((res, rej) => {
      this.tokenTimer = setTimeout(() => rej(new RoomcastError('timeout', `getToken did not answer within ${this.o.requestTimeout} ms`)), this.o.requestTimeout);
      Promise.resolve()
        .then(() => this.o.getToken())
        .then(res, rej);
    }).then(
      (t) => {
        clearTimeout(this.tokenTimer);
        this.refreshing = null;
        if (typeof t !== 'string' || !TOKEN.test(t)) throw new RoomcastError('invalid_token', `getToken gave no token (${typeof t === 'string' ? 'a string that is not one' : typeof t})`);
        this.token = t;
      },
      (e) => {
        clearTimeout(this.tokenTimer);
        this.refreshing = null;
        throw e;
      },
    );
    return this.refreshing;
  }

  // deliver passes an event to the tabs, once; while a stream catches up,
  // its live events wait (held) behind the catch-up's.
  deliver(env, cursor, kind, catchingUp) {
    if (env.id) {
      if (this.seen.has(env.id)) return;
      this.seen.add(env.id);
      if (this.seen.size > 1000) this.seen.delete(this.seen.values().next().value);
    }
    if (cursor) {
      this.cursor = cursor;
      this.cursorKind = kind;
    }
    if (this.held && !catchingUp) this.held.push(env);
    else this.out({ t: 'ev', env, cursor: this.cursor, kind: this.cursorKind });
  }

  // stream runs one Server-Sent Events connection to its end.
  async stream() {
    let ticket;
    if (this.token) {
      const r = await this.req('POST', '/v1/tickets');
      if (this.closed) return {};
      if (r.ok) ticket = r.body.ticket;
      else if (r.status === 401) return { refused: r, unreachable: true };
      else if (r.network || r.status >= 500 || r.status === 429) return { unreachable: true, delay: r.wait, cors: r.cors };
      // A 404 is a relay without authentication; any other refusal is
      // final, rather than a silent fall back to an anonymous stream.
      else if (r.status !== 404) return { fatal: new RoomcastError(r.code, r.message, r.status) };
    }
    const resume = this.cursorKind === 'sse' ? this.cursor : null;
    const catchUp = this.cursorKind === 'poll' ? this.cursor : null;
    const url =
      this.base +
      '/v1/stream' +
      query({ room: [...this.desired], client: this.client, proof: this.proof, ticket, lastEventId: resume, padding: this.padding ? this.o.padding : null });
    this.padding = false;
    return new Promise((resolve) => {
      const es = new this.ES(url);
      let opened = false;
      const timer = setTimeout(() => finish({ timeout: true, reason: 'timeout' }), this.o.connectTimeout);
      const finish = (r) => {
        if (this.stop !== finish) return;
        this.stop = this.addName = null;
        clearTimeout(timer);
        es.close();
        if (opened) this.disconnected(r.reason);
        resolve({ opened, ...r });
      };
      this.stop = finish;
      const data = (e) => JSON.parse(e.data);
      const on = (name, fn) => es.addEventListener(name, (e) => this.stop === finish && fn(e));
      const event = (e) => {
        const env = data(e);
        this.deliver(env, e.lastEventId, 'sse');
      };
      on('roomcast:connected', async (e) => {
        const d = data(e);
        opened = true;
        clearTimeout(timer);
        this.sseFails = 0;
        if (d.proof) this.proof = d.proof;
        if (catchUp) this.held = [];
        this.connected('sse', d.connection, d.rooms);
        if (catchUp) await this.catchUp(catchUp, d.rooms);
      });
      const track = (e) => e.lastEventId && ((this.cursor = e.lastEventId), (this.cursorKind = 'sse'));
      on('roomcast:joined', track);
      on('roomcast:left', (e) => {
        track(e);
        const d = data(e);
        this.confirmed.delete(d.room);
        if (d.reason === 'forbidden') this.drop(d.room, new RoomcastError('forbidden', 'the token no longer allows ' + d.room));
        this.settle();
      });
      on('roomcast:reset', (e) => {
        track(e);
        this.life('reset', data(e));
      });
      on('roomcast:closing', (e) => {
        const d = data(e);
        if (d.reason === 'banned') finish({ fatal: new RoomcastError('banned', d.message, 403), reason: 'banned' });
        else {
          if (d.reason === 'client_in_use') {
            // Another caller holds the id now (the relay lost its binding):
            // the old proof would get a 409 EventSource cannot show, so go
            // on under a fresh id, as a refused poll does.
            this.client = randomID();
            this.proof = null;
          }
          finish({ reason: d.reason, delay: d.reconnect_ms, refresh: d.reason === 'token_expired' });
        }
      });
      on('roomcast:error', (e) => finish({ reason: data(e).code }));
      on('roomcast:token-expiring', () => this.extend());
      // EventSource would reconnect by itself with the spent ticket: this
      // client reconnects instead, with a fresh one.
      es.addEventListener('error', (e) => this.stop === finish && e.data === undefined && finish({ reason: 'transport error' }));
      this.addName = (n) => on(n, event);
      for (const n of this.names) this.addName(n);
    });
  }

  // catchUp delivers what a poll cursor missed before the stream started,
  // then the live events held meanwhile, each once.
  async catchUp(cursor, rooms) {
    for (let i = 0; i < 20 && cursor && rooms.length; i++) {
      const r = await this.req('GET', '/v1/poll' + query({ room: rooms, cursor, client: this.client, proof: this.proof, timeout: 0 }));
      if (!r.ok || !r.body.events.length) break;
      cursor = r.body.cursor;
      for (const env of r.body.events) this.deliver(env, null, null, true);
    }
    const held = this.held || [];
    this.held = null;
    for (const env of held) this.out({ t: 'ev', env, cursor: this.cursor, kind: this.cursorKind });
  }

  // extend sends a fresh token to the open stream before the old one expires.
  async extend() {
    if (!this.o.getToken || this.transport !== 'sse') return;
    const conn = this.conn;
    try {
      await this.refreshToken();
      const r = await this.req('POST', `/v1/connections/${enc(conn)}/token`);
      if (!r.ok && !this.closed) this.life('error', new RoomcastError(r.code, r.message, r.status));
    } catch (e) {
      if (!this.closed) this.report('unauthenticated', 'getToken failed: ' + (e?.message || e) + '; the stream ends when its token expires', e);
    }
  }

  // poll long-polls until an error, or until it is time to try a stream again.
  async poll() {
    let opened = false;
    const since = Date.now();
    for (;;) {
      if (this.closed) return { opened };
      if (this.ES && Date.now() - since > this.sseRetry) return { opened, upgrade: true, reason: 'upgrade' };
      const rooms = [...this.desired];
      if (!rooms.length && !this.token) {
        // Nothing to poll until a room is joined.
        await new Promise((res) => (this.kick = res));
        continue;
      }
      const quick = !this.cursor || this.quick;
      this.quick = false;
      this.pollAbort = new AbortController();
      const params = { cursor: this.cursor, client: this.client, proof: this.proof, timeout: quick ? 0 : this.o.pollTimeout };
      const path = rooms.length ? '/v1/poll' + query({ room: rooms, ...params }) : '/v1/users/me/poll' + query(params);
      this.kick = () => {
        this.quick = true;
        this.pollAbort.abort();
      };
      const started = Date.now();
      const r = await this.req('GET', path, { signal: this.pollAbort.signal, timeout: params.timeout * 1000 + this.o.requestTimeout });
      this.kick = null;
      if (r.aborted) continue;
      if (r.ok) {
        const d = r.body;
        this.proof = d.connection;
        if (!opened) {
          opened = true;
          this.connected('poll', d.connection, rooms);
        } else {
          this.conn = d.connection;
          this.confirmed = new Set(rooms);
          this.settle();
        }
        if (d.reset) this.life('reset', { reason: 'cursor_expired' });
        this.cursor = d.cursor;
        this.cursorKind = 'poll';
        for (const env of d.events) this.deliver(env);
        // A relay that answers held polls at once (it is draining) is not
        // polled in a tight loop.
        if (!quick && !d.events.length && Date.now() - started < 200) await this.sleep(1000);
        continue;
      }
      if (opened) this.disconnected(r.code);
      opened = false;
      if (r.code === 'client_in_use') {
        // The id is another caller's (or its proof was lost): go on
        // under a fresh one.
        this.client = randomID();
        this.proof = null;
        continue;
      }
      if (r.code === 'invalid_cursor') {
        this.cursor = null;
        this.life('reset', { reason: 'cursor_invalid' });
        continue;
      }
      if (r.status === 401) return { refused: r };
      if (r.code === 'banned') return { fatal: new RoomcastError(r.code, r.message, r.status) };
      if (r.status === 400 || r.status === 403 || r.status === 404) {
        // A room that was refused: the rooms not yet confirmed are dropped.
        const fresh = rooms.filter((x) => !this.confirmed.has(x));
        if (!fresh.length) return { fatal: new RoomcastError(r.code, r.message, r.status) };
        for (const room of fresh) this.drop(room, new RoomcastError(r.code, r.message, r.status));
        continue;
      }
      return { opened: false, delay: r.wait, reason: r.code, cors: r.cors };
    }
  }

  // Rooms. Each tab has its rooms; the connection is in their union.

  addTab(tab, rooms = [], names = []) {
    if (!this.tabs.has(tab)) this.tabs.set(tab, new Set(rooms));
    for (const n of names) this.on(n);
    this.changed();
  }

  removeTab(tab) {
    this.tabs.delete(tab);
    this.tabTokens.delete(tab);
    this.changed();
  }

  on(name) {
    if (this.names.has(name) || LIFECYCLE.includes(name) || SYSTEM_EVENTS.includes(name)) return;
    this.names.add(name);
    this.addName?.(name);
  }

  join(tab, room) {
    if (!this.tabs.has(tab)) this.tabs.set(tab, new Set());
    this.tabs.get(tab).add(room);
    return this.wait(room, true);
  }

  leave(tab, room) {
    this.tabs.get(tab)?.delete(room);
    return this.wait(room, false);
  }

  // wait resolves once the connection reflects the join or leave of room,
  // or rejects after the timeout; the room stays wanted (or not) meanwhile
  // and after, until the next join or leave of it.
  wait(room, join) {
    if (this.closed) return join ? Promise.reject(new RoomcastError('closed', 'the client was closed')) : Promise.resolve();
    const p = new Promise((res, rej) => {
      const w = { room, join };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        rej(new RoomcastError('timeout', `${join ? 'joining' : 'leaving'} ${room} was not confirmed within ${this.o.timeout} ms; the client keeps trying`));
      }, this.o.timeout);
      w.res = (v) => (clearTimeout(t), res(v));
      w.rej = (e) => (clearTimeout(t), rej(e));
      this.waiters.push(w);
    });
    this.changed();
    this.settle();
    return p;
  }

  changed() {
    if (this.mode === 'poll') this.kick?.();
    else this.reconcile();
  }

  // settle resolves the joins and leaves the connection now reflects; a
  // leave while disconnected is done at once.
  settle() {
    this.waiters = this.waiters.filter((w) => {
      if (w.join && !this.confirmed.has(w.room)) return true;
      if (!w.join && this.conn && this.confirmed.has(w.room) && !this.desired.has(w.room)) return true;
      w.res();
      return false;
    });
  }

  drop(room, err) {
    for (const rooms of this.tabs.values()) rooms.delete(room);
    this.waiters = this.waiters.filter((w) => w.room !== room || (w.join ? w.rej(err) : w.res(), false));
  }

  // reconcile joins and leaves rooms on the live stream, one request at a time.
  async reconcile() {
    if (this.closed) return;
    if (this.reconciling) return void (this.again = true);
    this.reconciling = true;
    try {
      do {
        this.again = false;
        const conn = this.conn;
        if (this.transport !== 'sse' || !conn) break;
        const want = this.desired;
        const todo = [...[...want].filter((r) => !this.confirmed.has(r)).map((r) => ['PUT', r]), ...[...this.confirmed].filter((r) => !want.has(r)).map((r) => ['DELETE', r])];
        for (const [method, room] of todo) {
          const r = await this.req(method, `/v1/connections/${enc(conn)}/rooms/${enc(room)}`);
          if (conn !== this.conn || this.closed) break;
          if (r.ok) {
            this.reconcileFails = 0;
            method === 'PUT' ? this.confirmed.add(room) : this.confirmed.delete(room);
          } else if (r.network || r.status >= 500 || r.status === 429) {
            this.sleep(this.delay(this.reconcileFails++, r.wait)).then(() => this.reconcile());
            break;
          } else if (r.code === 'unknown_connection') break; // the stream is gone; the next one catches up
          else if (method === 'PUT') this.drop(room, new RoomcastError(r.code, r.message, r.status));
          else this.confirmed.delete(room);
          this.settle();
        }
      } while (this.again);
    } finally {
      this.reconciling = false;
    }
  }

  presence(room) {
    return this.req('GET', `/v1/rooms/${enc(room)}/presence`).then((r) => {
      if (r.ok) return r.body;
      if (this.closed) throw new RoomcastError('closed', 'the client was closed');
      throw new RoomcastError(r.code, r.message, r.status);
    });
  }

  // Emits: in order, one at a time, each with its own Idempotency-Key.

  // emit queues an emit; it rejects with code 'timeout' when not taken by
  // the relay within the timeout. An emit whose request was under way
  // then may still have been published (once: its key is kept).
  emit(item) {
    if (this.closed) return Promise.reject(new RoomcastError('closed', 'the client was closed'));
    return new Promise((res, rej) => {
      const it = { ...item, abort: new AbortController() };
      const t = setTimeout(() => {
        it.abort.abort();
        rej(new RoomcastError('timeout', `the relay did not take the ${item.body.event} event within ${this.o.timeout} ms`));
      }, this.o.timeout);
      it.res = (v) => (clearTimeout(t), res(v));
      it.rej = (e) => (clearTimeout(t), rej(e));
      this.queue.push(it);
      this.pump();
    });
  }

  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    while (this.queue.length && !this.closed) {
      const it = this.queue[0];
      try {
        if (!it.abort.signal.aborted) it.res(await this.send(it));
      } catch (e) {
        it.rej(e);
      }
      this.queue.shift();
    }
    this.pumping = false;
  }

  async send(it) {
    let refreshed = false;
    const signal = it.abort.signal;
    for (let n = 0; ; n++) {
      if (this.closed) throw new RoomcastError('closed', 'the client was closed');
      if (signal.aborted) throw new RoomcastError('timeout', 'timed out');
      // Like Socket.IO's, a volatile event is dropped when it cannot go now.
      if (it.volatile && this.state !== 'connected') return null;
      const headers = { 'Idempotency-Key': it.key };
      let sender = this.conn;
      if (it.exclude === 'tab') sender = await this.tabToken(it.tab, it.room, signal);
      else if (it.exclude && !sender) {
        await this.whenConnected(null, signal);
        sender = this.conn;
        continue;
      }
      if (sender) headers['Roomcast-Connection'] = sender;
      const r = await this.req('POST', it.path, { body: JSON.stringify({ ...it.body, exclude_self: !!it.exclude }), headers, signal });
      if (r.ok) return r.body.id;
      if (r.aborted) continue;
      if (r.code === 'unknown_connection' && it.exclude !== 'tab') {
        if (it.volatile) return null;
        // Usually the stream died and a new one comes; but a stream that
        // lives on can be unknown for a while (Redis restarted empty, its
        // instance writes it again at the stream's next heartbeat): so
        // also try again after a backoff.
        const waking = new AbortController();
        const wake = () => waking.abort();
        signal.addEventListener('abort', wake, { once: true });
        await Promise.race([this.whenConnected(sender, waking.signal), this.sleep(this.delay(n), waking.signal)]);
        wake();
        signal.removeEventListener('abort', wake);
        continue;
      }
      // The relay could not tell whether it stored the event: the resend
      // carries the key it answered with, so that it is stored once.
      if (r.code === 'outcome_unknown' && r.key) it.key = r.key;
      if (r.network || r.status === 429 || r.status === 502 || r.status === 503 || r.status === 504) {
        if (it.volatile) return null;
        await this.sleep(this.delay(n, r.wait), signal);
        continue;
      }
      if (r.status === 401 && this.o.getToken && !refreshed) {
        refreshed = true;
        await this.refreshToken();
        continue;
      }
      throw new RoomcastError(r.code, r.message, r.status);
    }
  }

  // tabToken proves a tab's own client id, so that exclude_self skips only
  // that tab when tabs share one stream: a poll that does not wait binds
  // the tab's id to this client's caller and returns its proof.
  async tabToken(tab, room, signal) {
    if (this.tabTokens.has(tab)) return this.tabTokens.get(tab);
    for (let n = 0; ; n++) {
      if (this.closed) throw new RoomcastError('closed', 'the client was closed');
      if (signal.aborted) throw new RoomcastError('timeout', 'timed out');
      const r = await this.req('GET', '/v1/poll' + query({ room, client: this.client + '-' + tab, timeout: 0 }), { signal });
      if (r.aborted) continue;
      if (r.ok) {
        this.tabTokens.set(tab, r.body.connection);
        return r.body.connection;
      }
      if (!(r.network || r.status >= 500 || r.status === 429)) throw new RoomcastError(r.code, r.message, r.status);
      await this.sleep(this.delay(n, r.wait), signal);
    }
  }
}

// run calls op on link, as a promise whatever op returns.
const run = (link, op, args) => Promise.resolve().then(() => link[op](...args));

/** Roomcast is one client: a page's, or one tab's view of a stream it shares with other tabs. */
class Roomcast {
  constructor(url, o) {
    this.o = o = { ...defaults, ...o };
    this.base = String(url || globalThis.location?.origin || '').replace(/\/+$/, '');
    this.handlers = new Map();
    this.rooms = new Set();
    this.tab = randomID(8);
    this.seq = 0;
    this.connected = false;
    this.transport = null;
    this.id = null;
    this.broadcast = { to: (room) => this.target(room, true) };
    if (o.shareAcrossTabs && globalThis.navigator?.locks && globalThis.BroadcastChannel) this.share();
    else {
      this.link = new Link(this.base, o, (m) => this.receive(m));
      this.link.addTab(this.tab);
      this.link.start();
    }
  }

  /** on registers fn for an event (a published event name, or a lifecycle event). */
  on(name, fn) {
    if (!this.handlers.has(name)) {
      this.handlers.set(name, new Set());
      this.call('on', [name]);
    }
    this.handlers.get(name).add(fn);
    return this;
  }

  /** off removes fn, or every handler of name when fn is omitted. */
  off(name, fn) {
    if (fn) this.handlers.get(name)?.delete(fn);
    else this.handlers.delete(name);
    return this;
  }

  /** join enters room; the promise resolves once the relay confirmed it. */
  join(room) {
    room = canonRoom(room);
    if (dots(room)) return refuse('invalid_room', 'room', room);
    this.rooms.add(room);
    return this.call('join', [this.tab, room]);
  }

  /** leave leaves room; the promise resolves once the relay confirmed it. */
  leave(room) {
    room = canonRoom(room);
    if (dots(room)) return refuse('invalid_room', 'room', room);
    this.rooms.delete(room);
    return this.call('leave', [this.tab, room]);
  }

  /** to(room or [rooms]).emit(event, data) publishes to everyone there, this client included. */
  to(room) {
    return this.target(room, false);
  }

  target(room, exclude) {
    const rooms = [].concat(room).map(canonRoom);
    const path = rooms.length > 1 ? '/v1/events' : `/v1/rooms/${enc(rooms[0])}/events`;
    const bad = rooms.find(dots);
    const emit = (volatile) => (event, data) =>
      bad !== undefined ? refuse('invalid_room', 'room', bad) : this.send(path, { event, data, volatile, ...(rooms.length > 1 && { rooms }) }, exclude, rooms[0]);
    return { emit: emit(false), volatile: { emit: emit(true) } };
  }

  /** user(id).emit(event, data) sends a private event to every connection of user id. */
  user(id) {
    return { emit: (event, data) => (dots(String(id)) ? refuse('invalid_user', 'user', id) : this.send(`/v1/users/${enc(id)}/events`, { event, data }, false)) };
  }

  /** presence(room) resolves with {room, users, connections, members, anonymous}. */
  presence(room) {
    room = canonRoom(room);
    if (dots(room)) return refuse('invalid_room', 'room', room);
    return this.call('presence', [room]);
  }

  /** leading reports whether this tab holds the connection (always, unless tabs share one). */
  get leading() {
    return !!this.link;
  }

  /** close ends the connection for good. */
  close() {
    if (this.closed) return;
    // Goodbye first: post() sends nothing once the client is closed.
    if (this.channel) this.post({ t: 'bye', tab: this.tab });
    this.closed = true;
    if (this.channel) {
      this.channel.close();
      this.release?.();
      for (const p of this.pending.values()) p.rej(new RoomcastError('closed', 'the client was closed'));
      this.pending.clear();
    }
    this.link?.close();
  }

  disconnect() {
    this.close();
  }

  send(path, body, exclude, room) {
    const key = `rc-${this.tab}-${Date.now().toString(36)}-${++this.seq}-${randomID(6)}`;
    return this.call('emit', [{ path, body, key, exclude: exclude && (this.channel ? 'tab' : true), volatile: !!body.volatile, tab: this.tab, room }]);
  }

  // call runs op on the link, here or in the leading tab.
  call(op, args) {
    if (this.link) return this.link[op](...args);
    // A closed tab has no leader to ask; as a closed link does, it is done
    // with leaves (and listening) and refuses the rest.
    if (this.closed) return ['on', 'leave'].includes(op) ? Promise.resolve() : Promise.reject(new RoomcastError('closed', 'the client was closed'));
    return new Promise((res, rej) => {
      const id = this.tab + ++this.seq;
      // The leading tab times the operation out; this is for a leader
      // that never answers.
      const t = setTimeout(() => {
        this.pending.delete(id);
        rej(new RoomcastError('timeout', `no answer from the leading tab within ${this.o.timeout + this.o.requestTimeout} ms`));
      }, this.o.timeout + this.o.requestTimeout);
      this.pending.set(id, { op, args, res: (v) => (clearTimeout(t), res(v)), rej: (e) => (clearTimeout(t), rej(e)) });
      this.post({ t: 'rpc', id, tab: this.tab, op, args });
    });
  }

  receive(m) {
    if (m.t === 'life') {
      this.connected = m.state === 'connected';
      this.transport = m.transport;
      this.id = m.conn;
      this.client = m.client;
      this.proof = m.proof;
      return this.dispatch(m.name, m.arg);
    }
    const env = m.env;
    this.cursor = m.cursor;
    this.cursorKind = m.kind;
    if (LIFECYCLE.includes(env.event)) return;
    if (isRoom(env.room) && ![].concat(env.rooms || env.room).some((r) => this.rooms.has(r))) return;
    if (this.channel && env.client && env.client === this.client + '-' + this.tab) return;
    this.dispatch(env.event, env.data, env);
  }

  dispatch(name, ...args) {
    for (const fn of [...(this.handlers.get(name) || [])]) {
      try {
        fn(...args);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  // Sharing: the tab holding the Web Lock leads and holds the link; the
  // others talk to it over a BroadcastChannel. When the leader goes, the
  // next tab in line takes the lock and resumes from the last cursor.
  share() {
    const name = `roomcast ${this.base} ${this.o.token ? userOf(this.o.token) : ''}`;
    this.pending = new Map();
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (e) => this.message(e.data);
    this.post = (m) => !this.closed && this.channel.postMessage(m);
    navigator.locks.request(name, () => (this.closed ? null : new Promise((release) => ((this.release = release), this.lead()))));
    this.post({ t: 'hello', tab: this.tab, rooms: [], names: [] });
    globalThis.addEventListener?.('pagehide', () => this.close());
  }

  lead() {
    const link = new Link(this.base, this.o, (m) => {
      this.receive(m);
      this.post(m);
    }, { client: this.client, proof: this.proof, cursor: this.cursor, cursorKind: this.cursorKind });
    link.addTab(this.tab, this.rooms, this.handlers.keys());
    this.link = link;
    this.post({ t: 'leader', tab: this.tab });
    // Give the other tabs a moment to say which rooms they are in, so that
    // the resumed session does not leave rooms they still want.
    setTimeout(() => {
      if (this.closed) return;
      link.start();
      for (const p of this.pending.values()) run(link, p.op, p.args).then(p.res, p.rej);
      this.pending.clear();
    }, 50);
  }

  message(m) {
    if (this.link) {
      const link = this.link;
      if (m.t === 'hello') {
        link.addTab(m.tab, m.rooms, m.names);
        this.post({ t: 'state', to: m.tab, state: link.state, transport: link.transport, conn: link.conn, client: link.client, proof: link.proof, cursor: link.cursor, kind: link.cursorKind });
      } else if (m.t === 'bye') link.removeTab(m.tab);
      else if (m.t === 'rpc')
        run(link, m.op, m.args).then(
          (v) => this.post({ t: 'res', to: m.tab, id: m.id, ok: true, v }),
          (e) => this.post({ t: 'res', to: m.tab, id: m.id, code: e.code, message: e.message, status: e.status }),
        );
      return;
    }
    if (m.t === 'ev' || m.t === 'life') return this.receive(m);
    if (m.t === 'leader') {
      this.post({ t: 'hello', tab: this.tab, rooms: [...this.rooms], names: [...this.handlers.keys()] });
      for (const [id, p] of this.pending) this.post({ t: 'rpc', id, tab: this.tab, op: p.op, args: p.args });
    } else if (m.to !== this.tab) return;
    else if (m.t === 'res') {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (p) m.ok ? p.res(m.v) : p.rej(new RoomcastError(m.code, m.message, m.status));
    } else if (m.t === 'state') {
      Object.assign(this, { client: m.client, proof: m.proof, cursor: m.cursor, cursorKind: m.kind, transport: m.transport, id: m.conn });
      if (m.state === 'connected' && !this.connected) {
        this.connected = true;
        this.dispatch('transport', m.transport);
        this.dispatch('connect', { transport: m.transport, client: m.client });
      }
    }
  }
}

/** connect opens a client to the relay at url ('' for this page's origin). */
export function connect(url, options = {}) {
  return new Roomcast(url, options);
}

export default { connect };
