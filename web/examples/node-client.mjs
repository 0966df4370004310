// roomcast.js in Node, as a backend or a script uses it: run by
// relay/browsertest/node_test.go against a real relay (node web/examples/node-client.mjs URL
// TOKEN). It joins lobby, says "ready", prints every chat event it gets as
// a JSON line, publishes one itself, and exits once it got "bye".
import roomcast from '../roomcast.js';

const [url, token] = process.argv.slice(2);
const rc = roomcast.connect(url, { token, getToken: async () => token });
const print = (o) => console.log(JSON.stringify(o));
rc.on('connect', ({ transport }) => print({ connect: transport }));
rc.on('error', (err) => print({ error: err.code }));
rc.on('chat', (data, env) => {
  print({ chat: data.text, from: env.from?.user ?? null });
  if (data.text === 'bye') {
    rc.close();
  }
});
await rc.join('lobby');
print({ ready: true });
const id = await rc.to('lobby').emit('chat', { text: 'from node' });
print({ emitted: id });
