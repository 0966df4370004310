// Tests of roomcast.js that need no browser: run with `node --test web/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import roomcast, { backoff, retryAfter, canonRoom, query, RoomcastError } from '../roomcast.js';

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.' + Buffer.from(JSON.stringify({ sub: 'dev-alice' })).toString('base64url') + '.sig';

// open connects a client to a fake relay over a fake EventSource and waits
// until its first stream exists.
async function open(relay, options = {}) {
  FakeEventSource.reset();
  const rc = roomcast.connect('http://relay.test/', { ...fast, fetch: relay.fetch, EventSource: FakeEventSource, ...options });
  const seen = [];
  for (const name of ['connect', 'disconnect', 'reconnect_attempt', 'reconnect', 'reset', 'transport', 'error']) {
    rc.on(name, (arg) => seen.push([name, arg]));
  }
  rc.seen = seen;
  await until('a stream is opened', () => FakeEventSource.all.length > 0);
  return rc;
}

test('backoff grows exponentially, is capped and jittered', () => {
  const cases = [
    [0, () => 0, 250],
    [0, () => 1, 500],
    [1, () => 1, 1000],
    [3, () => 1, 4000],
    [10, () => 1, 10000],
    [10, () => 0, 5000],
    [1000, () => 1, 10000],
  ];
  for (const [n, random, want] of cases) assert.equal(backoff(n, 500, 10000, random), want, `attempt ${n}`);
  for (let n = 0; n < 8; n++) {
    const d = backoff(n);
    const cap = Math.min(10000, 500 * 2 ** n);
    assert.ok(d >= cap / 2 && d <= cap, `attempt ${n}: ${d} outside [${cap / 2}, ${cap}]`);
  }
});

test('retryAfter reads seconds and HTTP dates', () => {
  const now = Date.parse('2026-11-25T10:00:00Z');
  assert.equal(retryAfter('2', now), 2000);
  assert.equal(retryAfter('Wed, 25 Nov 2026 10:00:05 GMT', now), 5000);
  assert.equal(retryAfter('Wed, 25 Nov 2026 09:00:00 GMT', now), 0);
  assert.equal(retryAfter(null, now), undefined);
  assert.equal(retryAfter('soon', now), undefined);
});

test('room names and query strings', () => {
  assert.equal(canonRoom('default:lobby'), 'lobby');
  assert.equal(canonRoom('chat:general'), 'chat:general');
  assert.equal(query({ room: ['a', 'b c'], cursor: null, client: 'x', padding: 0, ticket: undefined }), '?room=a&room=b+c&client=x&padding=0');
  assert.equal(query({}), '');
});

test('a stream is opened with a fresh ticket, never with the token in the URL', async () => {
  const relay = new FakeRelay();
  const rc = await open(relay, { token: TOKEN });
  const es = FakeEventSource.last();
  assert.equal(relay.sent('POST', '/v1/tickets')[0].headers.Authorization, 'Bearer ' + TOKEN);
  assert.equal(es.query.get('ticket'), 't1');
  assert.equal(es.query.get('padding'), '2048', 'the first attempt asks for padding');
  assert.ok(!es.url.includes(TOKEN));
  assert.match(es.query.get('client'), /^[A-Za-z0-9_-]{16}$/);
  es.send('roomcast:connected', { connection: 'c1', client: es.query.get('client'), rooms: [] });
  await until('connected', () => rc.connected);
  assert.deepEqual(rc.seen.slice(0, 2), [['transport', 'sse'], ['connect', { transport: 'sse', client: es.query.get('client') }]]);
  assert.equal(rc.id, 'c1');
  rc.close();
});

test('open mode without a token connects without a ticket', async () => {
  const relay = new FakeRelay();
  const rc = await open(relay);
  assert.equal(relay.sent('POST', '/v1/tickets').length, 0);
  assert.equal(FakeEventSource.last().query.get('ticket'), null);
  rc.close();
});

test('join and leave resolve once the relay answered, and events reach handlers with their envelope', async () => {
  let answer;
  const relay = new FakeRelay({
    'PUT /v1/connections/*': () => new Promise((res) => (answer = () => res(new Response(null, { status: 204 })))),
    'DELETE /v1/connections/*': () => new Response(null, { status: 204 }),
  });
  const rc = await open(relay);
  const es = FakeEventSource.last();
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  const got = [];
  rc.on('chat', (data, env) => got.push([data, env.room, env.id]));
  let joined = false;
  const p = rc.join('default:lobby').then(() => (joined = true));
  await until('the PUT is sent', () => answer);
  assert.equal(relay.sent('PUT', '/v1/connections/')[0].path, '/v1/connections/c1/rooms/lobby');
  await tick(5);
  assert.equal(joined, false, 'join resolved before the relay answered');
  answer();
  await p;
  es.send('roomcast:joined', { room: 'lobby' }, 'cur-1');
  es.send('chat', envelope('lobby', 'chat', { text: 'hi' }, { id: 'e-1' }), 'cur-2');
  es.send('chat', envelope('elsewhere', 'chat', { text: 'not mine' }, { id: 'e-2' }), 'cur-3');
  assert.deepEqual(got, [[{ text: 'hi' }, 'lobby', 'e-1']]);
  await rc.leave('lobby');
  assert.equal(relay.sent('DELETE', '/v1/connections/')[0].path, '/v1/connections/c1/rooms/lobby');
  rc.close();
});

