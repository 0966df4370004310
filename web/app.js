// The demo chat: the Socket.IO lesson's chat (names, rooms, messages with
// sender and time, who is online, typing, private messages, connection
// status) over roomcast. User text only ever reaches the page as text.
//
// Query parameters: ?share=1 shares one stream between this browser's tabs;
// ?room=NAME opens that room.
import roomcast from '/roomcast.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const IDENTITY = 'roomcast-demo-identity';
const ROOMS = 'roomcast-demo-rooms';
// As the relay's rule: not all dots ("." and ".." would be other URL paths).
const ROOM_NAME = /^(?!\.+$)[A-Za-z0-9_.~@-]{1,64}$/;

// stored is what an earlier visit kept under key, or fallback when that is
// missing or not usable (another version's, or edited): a page that
// cannot parse its storage must not stay broken across reloads.
function stored(key, usable, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    if (usable(v)) return v;
  } catch {}
  return fallback;
}

let me = stored(IDENTITY, (v) => ['token', 'user', 'name'].every((k) => typeof v?.[k] === 'string' && v[k]), null); // {token, user, name}
let rc = null;
let room = null; // the room shown
let rooms = ['lobby', 'random', 'help'];
const members = new Map(); // user -> {name, connections}
let presenceLog = null; // join/leave events seen while the presence list loads
let presenceGen = 0;
const typers = new Map(); // user -> {name, timer}
const shown = new Set(); // ids of the messages shown
let pm = null; // {user, name} of the private message being written
let typingSent = 0;
let typingStop = null;

// el makes an element whose text is set as text, never as HTML.
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

const time = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

async function devToken(name, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch('/v1/dev/token', { method: 'POST', headers, body: JSON.stringify({ name }), signal: AbortSignal.timeout(15000) });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(body?.error?.message || res.statusText);
    err.code = body?.error?.code;
    err.status = res.status;
    throw err;
  }
  return body;
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  try {
    me = await devToken($('name').value);
    localStorage.setItem(IDENTITY, JSON.stringify(me));
    start();
  } catch (err) {
    $('login-error').textContent =
      err.status === 404 ? 'This relay does not hand out development tokens (it has a key configured).' : 'Could not sign in: ' + err.message;
  }
});

$('sign-out').addEventListener('click', () => {
  rc?.close();
  rc = null;
  localStorage.removeItem(IDENTITY);
  location.reload();
});

function status(state, text, transport) {
  const s = $('status');
  s.dataset.state = state;
  if (transport) s.dataset.transport = transport;
  s.textContent = text;
}

const transportName = (t) => (t === 'poll' ? 'long-polling' : 'SSE');

function start() {
  $('login').hidden = true;
  $('chat').hidden = false;
  $('me').hidden = false;
  $('me-name').textContent = me.name;
  const kept = stored(ROOMS, Array.isArray, []).filter((r) => typeof r === 'string' && ROOM_NAME.test(r));
  rooms = [...new Set([...rooms, ...kept])];
  rc = roomcast.connect('', {
    token: me.token,
    shareAcrossTabs: params.has('share'),
    // The same user again, with a fresh expiry; when the relay no longer
    // accepts the token at all (it was restarted with another key), a new
    // sign-in under the same name: the demo recovers by itself.
    getToken: async () => {
      try {
        me = await devToken(me.name, me.token);
      } catch (err) {
        if (err.status !== 401) throw err;
        me = await devToken(me.name);
      }
      localStorage.setItem(IDENTITY, JSON.stringify(me));
      $('me-name').textContent = me.name;
      return me.token;
    },
  });
  status('connecting', 'connecting…');
  let problem = null; // what the last error event said, until connected again
  rc.on('connect', ({ transport }) => {
    problem = null;
    status('connected', 'connected via ' + transportName(transport), transport);
    loadPresence();
  });
  rc.on('transport', (t) => status('connected', 'connected via ' + transportName(t), t));
  rc.on('disconnect', (reason) => status('reconnecting', `disconnected (${reason}), reconnecting…`));
  rc.on('reconnect_attempt', (n) => status('reconnecting', `${problem || 'reconnecting'} (attempt ${n})…`));
  rc.on('reset', () => {
    loadHistory(room);
    loadPresence();
  });
  // Lasting problems come once each; the client keeps trying meanwhile.
  rc.on('error', (err) => {
    const retrying = {
      unauthenticated: 'not signed in, retrying',
      cors: 'this page is not allowed by the relay (CORS), retrying',
      unreachable: 'the relay is unreachable, retrying',
    }[err.code];
    if (retrying) problem = retrying;
    if (err.code === 'banned') status('closed', 'you were banned from this relay');
    else if (!rc.connected) status(retrying ? 'reconnecting' : 'closed', retrying ? retrying + '…' : 'error: ' + (err.code || err.message));
    note('Error: ' + (err.message || err.code));
  });
  rc.on('chat', (data, env) => {
    if (env.room !== room) return;
    clearTyper(env.from?.user);
    addMessage(env);
  });
  // What `curl -d hello …/events` publishes, and any backend's plain
  // events: shown as messages too.
  rc.on('message', (data, env) => {
    if (env.room === room) addMessage(env);
  });
  rc.on('typing', (data, env) => {
    if (env.room !== room || !env.from || env.from.user === me.user) return;
    if (data?.typing) setTyper(env.from.user, env.from.name);
    else clearTyper(env.from.user);
  });
  rc.on('pm', (data, env) => addPrivate(env.from?.name || 'someone', String(data?.text ?? ''), env.ts, 'from', env.id));
  rc.on('roomcast:join', (data, env) => presence(env.room, 'join', data));
  rc.on('roomcast:leave', (data, env) => presence(env.room, 'leave', data));
  renderRooms();
  const wanted = params.get('room');
  switchRoom(wanted && ROOM_NAME.test(wanted) ? wanted : 'lobby');
}

