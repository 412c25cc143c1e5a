// @locktopus/client, unchanged from npm, against shardlock-server at
// SERVER_URL: connection forms, the lock life cycle, FIFO hand-off pushed
// as `acquired`, withdrawal, tree conflicts, read sharing, and the raw
// replies (exact bytes, trailing newline).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { LocktopusClient, LOCK_TYPE, CLIENT_STATE } from '@locktopus/client';

const base = process.env.SERVER_URL ?? 'ws://127.0.0.1:9009';
const url = new URL(base);
let nsCounter = 0;
const freshNs = () => `js-${process.pid}-${nsCounter++}`;

async function connect(ns, abandonTimeoutMs) {
  const c = new LocktopusClient(WebSocket, {
    host: url.hostname,
    port: Number(url.port),
    namespace: ns,
    secure: false,
    abandonTimeoutMs,
  });
  await c.connect();
  return c;
}

const W = (...path) => ({ type: LOCK_TYPE.WRITE, path });
const R = (...path) => ({ type: LOCK_TYPE.READ, path });

test('connects by URL string and by parameters', async () => {
  const byString = new LocktopusClient(WebSocket, `${base}/v1?namespace=${freshNs()}`);
  await byString.connect();
  assert.equal(byString.getState(), CLIENT_STATE.READY);
  byString.close();
  const byParams = await connect(freshNs(), 1000);
  assert.equal(byParams.getState(), CLIENT_STATE.READY);
  byParams.close();
});

test('replies are byte-exact with a trailing newline', async () => {
  const c = await connect(freshNs());
  const seen = [];
  c.onMessage((m) => seen.push(m));
  assert.equal(await c.lock(W('a')), true);
  const id = c.getLockId();
  await c.release();
  const incoming = seen.filter((m) => m.direction === 'in').map((m) => m.data);
  assert.deepEqual(incoming, [
    `{"id":"${id}","action":"lock","state":"acquired"}\n`,
    `{"id":"${id}","action":"release","state":"ready"}\n`,
  ]);
  c.close();
});

test('a conflicting lock is enqueued and pushed acquired, FIFO', async () => {
  const ns = freshNs();
  const [a, b, c] = [await connect(ns), await connect(ns), await connect(ns)];
  assert.equal(await a.lock(W('x')), true);
  assert.equal(await b.lock(W('x', 'y')), false); // the subtree conflicts
  assert.equal(await c.lock(W('x')), false);
  assert.equal(b.getState(), CLIENT_STATE.ENQUEUED);
  const order = [];
  const bDone = b.acquire().then(() => order.push('b'));
  await a.release();
  await bDone;
  assert.equal(c.getState(), CLIENT_STATE.ENQUEUED);
  const cDone = c.acquire().then(() => order.push('c'));
  await b.release();
  await cDone;
  assert.deepEqual(order, ['b', 'c']);
  assert.ok(Number(a.getLockId()) < Number(b.getLockId()));
  await c.release();
  for (const x of [a, b, c]) x.close();
});

test('readers share, a writer waits for both', async () => {
  const ns = freshNs();
  const [r1, r2, w] = [await connect(ns), await connect(ns), await connect(ns)];
  assert.equal(await r1.lock(R('doc')), true);
  assert.equal(await r2.lock(R('doc')), true);
  assert.equal(await w.lock(W('doc')), false);
  await r1.release();
  assert.equal(w.getState(), CLIENT_STATE.ENQUEUED);
  const granted = w.acquire();
  await r2.release();
  assert.equal(await granted, true);
  await w.release();
  for (const x of [r1, r2, w]) x.close();
});

test('a release while enqueued withdraws; the next waiter is unaffected', async () => {
  const ns = freshNs();
  const [a, b, c] = [await connect(ns), await connect(ns), await connect(ns)];
  await a.lock(W('k'));
  await b.lock(W('k'));
  await c.lock(W('k'));
  await b.release(); // withdrawn, never acquired
  assert.equal(b.getState(), CLIENT_STATE.READY);
  const granted = c.acquire();
  await a.release();
  assert.equal(await granted, true);
  assert.equal(await b.lock(W('other')), true);
  await b.release();
  await c.release();
  for (const x of [a, b, c]) x.close();
});

test('a holder that disconnects keeps its lock for its abandon timeout', async () => {
  const ns = freshNs();
  const holder = await connect(ns, 300);
  await holder.lock(W('job'));
  const other = await connect(ns);
  holder.close();
  assert.equal(await other.lock(W('job')), false);
  const began = Date.now();
  assert.equal(await other.acquire(), true);
  assert.ok(Date.now() - began >= 100, 'held on after the close');
  await other.release();
  other.close();
});
