// Drives headless Chromium against a running `shardcast serve` for tests/browser.rs.
//
//   node tests/browser/check.mjs WS_URL PROFILE_DIR BASELINES_DIR [SCENARIO]
//
// SCENARIO (default `relay`) is what the page does; each is described at its function below:
// `relay` (also over wss://: the certificate, made at test time, is not checked), `protocols`,
// `topics`, and `axum` (WS_URL is then the examples/axum.rs server's http:// address).
//
// `relay`: a page (about:blank) opens two WebSockets to WS_URL and reports what Chromium negotiated
// (`ws.extensions`). Socket A sends a JSON document of a few KiB as text, socket B a small JSON
// text, socket A a larger JSON document as binary; the relay sends each message to both, so
// each socket must receive the three, in order, byte for byte, and the JSON must parse back to
// the same text. Both then close with 1000 and must see the server's close. The page reports
// what it saw; the Rust test judges it (and the server's counters). One JSON line on standard
// output; progress and errors on standard error. Every wait is bounded.
//
// playwright-core (no browser download) comes from BASELINES_DIR/node_modules (`npm ci
// --prefix baselines`); the browser is Debian's `chromium` (CHROMIUM overrides the path).

import { createRequire } from 'node:module';
import { join } from 'node:path';

const [url, profile, baselines, scenario = 'relay'] = process.argv.slice(2);
const scenarios = { relay: inPage, protocols: protocolsInPage, topics: topicsInPage, axum: axumInPage };
if (!url || !profile || !baselines || !scenarios[scenario]) {
  console.error('usage: check.mjs WS_URL PROFILE_DIR BASELINES_DIR [relay|protocols|topics|axum]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// Each wait in the page (an open, a message, a close) ends by this.
const STEP_MS = 10_000;
// The whole run ends by this (the test's own deadline is longer): the browser is closed, and
// the process exits non-zero.
const RUN_MS = 60_000;

const { chromium } = createRequire(join(baselines, 'package.json'))('playwright-core');

const started = Date.now();
const log = (what) => console.error(`check.mjs +${Date.now() - started} ms: ${what}`);

let context;
const deadline = setTimeout(async () => {
  log(`not done within ${RUN_MS} ms, closing the browser`);
  // Bounded too: exit whether or not the close completes (Playwright kills the browser on exit).
  setTimeout(() => process.exit(3), 5_000).unref();
  await context?.close().catch(() => {});
  process.exit(3);
}, RUN_MS);

try {
  log(`launching ${executablePath}`);
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: 30_000,
    // For wss:// with the test's own certificate (no CA the browser knows): not checked. The
    // flag below does it for the WebSocket's handshake; this, for Playwright's own requests.
    ignoreHTTPSErrors: url.startsWith('wss:'),
    // A closed network: nothing that would call home, wait on a network, or need a GPU or a
    // sandbox that a container lacks. /dev/shm may be small there too.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      ...(url.startsWith('wss:') ? ['--ignore-certificate-errors'] : []),
    ],
  });
  const browserVersion = context.browser()?.version() ?? null;
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => log(`page console: ${m.text()}`));
  page.on('pageerror', (e) => log(`page error: ${e}`));
  // The upgrade as the browser's network stack saw it (DevTools protocol): the offer it made
  // and the server's answer, in the order the sockets opened.
  const handshakes = new Map();
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => {
    handshakes.set(e.requestId, {
      offer: header(e.request.headers, 'sec-websocket-extensions'),
      protocols: header(e.request.headers, 'sec-websocket-protocol'),
    });
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const h = handshakes.get(e.requestId) ?? {};
    h.status = e.response.status;
    h.answer = header(e.response.headers, 'sec-websocket-extensions');
    h.protocol = header(e.response.headers, 'sec-websocket-protocol');
    handshakes.set(e.requestId, h);
  });
  await cdp.send('Network.enable');
  let pageUrl = url;
  if (scenario === 'axum') {
    // A page of the application's own origin, so that its fetch() calls are same-origin.
    await page.goto(new URL('/health', url).href, { timeout: STEP_MS });
    pageUrl = `ws://${new URL(url).host}/ws`;
  }
  log(`browser ${browserVersion} up; the page (${scenario}) connects to ${pageUrl}`);
  // The helpers every scenario but `relay` uses, defined in the page first.
  if (scenario !== 'relay') await page.evaluate(helpersInPage, { stepMs: STEP_MS });
  const report = await page.evaluate(scenarios[scenario], { url: pageUrl, stepMs: STEP_MS });
  report.scenario = scenario;
  report.handshakes = [...handshakes.values()];
  report.browser = browserVersion;
  report.user_agent = await page.evaluate(() => navigator.userAgent);
  log('done');
  console.log(JSON.stringify(report));
} catch (e) {
  log(`failed: ${e?.stack ?? e}`);
  process.exitCode = 1;
} finally {
  await context?.close().catch((e) => log(`close: ${e}`));
  clearTimeout(deadline);
}