test('emits go in order, one at a time, each retried with its key until the relay takes it once', async () => {
  const published = new Map(); // key -> id
  let inFlight = 0;
  let maxInFlight = 0;
  let failures = [
    () => Promise.reject(new TypeError('network down')),
    () => error(503, 'backbone_unavailable', { 'Retry-After': '0' }),
    (req) => error(503, 'outcome_unknown', { 'Retry-After': '0', 'Idempotency-Key': req.headers['Idempotency-Key'] }),
  ];
  const relay = new FakeRelay({
    'POST /v1/rooms/*': async (req) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await tick(2);
      inFlight--;
      const key = req.headers['Idempotency-Key'];
      if (req.body.data === 'first' && failures.length) return failures.shift()(req);
      if (!published.has(key)) published.set(key, 'id-' + (published.size + 1));
      return json(202, { id: published.get(key), room: 'lobby', event: req.body.event });
    },
  });
  const rc = await open(relay);
  const ids = await Promise.all(['first', 'second', 'third'].map((d) => rc.to('lobby').emit('chat', d)));
  assert.deepEqual(ids, ['id-1', 'id-2', 'id-3']);
  assert.equal(maxInFlight, 1, 'emits overlapped');
  const posts = relay.sent('POST', '/v1/rooms/lobby/events');
  assert.deepEqual(posts.map((r) => r.body.data), ['first', 'first', 'first', 'first', 'second', 'third']);
  const keys = posts.map((r) => r.headers['Idempotency-Key']);
  assert.equal(new Set(keys.slice(0, 4)).size, 1, 'retries must reuse the key');
  assert.equal(new Set(keys).size, 3);
  assert.equal(published.size, 3, 'published more than once');
  assert.deepEqual(posts[0].body, { event: 'chat', data: 'first', volatile: false, exclude_self: false });
  rc.close();
});

test('an emit whose outcome is unknown is resent with the key the relay answered with, and stored once', async () => {
  const stored = new Map(); // key -> id, as the relay's backbone keeps them
  let first = true;
  const relay = new FakeRelay({
    'POST /v1/rooms/*': (req) => {
      if (first) {
        // Stored, but the answer could not say so.
        first = false;
        stored.set('rt_relay-token', 'id-1');
        return error(503, 'outcome_unknown', { 'Retry-After': '0', 'Idempotency-Key': 'rt_relay-token' });
      }
      const key = req.headers['Idempotency-Key'];
      if (!stored.has(key)) stored.set(key, 'id-' + (stored.size + 1));
      return json(202, { id: stored.get(key), room: 'lobby', event: req.body.event });
    },
  });
  const rc = await open(relay);
  assert.equal(await rc.to('lobby').emit('chat', 'once'), 'id-1');
  const posts = relay.sent('POST', '/v1/rooms/lobby/events');
  assert.equal(posts.length, 2);
  assert.equal(posts[1].headers['Idempotency-Key'], 'rt_relay-token', 'the resend must carry the key of the 503 answer');
  assert.equal(stored.size, 1, 'the event was stored twice');
  rc.close();
});

test('an emit refused unknown_connection while its stream lives on is retried, not parked until the next connection', async () => {
  // Redis restarted without persistence: the live stream's proof is
  // unknown on other instances until its instance writes it again, at
  // the stream's next heartbeat. No new connection comes: the stream is fine.
  let refusals = 2;
  const relay = new FakeRelay({
    'POST /v1/rooms/*': () => (refusals-- > 0 ? error(404, 'unknown_connection') : json(202, { id: 'id-1', room: 'lobby', event: 'chat' })),
  });
  const rc = await open(relay, { timeout: 1000 });
  FakeEventSource.last().send('roomcast:connected', { connection: 'c9', client: 'cl', proof: 'cl.secret-secret', rooms: ['lobby'] });
  await tick(5);
  assert.equal(await rc.broadcast.to('lobby').emit('chat', 'hi'), 'id-1');
  assert.equal(relay.sent('POST', '/v1/rooms/').length, 3);
  rc.close();
});

test('Retry-After of a 503 is honoured', async () => {
  let first = true;
  const relay = new FakeRelay({
    'POST /v1/rooms/*': () => {
      if (first) {
        first = false;
        return error(503, 'draining', { 'Retry-After': '1' });
      }
      return json(202, { id: 'id-1' });
    },
  });
  const rc = await open(relay);
  const start = Date.now();
  assert.equal(await rc.to('lobby').emit('chat', 'x'), 'id-1');
  assert.ok(Date.now() - start >= 950, `retried after ${Date.now() - start} ms, before Retry-After`);
  rc.close();
});