function renderRooms() {
  const list = $('rooms');
  list.replaceChildren(
    ...rooms.map((name) => {
      const b = el('button', 'room-button', '# ' + name);
      b.type = 'button';
      b.dataset.room = name;
      if (name === room) b.setAttribute('aria-current', 'true');
      b.addEventListener('click', () => switchRoom(name));
      const li = el('li');
      li.append(b);
      return li;
    }),
  );
}

$('new-room').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('room-name').value.trim();
  if (!ROOM_NAME.test(name)) return;
  $('room-name').value = '';
  if (!rooms.includes(name)) {
    rooms.push(name);
    localStorage.setItem(ROOMS, JSON.stringify(rooms.slice(3)));
  }
  switchRoom(name);
});

async function switchRoom(name) {
  if (name === room) return;
  const old = room;
  room = name;
  stopTyping();
  endPrivate();
  shown.clear();
  members.clear();
  for (const t of typers.values()) clearTimeout(t.timer);
  typers.clear();
  $('messages').replaceChildren();
  $('room-title').textContent = '# ' + name;
  renderRooms();
  renderOnline();
  renderTyping();
  if (old) rc.leave(old).catch(() => {});
  try {
    await rc.join(name);
  } catch (err) {
    note(`Could not join ${name}: ${err.code || err.message}`);
    return;
  }
  if (room !== name) return;
  loadHistory(name);
  loadPresence();
}

// loadHistory shows the room's recent messages above the live ones.
async function loadHistory(name) {
  const res = await fetch(`/v1/rooms/${encodeURIComponent(name)}/history?limit=50`, {
    headers: { Authorization: 'Bearer ' + me.token },
    signal: AbortSignal.timeout(15000),
  }).catch(() => null);
  if (!res?.ok || room !== name) return;
  const events = (await res.json().catch(() => null))?.events ?? [];
  const list = $('messages');
  const first = list.firstChild;
  for (const env of events) {
    if (SHOWN_EVENTS.has(env.event) && !shown.has(env.id)) list.insertBefore(messageItem(env), first);
  }
  list.scrollTop = list.scrollHeight;
}

// The room events shown as messages.
const SHOWN_EVENTS = new Set(['chat', 'message']);

// textOf is what a message shows: the chat's text, a plain event's data.
function textOf(env) {
  const d = env.data;
  if (env.encoding === 'base64') return `(${Math.floor(((d?.length ?? 0) * 3) / 4)} bytes of binary data)`;
  if (typeof d === 'string') return d;
  if (typeof d?.text === 'string') return d.text;
  return JSON.stringify(d);
}

function messageItem(env) {
  shown.add(env.id);
  const li = el('li', 'message');
  if (env.from?.user === me.user) li.classList.add('mine');
  li.dataset.id = env.id;
  const meta = el('p', 'meta');
  meta.append(el('strong', 'sender', env.from?.name || 'anonymous'), ' ', el('time', 'time', time(env.ts)));
  li.append(meta, el('p', 'text', textOf(env)));
  return li;
}

function addMessage(env) {
  if (shown.has(env.id)) return;
  const list = $('messages');
  const pending = list.querySelector(`li.pending[data-pending-id="${CSS.escape(env.id)}"]`);
  // Shown where the relay ordered it, which may be after messages that
  // arrived while it was pending.
  pending?.remove();
  show(messageItem(env));
}

function addPrivate(who, text, ts, direction, id) {
  const li = el('li', 'message private');
  if (id) li.dataset.id = id;
  const meta = el('p', 'meta');
  meta.append(el('span', 'label', direction === 'from' ? 'Private from ' : 'Private to '), el('strong', 'sender', who), ' ', el('time', 'time', time(ts)));
  li.append(meta, el('p', 'text', text));
  show(li);
}

function note(text) {
  show(el('li', 'note', text));
}