// The value of header `name` (any case) in a DevTools header object, or null.
function header(headers, name) {
  const key = Object.keys(headers ?? {}).find((k) => k.toLowerCase() === name);
  return key === undefined ? null : headers[key];
}

// Runs in the page: plain browser JavaScript, nothing from Node.
async function inPage({ url, stepMs }) {
  const t0 = performance.now();
  const within = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`no ${what} within ${stepMs} ms`)), stepMs),
      ),
    ]);

  // Deterministic, varied numbers (mulberry32), so that a run is repeatable and the document
  // compresses like real data, not like repeated bytes.
  let seed = 0x5eed1234;
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = (list) => list[Math.floor(random() * list.length)];
  // An order-book update: two sides of price levels, and the latest trades.
  const orderBook = (levels, trades) => {
    const mid = 27_000 + random() * 2_000;
    const side = (sign) =>
      Array.from({ length: levels }, (_, i) => [
        (mid + sign * (i * 0.5 + random() * 0.5)).toFixed(2),
        (random() * 3).toFixed(6),
        1 + Math.floor(random() * 40),
      ]);
    return {
      type: 'book',
      venue: pick(['XNAS', 'BATS', 'ARCX', 'EDGX']),
      symbol: pick(['BTC-USD', 'ETH-USD', 'SOL-USD']),
      seq: 1_000_000 + Math.floor(random() * 9_000_000),
      ts: 1_760_000_000_000 + Math.floor(random() * 1e9),
      bids: side(-1),
      asks: side(1),
      trades: Array.from({ length: trades }, (_, i) => ({
        id: `t${(0x10000 + Math.floor(random() * 0xfffff)).toString(16)}${i}`,
        price: (mid + (random() - 0.5) * 10).toFixed(2),
        qty: (random() * 2).toFixed(5),
        side: pick(['buy', 'sell']),
        maker: random() < 0.5,
      })),
      note: 'snapshot after résumé of the feed (€, 価格)',
    };
  };
  const utf8 = (text) => new TextEncoder().encode(text).byteLength;
  const doc = JSON.stringify(orderBook(40, 12)); // a few KiB, text
  const small = JSON.stringify({ type: 'ack', seq: 1, ok: true }); // under any threshold
  const bigText = JSON.stringify(orderBook(200, 80)); // tens of KiB, sent as binary
  const big = new TextEncoder().encode(bigText);

  // A socket whose messages queue up until read; a read ends at the next message, the close,
  // or the deadline.
  const open = (name) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const inbox = [];
    const readers = [];
    let closed = null;
    const closedOnce = new Promise((resolve) => {
      ws.onclose = (e) => {
        closed = { code: e.code, reason: e.reason, clean: e.wasClean };
        for (const r of readers.splice(0)) r.reject(new Error(`${name} closed: ${e.code}`));
        resolve(closed);
      };
    });
    ws.onmessage = (e) => {
      const reader = readers.shift();
      if (reader) reader.resolve(e.data);
      else inbox.push(e.data);
    };
    const opened = new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`${name}: error before open`));
    });
    return {
      name,
      ws,
      opened: within(opened, `${name} open`),
      next: () => {
        if (inbox.length) return Promise.resolve(inbox.shift());
        if (closed) return Promise.reject(new Error(`${name} closed: ${closed.code}`));
        return within(
          new Promise((resolve, reject) => readers.push({ resolve, reject })),
          `message on ${name}`,
        );
      },
      close: () => {
        ws.close(1000, 'done');
        return within(closedOnce, `close of ${name}`);
      },
      pending: () => inbox.length,
    };
  };

  const a = open('a');
  const b = open('b');
  await Promise.all([a.opened, b.opened]);
  const sockets = [a, b];
  const report = {
    extensions: sockets.map((s) => s.ws.extensions),
    protocols: sockets.map((s) => s.ws.protocol),
    // Sizes in bytes (UTF-8 for the texts), as on the wire before compression.
    sent: { doc: utf8(doc), small: utf8(small), binary: big.byteLength },
    received: { a: [], b: [] },
    closes: {},
  };

  // What each socket received, against what was sent.
  const receive = async (socket, expected) => {
    const got = await socket.next();
    const entry = { kind: typeof got === 'string' ? 'text' : 'binary' };
    if (typeof expected === 'string') {
      entry.length = typeof got === 'string' ? utf8(got) : got.byteLength;
      entry.exact = got === expected;
      // Parsed and serialised again: the same text (the document was made by stringify).
      try {
        entry.json = JSON.stringify(JSON.parse(got)) === expected;
      } catch {
        entry.json = false;
      }
    } else {
      const bytes = got instanceof ArrayBuffer ? new Uint8Array(got) : new Uint8Array();
      entry.length = got instanceof ArrayBuffer ? bytes.byteLength : utf8(got);
      entry.exact = bytes.length === expected.length && bytes.every((x, i) => x === expected[i]);
      try {
        entry.json = JSON.stringify(JSON.parse(new TextDecoder().decode(bytes))) === bigText;
      } catch {
        entry.json = false;
      }
    }
    report.received[socket.name].push(entry);
  };

  // One message at a time, everyone receiving it before the next, so the order is fixed.
  a.ws.send(doc);
  await Promise.all(sockets.map((s) => receive(s, doc)));
  b.ws.send(small);
  await Promise.all(sockets.map((s) => receive(s, small)));
  a.ws.send(big);
  await Promise.all(sockets.map((s) => receive(s, big)));

  report.unexpected = sockets.map((s) => s.pending());
  for (const s of sockets) report.closes[s.name] = await s.close();
  report.elapsed_ms = Math.round(performance.now() - t0);
  return report;
}