test("an emit the relay refuses rejects with the relay's code, without a retry", async () => {
  const relay = new FakeRelay({ 'POST /v1/rooms/*': () => error(403, 'forbidden') });
  const rc = await open(relay);
  await assert.rejects(rc.to('admin:x').emit('chat', 'x'), (e) => e instanceof RoomcastError && e.code === 'forbidden' && e.status === 403);
  assert.equal(relay.sent('POST', '/v1/rooms/').length, 1);
  assert.equal(relay.sent('POST', '/v1/rooms/')[0].path, '/v1/rooms/admin%3Ax/events');
  rc.close();
});

test('broadcast excludes this connection; volatile emits are dropped while disconnected', async () => {
  const relay = new FakeRelay({ 'POST /v1/*': (req) => json(202, { id: req.body.volatile ? null : 'id-1' }) });
  const rc = await open(relay);
  assert.equal(await rc.to('lobby').volatile.emit('typing', true), null);
  assert.equal(relay.sent('POST', '/v1/').length, 0, 'a volatile emit was sent while disconnected');
  const sent = rc.broadcast.to('lobby').emit('chat', 'hi'); // waits for the connection
  await tick(5);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c9', client: 'cl', rooms: ['lobby'] });
  assert.equal(await sent, 'id-1');
  let [post] = relay.sent('POST', '/v1/rooms/');
  assert.equal(post.headers['Roomcast-Connection'], 'c9');
  assert.equal(post.body.exclude_self, true);
  await rc.broadcast.to('lobby').volatile.emit('typing', true);
  post = relay.sent('POST', '/v1/rooms/')[1];
  assert.deepEqual([post.body.volatile, post.body.exclude_self], [true, true]);
  await rc.user('dev-bob').emit('pm', { text: 'psst' });
  await rc.to(['a', 'b']).emit('news', 1);
  assert.equal(relay.sent('POST', '/v1/users/')[0].path, '/v1/users/dev-bob/events');
  assert.deepEqual(relay.sent('POST', '/v1/events')[0].body.rooms, ['a', 'b']);
  rc.close();
});

test('roomcast:closing reconnects after reconnect_ms from the last cursor, with a fresh ticket', async () => {
  const relay = new FakeRelay();
  const rc = await open(relay, { token: TOKEN });
  rc.on('chat', () => {});
  let es = FakeEventSource.last();
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  es.send('chat', envelope('lobby', 'chat', 'a', { id: 'e-1' }), 'cursor-1');
  const closedAt = Date.now();
  es.send('roomcast:closing', { reason: 'shutdown', message: 'bye', reconnect_ms: 80 });
  assert.ok(es.closed);
  await until('a second stream', () => FakeEventSource.all.length === 2);
  assert.ok(Date.now() - closedAt >= 75, 'reconnected before reconnect_ms');
  es = FakeEventSource.last();
  assert.equal(es.query.get('lastEventId'), 'cursor-1');
  assert.equal(es.query.get('ticket'), 't2');
  assert.equal(es.query.get('padding'), null, 'only the first attempt asks for padding');
  es.send('roomcast:connected', { connection: 'c2', client: 'cl', rooms: [] });
  await until('reconnected', () => rc.seen.some(([n]) => n === 'reconnect'));
  assert.deepEqual(
    rc.seen.map(([n]) => n),
    ['transport', 'connect', 'disconnect', 'reconnect_attempt', 'connect', 'reconnect'],
  );
  assert.equal(rc.id, 'c2');
  rc.close();
});

test("the client id's proof from roomcast:connected goes with the next stream, so an anonymous client keeps its id", async () => {
  const relay = new FakeRelay();
  const rc = await open(relay);
  let es = FakeEventSource.last();
  const client = es.query.get('client');
  assert.equal(es.query.get('proof'), null, 'no proof before the relay gave one');
  es.send('roomcast:connected', { connection: 'c1', client, proof: client + '.s1', rooms: [] });
  es.send('roomcast:closing', { reason: 'shutdown', message: 'bye', reconnect_ms: 1 });
  await until('a second stream', () => FakeEventSource.all.length === 2);
  es = FakeEventSource.last();
  assert.equal(es.query.get('client'), client);
  assert.equal(es.query.get('proof'), client + '.s1');
  rc.close();
});

test('a stream closed with client_in_use goes on under a fresh id, without the old proof', async () => {
  const relay = new FakeRelay();
  const rc = await open(relay);
  let es = FakeEventSource.last();
  const client = es.query.get('client');
  es.send('roomcast:connected', { connection: 'c1', client, proof: client + '.s1', rooms: [] });
  // The relay lost the binding (a Redis restart) and another caller took
  // the id: the old proof would be refused with a 409 that EventSource
  // cannot show.
  es.send('roomcast:closing', { reason: 'client_in_use', message: 'the client id is another caller\'s', reconnect_ms: 1 });
  await until('a second stream', () => FakeEventSource.all.length === 2);
  es = FakeEventSource.last();
  assert.notEqual(es.query.get('client'), client);
  assert.match(es.query.get('client'), /^[A-Za-z0-9_-]{16}$/);
  assert.equal(es.query.get('proof'), null);
  rc.close();
});