// show adds an item at the end of the messages, scrolled into view when the
// list was at its end (someone reading older messages is left there) or
// when it is the user's own.
function show(li) {
  const list = $('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  list.append(li);
  if (atEnd || li.classList.contains('mine')) list.scrollTop = list.scrollHeight;
}

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('message').value.trim();
  if (!text || !rc) return;
  $('message').value = '';
  stopTyping();
  if (pm) {
    const to = pm;
    try {
      const id = await rc.user(to.user).emit('pm', { text });
      addPrivate(to.name, text, Date.now(), 'to', id);
    } catch (err) {
      note(`Private message to ${to.name} not sent: ${err.code || err.message}`);
    }
    return;
  }
  // Shown as "sending…" until the relay accepted it and it came back.
  const li = el('li', 'message mine pending');
  const meta = el('p', 'meta');
  meta.append(el('strong', 'sender', me.name), ' ', el('time', 'time', 'sending…'));
  li.append(meta, el('p', 'text', text));
  show(li);
  try {
    const id = await rc.to(room).emit('chat', { text });
    if (shown.has(id)) li.remove();
    else li.dataset.pendingId = id;
  } catch (err) {
    li.remove();
    note(`Message not sent: ${err.code || err.message}`);
  }
});

// Typing: a volatile event to the others in the room, at most every 2 s
// while typing, and one saying it stopped.
$('message').addEventListener('input', () => {
  if (!rc || pm) return;
  if (!$('message').value) return stopTyping();
  const now = Date.now();
  if (now - typingSent > 2000) {
    typingSent = now;
    rc.broadcast.to(room).volatile.emit('typing', { typing: true }).catch(() => {});
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(stopTyping, 3000);
});

function stopTyping() {
  clearTimeout(typingStop);
  if (!typingSent || !rc) return;
  typingSent = 0;
  rc.broadcast.to(room).volatile.emit('typing', { typing: false }).catch(() => {});
}

function setTyper(user, name) {
  clearTimeout(typers.get(user)?.timer);
  // A typer that went silent (its tab closed) is forgotten after a while.
  typers.set(user, { name, timer: setTimeout(() => clearTyper(user), 6000) });
  renderTyping();
}

function clearTyper(user) {
  const t = typers.get(user);
  if (!t) return;
  clearTimeout(t.timer);
  typers.delete(user);
  renderTyping();
}

function renderTyping() {
  const names = [...typers.values()].map((t) => t.name);
  $('typing').textContent =
    names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
}

// Presence: the list from the relay, kept current by roomcast:join and
// roomcast:leave.
async function loadPresence() {
  const name = room;
  if (!rc || !name) return;
  const gen = ++presenceGen;
  presenceLog = [];
  let list;
  try {
    list = await rc.presence(name);
  } catch {
    if (gen === presenceGen) presenceLog = null;
    return;
  }
  // A newer load (or another room) supersedes this one.
  if (gen !== presenceGen || room !== name) return;
  members.clear();
  for (const m of list.members) members.set(m.user, { name: m.name, connections: m.connections });
  const log = presenceLog;
  presenceLog = null;
  for (const [kind, data] of log) applyPresence(kind, data);
  renderOnline();
}

function presence(r, kind, data) {
  if (r !== room || !data?.user) return;
  presenceLog?.push([kind, data]);
  applyPresence(kind, data);
  if (data.user !== me.user) note(`${data.name || data.user} ${kind === 'join' ? 'joined' : 'left'} #${r}`);
  renderOnline();
}

function applyPresence(kind, data) {
  if (kind === 'join') members.set(data.user, { name: data.name, connections: 1 });
  else {
    members.delete(data.user);
    clearTyper(data.user);
  }
}

function renderOnline() {
  // You are in the room you look at, even before the relay counts you (a
  // poller counts once its first long-poll is held).
  if (room && !members.has(me.user)) members.set(me.user, { name: me.name, connections: 1 });
  // A private message goes to someone listed here: not to someone who left.
  if (pm && !members.has(pm.user) && presenceLog === null) endPrivate(`${pm.name} left #${room}: messages go to the room again`);
  const sorted = [...members].sort((a, b) => a[1].name.localeCompare(b[1].name));
  $('online-count').textContent = `(${sorted.length})`;
  $('online').replaceChildren(
    ...sorted.map(([user, m]) => {
      const li = el('li');
      li.dataset.user = user;
      if (user === me.user) li.append(el('span', 'self', m.name + ' (you)'));
      else {
        const b = el('button', 'member', m.name);
        b.type = 'button';
        b.title = 'Send a private message';
        b.addEventListener('click', () => privateTo(user, m.name));
        li.append(b);
      }
      return li;
    }),
  );
}

function privateTo(user, name) {
  stopTyping();
  pm = { user, name };
  $('pm-name').textContent = name;
  $('pm-target').hidden = false;
  $('message').placeholder = 'Private message…';
  $('message').focus();
}

// endPrivate addresses the room again, saying why when given a reason.
function endPrivate(why) {
  if (!pm) return;
  pm = null;
  $('pm-target').hidden = true;
  $('message').placeholder = 'Type a message…';
  if (why) note(why);
}

$('pm-cancel').addEventListener('click', () => endPrivate());

// For the console and the browser tests: the client in use.
globalThis.roomcastDemo = { get rc() { return rc; } };

if (me) start();
else $('name').focus();