// Defines `window.t` in the page (plain browser JavaScript): `within`, and `socket`, a
// WebSocket whose messages queue up until read and whose failure is reported, not thrown.
function helpersInPage({ stepMs }) {
  const within = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`no ${what} within ${stepMs} ms`)), stepMs),
      ),
    ]);
  // What a message was: text as is, binary as `binary:` and its bytes in hex.
  const describe = (data) =>
    typeof data === 'string'
      ? data
      : `binary:${[...new Uint8Array(data)].map((x) => x.toString(16).padStart(2, '0')).join('')}`;
  const socket = (url, name, protocols) => {
    const ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
    ws.binaryType = 'arraybuffer';
    const inbox = [];
    const readers = [];
    const state = { name, ws, error: false, closed: null };
    const closedOnce = new Promise((resolve) => {
      ws.onclose = (e) => {
        state.closed = { code: e.code, reason: e.reason, clean: e.wasClean };
        for (const r of readers.splice(0)) r.reject(new Error(`${name} closed: ${e.code}`));
        resolve(state.closed);
      };
    });
    ws.onmessage = (e) => {
      const reader = readers.shift();
      if (reader) reader.resolve(describe(e.data));
      else inbox.push(describe(e.data));
    };
    // True once open; false if it failed first (an error, then a close).
    state.opened = within(
      new Promise((resolve) => {
        ws.onopen = () => resolve(true);
        ws.addEventListener('error', () => {
          state.error = true;
          resolve(false);
        });
      }),
      `${name} open`,
    );
    state.failed = () => within(closedOnce, `close of ${name} after its failure`);
    state.next = () => {
      if (inbox.length) return Promise.resolve(inbox.shift());
      if (state.closed) return Promise.reject(new Error(`${name} closed: ${state.closed.code}`));
      return within(
        new Promise((resolve, reject) => readers.push({ resolve, reject })),
        `message on ${name}`,
      );
    };
    // Reads until `last` (included): every message received on the way, in order.
    state.until = async (last) => {
      const got = [];
      for (;;) {
        const m = await state.next();
        got.push(m);
        if (m === last) return got;
      }
    };
    state.close = () => {
      ws.close(1000, 'done');
      return within(closedOnce, `close of ${name}`);
    };
    state.pending = () => inbox.length;
    return state;
  };
  window.t = { within, socket };
}