test('a poll refused with client_in_use goes on under a fresh id, then sends that id\'s proof', async () => {
  let refused = false;
  const relay = new FakeRelay({
    'GET /v1/poll': (req) => {
      if (!refused) {
        refused = true;
        return error(409, 'client_in_use');
      }
      const client = req.query.get('client');
      return json(200, { events: [], cursor: 'p0', client, connection: client + '.s2' });
    },
  });
  const rc = roomcast.connect('http://relay.test', { ...fast, fetch: relay.fetch, EventSource: undefined });
  await rc.join('lobby');
  await until('three polls', () => relay.sent('GET', '/v1/poll').length >= 3);
  const [first, second, third] = relay.sent('GET', '/v1/poll');
  assert.notEqual(second.query.get('client'), first.query.get('client'));
  assert.equal(second.query.get('proof'), null);
  assert.equal(third.query.get('client'), second.query.get('client'));
  assert.equal(third.query.get('proof'), second.query.get('client') + '.s2');
  rc.close();
});

test('a banned client stops; a reset is surfaced', async () => {
  const relay = new FakeRelay();
  const rc = await open(relay);
  const es = FakeEventSource.last();
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  es.send('roomcast:reset', { reason: 'cursor_expired', room: 'lobby' }, 'cursor-5');
  assert.deepEqual(rc.seen.find(([n]) => n === 'reset'), ['reset', { reason: 'cursor_expired', room: 'lobby' }]);
  es.send('roomcast:closing', { reason: 'banned', message: 'this user is banned' });
  await until('an error', () => rc.seen.some(([n]) => n === 'error'));
  assert.equal(rc.seen.find(([n]) => n === 'error')[1].code, 'banned');
  await tick(30);
  assert.equal(FakeEventSource.all.length, 1, 'a banned client reconnected');
  assert.equal(rc.connected, false);
});

test('token-expiring: getToken is called and the stream extended without reconnecting', async () => {
  const relay = new FakeRelay({ 'POST /v1/connections/*': () => new Response(null, { status: 204 }) });
  const rc = await open(relay, { token: TOKEN, getToken: async () => 'fresh-token' });
  const es = FakeEventSource.last();
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  es.send('roomcast:token-expiring', { expires_at: Date.now() + 30000, connection: 'c1' });
  await until('the token is sent', () => relay.sent('POST', '/v1/connections/c1/token').length === 1);
  assert.equal(relay.sent('POST', '/v1/connections/c1/token')[0].headers.Authorization, 'Bearer fresh-token');
  assert.equal(FakeEventSource.all.length, 1);
  assert.equal(es.closed, false);
  rc.close();
});

test('a stream whose first event never comes falls back to long-polling, which resumes and confirms rooms', async () => {
  let polls = 0;
  const relay = new FakeRelay({
    'GET /v1/poll': (req, signal) => {
      polls++;
      const cursor = req.query.get('cursor');
      if (!cursor) return json(200, { events: [], cursor: 'p0', client: req.query.get('client'), connection: 'cl.mac' });
      if (cursor === 'p0') {
        return json(200, {
          events: [envelope('lobby', 'chat', 'by poll', { id: 'e-7' })],
          cursor: 'p1',
          client: req.query.get('client'),
          connection: 'cl.mac',
        });
      }
      const answer = () => json(200, { events: [], cursor, client: req.query.get('client'), connection: 'cl.mac' });
      if (req.query.get('timeout') === '0') return answer();
      // Held until the client gives up on it, or for the poll's timeout.
      return new Promise((res, rej) => {
        const t = setTimeout(() => res(answer()), 1000);
        signal.addEventListener('abort', () => (clearTimeout(t), rej(new DOMException('aborted', 'AbortError'))));
      });
    },
    'POST /v1/rooms/*': () => json(202, { id: 'id-1' }),
  });
  const rc = await open(relay);
  const got = [];
  rc.on('chat', (d) => got.push(d));
  const joined = rc.join('lobby');
  await until('polling', () => rc.transport === 'poll', 3000);
  await joined;
  assert.ok(FakeEventSource.last().closed, 'the stuck stream was not closed');
  await until('the polled event', () => got.length === 1);
  assert.deepEqual(got, ['by poll']);
  const [first, second] = relay.sent('GET', '/v1/poll');
  assert.deepEqual([first.query.getAll('room'), first.query.get('timeout'), first.query.get('cursor')], [['lobby'], '0', null]);
  assert.deepEqual([second.query.get('cursor'), second.query.get('timeout')], ['p0', '1']);
  assert.equal(first.query.get('client'), FakeEventSource.last().query.get('client'), 'the client id changed');
  // exclude_self while polling proves the client with the poll's token.
  await rc.broadcast.to('lobby').emit('chat', 'x');
  assert.equal(relay.sent('POST', '/v1/rooms/')[0].headers['Roomcast-Connection'], 'cl.mac');
  // Joining another room re-polls at once with both rooms.
  await rc.join('random');
  assert.deepEqual(relay.sent('GET', '/v1/poll').at(-1).query.getAll('room'), ['lobby', 'random']);
  assert.ok(polls >= 3);
  rc.close();
});

