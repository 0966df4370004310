// A typed use of roomcast.js: `tsc -p web` checks it against roomcast.d.ts
// in strict mode (it is never run), imported by the package's name as an
// app would, through package.json's exports. The lines marked @ts-expect-error must
// stay errors: they show the declarations catch mistakes.
import roomcast, { connect, RoomcastError, type Envelope, type Presence, type Transport } from '@roomcast/client';

interface Chat {
  text: string;
}

async function main(token: string): Promise<void> {
  const rc = roomcast.connect('https://relay.example', {
    token,
    getToken: async () => token,
    timeout: 10_000,
    shareAcrossTabs: true,
  });
  rc.on('connect', ({ transport, client }) => {
    const t: Transport = transport;
    console.log(t, client.length);
  });
  rc.on('error', (err) => {
    if (err.code === 'unauthenticated' || err.code === 'cors' || err.code === 'unreachable') console.log(err.message, err.status);
  });
  rc.on('reconnect_attempt', (n) => console.log(n + 1));
  rc.on<Chat>('chat', (data, env: Envelope<Chat>) => console.log(data.text, env.from?.name, env.ts));
  rc.on('roomcast:join', ({ user, name }) => console.log(user, name));
  await rc.join('lobby');
  const id: string = await rc.to('lobby').emit('chat', { text: 'hi' });
  const maybe: string | null = await rc.broadcast.to(['a', 'b']).volatile.emit('typing', true);
  await rc.user('dev-bob').emit('pm', { text: 'psst' });
  const p: Presence = await rc.presence('lobby');
  console.log(id, maybe, p.members.map((m) => m.name));
  try {
    await rc.leave('lobby');
  } catch (e) {
    if (e instanceof RoomcastError && e.code === 'timeout') console.log('still leaving');
  }
  rc.close();

  const node = connect('http://127.0.0.1:8080', { EventSource: undefined });
  // @ts-expect-error: join takes a room name
  await node.join(42);
  // @ts-expect-error: reconnect_attempt passes a number
  node.on('reconnect_attempt', (n: string) => n);
  // @ts-expect-error: no such option
  connect('', { tokn: token });
}

void main;