// `protocols`, against `serve --protocols v2.chat,v1.chat`: socket `a` asks for ["v1.chat"],
// socket `b` for ["v1.chat", "v2.chat"] (both listed: the server's first is chosen), and both
// must open; `a` sends a text, `b` a binary message, each relayed to both. Socket `refused`
// asks for ["other"] only: the server refuses it, and the page sees an error and a close
// (1006), never an open.
async function protocolsInPage({ url }) {
  const { socket } = window.t;
  const a = socket(url, 'a', ['v1.chat']);
  const b = socket(url, 'b', ['v1.chat', 'v2.chat']);
  const refused = socket(url, 'refused', ['other']);
  const report = {
    opened: { a: await a.opened, b: await b.opened, refused: await refused.opened },
  };
  report.protocols = { a: a.ws.protocol, b: b.ws.protocol, refused: refused.ws.protocol };
  report.refused = { error: refused.error, close: await refused.failed() };
  a.ws.send('hello v1');
  const bytes = new Uint8Array([0, 1, 2, 0xfe, 0xff]);
  report.received = { a: [await a.next()], b: [await b.next()] };
  b.ws.send(bytes);
  report.received.a.push(await a.next());
  report.received.b.push(await b.next());
  report.unexpected = [a.pending(), b.pending()];
  report.closes = { a: await a.close(), b: await b.close() };
  return report;
}

// `topics`, against `serve --topics`: socket `news` subscribes at its upgrade to `café/news`
// (`?sub=caf%C3%A9%2Fnews`: a space is not possible in a topic of that protocol), `sport` to
// `sport`, and `publisher` to nothing. The publisher sends `pub café/news ...` and `pub sport
// ...`, then an `end` to each topic; each subscriber reports everything it received up to its
// `end` (a message of the other topic would have come before it: one publisher, in order).
async function topicsInPage({ url }) {
  const { socket } = window.t;
  const news = socket(`${url}?sub=caf%C3%A9%2Fnews`, 'news');
  const sport = socket(`${url}?sub=sport`, 'sport');
  const publisher = socket(url, 'publisher');
  const report = {
    opened: [await news.opened, await sport.opened, await publisher.opened],
  };
  publisher.ws.send('pub café/news hello news');
  publisher.ws.send('pub sport hello sport');
  publisher.ws.send('pub café/news end');
  publisher.ws.send('pub sport end');
  report.received = { news: await news.until('end'), sport: await sport.until('end') };
  report.unexpected = [news.pending(), sport.pending(), publisher.pending()];
  report.closes = {
    news: await news.close(),
    sport: await sport.close(),
    publisher: await publisher.close(),
  };
  return report;
}

// `axum`, against examples/axum.rs (the page is its `/health`, so the fetches are same-origin):
// socket `news` opens `/ws?topic=news`, socket `all` `/ws`. The page POSTs to `/publish` a text
// for everyone, a text for topic `news`, bytes that are not UTF-8 (binary) for everyone, and
// `end` for everyone; each socket reports what it received up to `end`. Then `GET /stats`.
async function axumInPage({ url }) {
  const { socket } = window.t;
  const news = socket(`${url}?topic=news`, 'news');
  const all = socket(url, 'all');
  const report = { opened: [await news.opened, await all.opened], published: [] };
  const publish = async (query, body) => {
    const response = await fetch(`/publish${query}`, { method: 'POST', body });
    report.published.push(response.status);
  };
  await publish('', 'hello everyone');
  await publish('?topic=news', 'hello news');
  await publish('', new Uint8Array([0xff, 0x00, 0x80]));
  await publish('', 'end');
  report.received = { news: await news.until('end'), all: await all.until('end') };
  report.unexpected = [news.pending(), all.pending()];
  report.closes = { news: await news.close(), all: await all.close() };
  report.stats = await (await fetch('/stats')).json();
  return report;
}