test('no EventSource at all: polling from the start', async () => {
  const relay = new FakeRelay({
    'GET /v1/poll': (req) => json(200, { events: [], cursor: 'p0', client: req.query.get('client'), connection: 'cl.mac' }),
  });
  const rc = roomcast.connect('http://relay.test', { ...fast, fetch: relay.fetch, EventSource: undefined });
  const transports = [];
  rc.on('transport', (t) => transports.push(t));
  await rc.join('lobby');
  assert.deepEqual(transports, ['poll']);
  rc.close();
});

test('streams that keep failing fall back to polling', async () => {
  const relay = new FakeRelay({
    'GET /v1/poll': (req) => json(200, { events: [], cursor: 'p0', client: req.query.get('client'), connection: 'cl.mac' }),
  });
  const rc = await open(relay, { connectTimeout: 5000 });
  const joined = rc.join('lobby');
  for (let i = 1; i <= 3; i++) {
    await until(`stream ${i}`, () => FakeEventSource.all.length === i);
    FakeEventSource.last().fail();
  }
  await until('polling', () => rc.transport === 'poll');
  await joined;
  assert.equal(FakeEventSource.all.length, 3);
  rc.close();
});


// connectTo connects a client to a fake relay without waiting for a
// stream, recording its lifecycle events in rc.seen.
function connectTo(relay, options = {}) {
  FakeEventSource.reset();
  const rc = roomcast.connect('http://relay.test', { ...fast, fetch: relay.fetch, EventSource: FakeEventSource, ...options });
  rc.seen = [];
  for (const name of ['connect', 'disconnect', 'reconnect_attempt', 'error']) rc.on(name, (arg) => rc.seen.push([name, arg]));
  rc.errors = () => rc.seen.filter(([n]) => n === 'error').map(([, e]) => e.code);
  return rc;
}

test('a refused token without getToken is one unauthenticated error; the client retries with capped backoff and recovers', async () => {
  let refuse = true;
  const relay = new FakeRelay({
    'POST /v1/tickets': () => (refuse ? error(401, 'invalid_token') : json(201, { ticket: 'ok', expires_in: 60 })),
  });
  const rc = connectTo(relay, { token: TOKEN });
  await until('six refusals', () => relay.sent('POST', '/v1/tickets').length >= 6);
  assert.deepEqual(rc.errors(), ['unauthenticated']);
  const err = rc.seen.find(([n]) => n === 'error')[1];
  assert.ok(err instanceof RoomcastError);
  assert.equal(err.cause.code, 'invalid_token');
  assert.equal(rc.closed, undefined, 'the client gave up');
  refuse = false;
  await until('a stream', () => FakeEventSource.all.length === 1);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  assert.deepEqual(rc.errors(), ['unauthenticated']);
  rc.close();
});

test('a getToken whose tokens keep being refused is called before every attempt; the app hears of it once', async () => {
  let calls = 0;
  const relay = new FakeRelay({ 'POST /v1/tickets': () => error(401, 'token_expired') });
  const rc = connectTo(relay, {
    token: TOKEN,
    getToken: async () => {
      if (++calls === 3) throw new Error('sign-in service down');
      return 'refused-' + calls;
    },
  });
  await until('five getToken calls', () => calls >= 5);
  assert.deepEqual(rc.errors(), ['unauthenticated']);
  const auth = relay.sent('POST', '/v1/tickets').map((r) => r.headers.Authorization);
  assert.deepEqual(auth.slice(0, 3), ['Bearer ' + TOKEN, 'Bearer refused-1', 'Bearer refused-2']);
  // Capped: with delays doubling from 4 ms without a cap, 14 attempts
  // would take 30 s; capped at 20 ms they take well under 3 s.
  await until('more attempts', () => relay.sent('POST', '/v1/tickets').length >= 14, 3000);
  rc.close();
});

test('a relay unreachable for a while is one unreachable error per outage', async () => {
  let down = true;
  const relay = new FakeRelay({
    'POST /v1/tickets': () => (down ? Promise.reject(new TypeError('fetch failed')) : json(201, { ticket: 't', expires_in: 60 })),
  });
  const rc = connectTo(relay, { token: TOKEN, unreachableFailures: 3, unreachableAfter: 60 });
  await until('the error', () => rc.errors().length === 1);
  assert.ok(relay.sent('POST', '/v1/tickets').length >= 3, 'reported before 3 failures');
  await tick(100);
  assert.deepEqual(rc.errors(), ['unreachable']);
  down = false;
  await until('a stream', () => FakeEventSource.all.length === 1);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  // A second outage is reported again.
  down = true;
  FakeEventSource.last().fail();
  await until('the second error', () => rc.errors().length === 2, 3000);
  assert.deepEqual(rc.errors(), ['unreachable', 'unreachable']);
  rc.close();
});

test('a relay that refuses this origin (CORS) is one cors error, told apart from a relay that is down', async () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'location');
  Object.defineProperty(globalThis, 'location', { value: { origin: 'http://app.test' }, configurable: true });
  try {
    for (const [relayUp, want] of [[true, ['cors']], [false, []]]) {
      let requests = 0;
      // The browser's fetch: a CORS refusal and a relay that is down both
      // reject with a TypeError; only a no-cors request tells them apart.
      const fetch = async (url, init = {}) => {
        requests++;
        if (init.mode === 'no-cors' && relayUp) return new Response(null);
        throw new TypeError('Failed to fetch');
      };
      const rc = connectTo({ fetch }, { token: TOKEN, unreachableAfter: 1e9 });
      await until('several attempts', () => requests >= 8);
      assert.deepEqual(rc.errors(), want, relayUp ? 'relay up' : 'relay down');
      rc.close();
    }
  } finally {
    if (saved) Object.defineProperty(globalThis, 'location', saved);
    else delete globalThis.location;
  }
});

