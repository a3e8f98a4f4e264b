// uWebSockets baseline for `shardcast bench --server bun`: a relay on Bun.serve, whose
// WebSocket server is uWebSockets. Every client joins the topic "all" and every message it
// sends is published to that topic, opcode kept, through uWebSockets' own pub/sub fan-out, so
// the sender gets it too, as with `shardcast serve`.
//
// With --topics it speaks the topics protocol of `shardcast serve --topics` instead, on the same
// pub/sub (ws.subscribe, server.publish):
// - ws://HOST:PORT/?sub=T1&sub=T2 subscribes at upgrade (names URL-encoded);
// - a text message `sub T` or `unsub T` subscribes or unsubscribes;
// - a message, text or binary, `pub T BODY` publishes BODY (the bytes after the second space)
//   to T's subscribers with the message's opcode, the sender too if it is subscribed (unless
//   --exclude-sender);
// - a topic name is not empty and has no space; anything else closes that client with 1008.
//
// With --deflate (`shardcast bench --deflate`) it accepts permessage-deflate (perMessageDeflate:
// true, uWebSockets' shared compressor: it answers server_no_context_takeover and
// client_no_context_takeover) and publishes every message with compress = true, so each client
// that negotiated the extension gets it compressed (uWebSockets deflates it once per
// subscriber); the others get it plain.
//
//   PORT=0 node_modules/.bin/bun bun-relay.js [--topics [--exclude-sender]] [--deflate]
//
// The first line of output is the address, `ws://127.0.0.1:PORT/`; the bench reads it.

const TOPICS = process.argv.includes("--topics");
const EXCLUDE_SENDER = process.argv.includes("--exclude-sender");
const DEFLATE = process.argv.includes("--deflate");
const SPACE = 0x20;

// A client's message as { verb, topic, body }, or { error } (the close reason).
function parse(message) {
  const text = typeof message === "string";
  const first = text ? message.indexOf(" ") : message.indexOf(SPACE);
  if (first < 0) return { error: "expected sub T, unsub T or pub T BODY" };
  const verb = text ? message.slice(0, first) : message.toString("latin1", 0, first);
  if (verb === "pub") {
    const second = text ? message.indexOf(" ", first + 1) : message.indexOf(SPACE, first + 1);
    if (second < 0) return { error: "pub T BODY: no space after the topic" };
    const topic = text ? message.slice(first + 1, second) : message.toString("utf8", first + 1, second);
    if (topic === "") return { error: "empty topic" };
    const body = text ? message.slice(second + 1) : message.subarray(second + 1);
    return { verb, topic, body };
  }
  if (verb === "sub" || verb === "unsub") {
    if (!text) return { error: "sub and unsub must be text messages" };
    const topic = message.slice(first + 1);
    const error = invalid(topic);
    return error ? { error } : { verb, topic };
  }
  return { error: "expected sub T, unsub T or pub T BODY" };
}

// Why `topic` is not a valid name, or undefined.
function invalid(topic) {
  if (topic === "") return "empty topic";
  if (topic.includes(" ")) return "a topic has no space";
  return undefined;
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  fetch(request, server) {
    const data = TOPICS ? { subs: new URL(request.url).searchParams.getAll("sub") } : undefined;
    if (server.upgrade(request, { data })) return undefined;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: DEFLATE,
    maxPayloadLength: 64 * 1024,
    backpressureLimit: 1024 * 1024,
    idleTimeout: 120,
    open(ws) {
      if (!TOPICS) {
        ws.subscribe("all");
        return;
      }
      for (const topic of ws.data.subs) {
        const error = invalid(topic);
        if (error) return ws.close(1008, error);
        ws.subscribe(topic);
      }
    },
    message(ws, message) {
      if (!TOPICS) {
        server.publish("all", message, DEFLATE);
        return;
      }
      const request = parse(message);
      if (request.error) ws.close(1008, request.error);
      else if (request.verb === "sub") ws.subscribe(request.topic);
      else if (request.verb === "unsub") ws.unsubscribe(request.topic);
      // ws.publish leaves the sender out; server.publish does not.
      else if (EXCLUDE_SENDER) ws.publish(request.topic, request.body, DEFLATE);
      else server.publish(request.topic, request.body, DEFLATE);
    },
  },
});

console.log(`ws://127.0.0.1:${server.port}/`);