test('join, emit and presence settle with their own timeout while the relay is away', async () => {
  let down = true;
  const relay = new FakeRelay({
    'POST /v1/tickets': () => (down ? new Promise(() => {}) : json(201, { ticket: 't', expires_in: 60 })), // never answers
    'POST /v1/rooms/*': () => json(202, { id: 'id-1' }),
    'GET /v1/rooms/*': () => new Promise(() => {}),
  });
  const rc = connectTo(relay, { token: TOKEN, timeout: 80, requestTimeout: 40 });
  const started = Date.now();
  const results = await Promise.allSettled([
    rc.join('lobby'),
    rc.broadcast.to('lobby').emit('chat', 'needs a connection'),
    rc.presence('lobby'),
  ]);
  assert.deepEqual(
    results.map((r) => r.status === 'rejected' && r.reason.code),
    ['timeout', 'timeout', 'timeout'],
  );
  assert.ok(Date.now() - started < 1000);
  // The emit that timed out is never sent later; the room is still wanted.
  down = false;
  await until('a stream', () => FakeEventSource.all.length >= 1, 3000);
  const es = FakeEventSource.last();
  assert.deepEqual(es.query.getAll('room'), ['lobby']);
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: ['lobby'] });
  await until('connected', () => rc.connected);
  assert.equal(await rc.to('lobby').emit('chat', 'later'), 'id-1');
  assert.deepEqual(relay.sent('POST', '/v1/rooms/').map((r) => r.body.data), ['later']);
  rc.close();
});

test('a getToken that never settles is given up on after the request timeout: one unauthenticated error, and the client keeps trying', async () => {
  let calls = 0;
  let refuse = true;
  const relay = new FakeRelay({
    'POST /v1/tickets': (req) => (req.headers.Authorization === 'Bearer good' ? json(201, { ticket: 't', expires_in: 60 }) : error(401, 'invalid_token')),
  });
  const rc = connectTo(relay, {
    token: TOKEN,
    requestTimeout: 40,
    getToken: () => (++calls === 1 ? new Promise(() => {}) : refuse ? 'refused' : 'good'),
  });
  await until('the error', () => rc.errors().length === 1);
  assert.deepEqual(rc.errors(), ['unauthenticated']);
  await until('getToken asked again', () => calls >= 2);
  refuse = false;
  await until('a stream', () => FakeEventSource.all.length === 1, 3000);
  rc.close();
});

test('a getToken that throws, or returns no token, is an unauthenticated error, never a crash or a "Bearer undefined"', async () => {
  for (const getToken of [
    () => {
      throw new Error('sync failure');
    },
    () => undefined,
    async () => 42,
    async () => 'bad\ntoken',
  ]) {
    const relay = new FakeRelay({ 'POST /v1/tickets': () => error(401, 'invalid_token') });
    const rc = connectTo(relay, { token: TOKEN, getToken });
    await until('the error of ' + getToken, () => rc.errors().length === 1);
    await until('more attempts', () => relay.sent('POST', '/v1/tickets').length >= 4);
    assert.deepEqual(rc.errors(), ['unauthenticated'], String(getToken));
    for (const r of relay.sent('POST', '/v1/tickets')) assert.equal(r.headers.Authorization, 'Bearer ' + TOKEN, String(getToken));
    rc.close();
  }
});

test('a getToken that throws at once when the stream closes for an expired token does not stop the client', async () => {
  const relay = new FakeRelay();
  const rc = connectTo(relay, {
    token: TOKEN,
    getToken: () => {
      throw new Error('sync failure');
    },
  });
  await until('a stream', () => FakeEventSource.all.length === 1);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  FakeEventSource.last().send('roomcast:closing', { reason: 'token_expired', reconnect_ms: 0 });
  await until('another stream', () => FakeEventSource.all.length === 2);
  rc.close();
});

test('close() while a ticket is on its way opens no stream', async () => {
  let answer;
  const relay = new FakeRelay({ 'POST /v1/tickets': () => new Promise((res) => (answer = res)) });
  const rc = connectTo(relay, { token: TOKEN });
  await until('the ticket request', () => answer);
  rc.close();
  answer(json(201, { ticket: 't', expires_in: 60 }));
  await tick(30);
  assert.equal(FakeEventSource.all.filter((es) => !es.closed).length, 0, 'a stream is open after close()');
  assert.deepEqual(rc.seen.filter(([n]) => n === 'connect'), []);
});

test('a relay or proxy answering "Retry-After: 0" is not hammered: the backoff still applies, to streams, joins and emits', async () => {
  // Answered after a turn of the event loop, as a network would: answered
  // at once, a client that does not wait would starve the loop instead.
  const busy = () => tick(0).then(() => error(503, 'busy', { 'Retry-After': '0' }));
  const slow = { backoffMin: 20, backoffMax: 1000 };
  // Without the backoff, each loop would send hundreds of requests in 300 ms;
  // with it (20, 40, 80, 160 ms, jittered down to half) at most 9.
  const tickets = new FakeRelay({ 'POST /v1/tickets': busy });
  let rc = connectTo(tickets, { token: TOKEN, ...slow });
  await tick(300);
  rc.close();
  assert.ok(tickets.sent('POST', '/v1/tickets').length <= 9, `${tickets.sent('POST', '/v1/tickets').length} ticket requests in 300 ms`);

  const rooms = new FakeRelay({ 'PUT /v1/connections/*': busy, 'POST /v1/rooms/*': busy });
  rc = await open(rooms, { ...slow, timeout: 5000 });
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  rc.join('lobby').catch(() => {});
  rc.to('lobby').emit('chat', 'x').catch(() => {});
  await tick(300);
  rc.close();
  assert.ok(rooms.sent('PUT', '/v1/connections/').length <= 9, `${rooms.sent('PUT', '/v1/connections/').length} joins in 300 ms`);
  assert.ok(rooms.sent('POST', '/v1/rooms/').length <= 9, `${rooms.sent('POST', '/v1/rooms/').length} emits in 300 ms`);
});

test('a join the relay keeps answering 503 is retried with a growing backoff', async () => {
  const relay = new FakeRelay({ 'PUT /v1/connections/*': () => error(503, 'busy') });
  const rc = await open(relay, { backoffMin: 20, backoffMax: 1000, timeout: 5000 });
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  rc.join('lobby').catch(() => {});
  await tick(600);
  rc.close();
  // Growing: 20, 40, 80, 160, 320 ms (at least half each): at most 7 in
  // 600 ms; at a constant first delay it would be 30 or more.
  assert.ok(relay.sent('PUT', '/v1/connections/').length <= 7, `${relay.sent('PUT', '/v1/connections/').length} joins in 600 ms`);
});

test('an error event always carries a RoomcastError with a code, also when getToken fails while extending a stream', async () => {
  const relay = new FakeRelay();
  const rc = connectTo(relay, {
    token: TOKEN,
    getToken: async () => {
      throw new Error('sign-in service down');
    },
  });
  await until('a stream', () => FakeEventSource.all.length === 1);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  FakeEventSource.last().send('roomcast:token-expiring', { expires_in: 30 });
  await until('the error', () => rc.seen.some(([n]) => n === 'error'));
  const err = rc.seen.find(([n]) => n === 'error')[1];
  assert.ok(err instanceof RoomcastError, `the error event passed ${err}`);
  assert.equal(err.code, 'unauthenticated');
  assert.equal(err.cause.message, 'sign-in service down');
  rc.close();
});

test('join, emit and presence after close() reject at once with code closed (a leave is done), leaving no timer', async () => {
  const relay = new FakeRelay({ 'GET /v1/rooms/*': () => json(200, { room: 'lobby', users: 0, connections: 0, members: [], anonymous: 0 }) });
  const rc = await open(relay, { timeout: 60000 });
  rc.close();
  const started = Date.now();
  const results = await Promise.allSettled([rc.join('lobby'), rc.leave('lobby'), rc.to('lobby').emit('chat', 'x'), rc.presence('lobby')]);
  assert.deepEqual(
    results.map((r) => (r.status === 'rejected' ? r.reason.code : 'done')),
    ['closed', 'done', 'closed', 'closed'],
  );
  assert.ok(Date.now() - started < 1000, 'rejected only after the timeout');
  assert.deepEqual(relay.requests.filter((r) => r.path !== '/v1/tickets'), [], 'requests after close()');
});

test('a room or user named "." or ".." is refused before a request: fetch would send it to another path', async () => {
  const relay = new FakeRelay({ 'POST /v1/events': () => json(202, { id: 'multi' }) });
  const rc = await open(relay);
  FakeEventSource.last().send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: [] });
  await until('connected', () => rc.connected);
  const results = await Promise.allSettled([
    rc.user('..').emit('pm', 'x'),
    rc.to('..').emit('chat', 'x'),
    rc.to(['a', '.']).emit('chat', 'x'),
    rc.join('..'),
    rc.leave('.'),
    rc.presence('..'),
  ]);
  assert.deepEqual(
    results.map((r) => r.status === 'rejected' && r.reason.code),
    ['invalid_user', 'invalid_room', 'invalid_room', 'invalid_room', 'invalid_room', 'invalid_room'],
  );
  assert.deepEqual(relay.requests.filter((r) => r.path !== '/v1/tickets').map((r) => r.method + ' ' + r.path), []);
  rc.close();
});

// Fakes for testing roomcast.js without a browser: a relay answering fetch
// from a route table, and an EventSource the test drives.

test('after polling a while the client tries a stream again, catching up from the poll cursor without duplicates', async () => {
  const relay = new FakeRelay({
    'GET /v1/poll': async (req, signal) => {
      const cursor = req.query.get('cursor');
      const answer = (events, next) => json(200, { events, cursor: next, client: req.query.get('client'), connection: 'cl.mac' });
      if (!cursor) return answer([], 'p0');
      if (req.query.get('timeout') !== '0') {
        await new Promise((res) => (setTimeout(res, 30), signal.addEventListener('abort', res)));
        if (signal.aborted) throw new DOMException('aborted', 'AbortError');
        return answer([], cursor);
      }
      await tick(20); // the stream's live events arrive meanwhile
      return cursor === 'p0'
        ? answer([envelope('lobby', 'chat', 'missed', { id: 'e-7' }), envelope('lobby', 'chat', 'both ways', { id: 'e-8' })], 'p1')
        : answer([], cursor);
    },
  });
  const rc = await open(relay, { connectTimeout: 30, sseRetry: 150 });
  const got = [];
  rc.on('chat', (d) => got.push(d));
  await rc.join('lobby');
  assert.equal(rc.transport, 'poll');
  await until('a second stream', () => FakeEventSource.all.length === 2, 3000);
  const es = FakeEventSource.last();
  assert.equal(es.query.get('lastEventId'), null, 'a poll cursor cannot resume a stream');
  assert.equal(es.query.get('padding'), '2048');
  es.send('roomcast:connected', { connection: 'c1', client: 'cl', rooms: ['lobby'] });
  es.send('chat', envelope('lobby', 'chat', 'both ways', { id: 'e-8' }), 'cur-8');
  es.send('chat', envelope('lobby', 'chat', 'live', { id: 'e-9' }), 'cur-9');
  await until('the events', () => got.length >= 3);
  await tick(30);
  assert.deepEqual(got, ['missed', 'both ways', 'live']);
  assert.equal(rc.transport, 'sse');
  const catchUp = relay.sent('GET', '/v1/poll').filter((r) => r.query.get('cursor') === 'p0' && r.query.get('timeout') === '0');
  assert.equal(catchUp.length, 1);
  rc.close();
});

const tick = (ms = 0) => new Promise((res) => setTimeout(res, ms));

// until waits for cond() to hold, failing after a while.
async function until(what, cond, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting until ' + what);
    await tick(2);
  }
}

function json(status, body, headers = {}) {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

const error = (status, code, headers) => json(status, { error: { code, message: code } }, headers);

// FakeRelay records requests and answers them from handlers: a handler
// gets the request {method, url, path, query, headers, body} and returns a
// Response, throws (a network error), or returns a promise of either.
class FakeRelay {
  constructor(routes = {}) {
    this.routes = { 'POST /v1/tickets': () => json(201, { ticket: 't' + ++this.tickets, expires_in: 60 }), ...routes };
    this.tickets = 0;
    this.requests = [];
    this.fetch = async (url, init = {}) => {
      const u = new URL(url);
      const req = {
        method: init.method || 'GET',
        url: u.toString(),
        path: u.pathname,
        query: u.searchParams,
        headers: init.headers || {},
        body: init.body === undefined ? undefined : JSON.parse(init.body),
      };
      this.requests.push(req);
      const key = `${req.method} ${req.path}`;
      const route = this.routes[key] || Object.entries(this.routes).find(([k]) => k.endsWith('*') && key.startsWith(k.slice(0, -1)))?.[1];
      if (!route) return error(404, 'not_found');
      if (init.signal?.aborted) throw new DOMException('aborted', 'AbortError');
      // As fetch does, an abort rejects whatever the relay does.
      return new Promise((res, rej) => {
        init.signal?.addEventListener('abort', () => rej(new DOMException('aborted', 'AbortError')));
        Promise.resolve()
          .then(() => route(req, init.signal))
          .then(res, rej);
      });
    };
  }

  sent(method, prefix) {
    return this.requests.filter((r) => r.method === method && r.path.startsWith(prefix));
  }
}

// FakeEventSource instances are kept in FakeEventSource.all.
class FakeEventSource {
  static all = [];

  constructor(url) {
    this.url = url;
    this.listeners = new Map();
    this.closed = false;
    this.lastEventId = '';
    FakeEventSource.all.push(this);
  }

  addEventListener(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
  }

  close() {
    this.closed = true;
  }

  // send dispatches an event as the browser would: data is JSON-encoded,
  // id (when given) becomes the last event id.
  send(name, data, id) {
    if (this.closed) throw new Error('send on a closed EventSource');
    if (id !== undefined) this.lastEventId = id;
    const e = { type: name, data: JSON.stringify(data), lastEventId: this.lastEventId };
    for (const fn of this.listeners.get(name) || []) fn(e);
  }

  fail() {
    for (const fn of this.listeners.get('error') || []) fn({ type: 'error' });
  }

  get query() {
    return new URL(this.url).searchParams;
  }

  static last() {
    return FakeEventSource.all.at(-1);
  }

  static reset() {
    FakeEventSource.all = [];
  }
}

// envelope builds an event envelope as the relay sends it.
function envelope(room, event, data, extra = {}) {
  return { id: extra.id ?? null, room, event, data, from: null, client: null, ts: 1795637791044, ...extra };
}

// fast are client options that keep the tests quick.
const fast = { backoffMin: 4, backoffMax: 20, connectTimeout: 60, pollTimeout: 1 };
