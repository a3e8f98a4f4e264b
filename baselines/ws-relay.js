// Node `ws` baseline for `shardcast bench --server node-ws`: the relay most Node servers are
// built like. Every message a client sends is sent, opcode kept, to every open client in
// `wss.clients` (the sender too, as with `shardcast serve`), one `send` per client.
//
// With --topics it speaks the topics protocol of `shardcast serve --topics` instead, as most
// Node servers do it: a Map of topic to the Set of its subscribers, one `send` per subscriber.
// - ws://HOST:PORT/?sub=T1&sub=T2 subscribes at upgrade (names URL-encoded);
// - a text message `sub T` or `unsub T` subscribes or unsubscribes;
// - a message, text or binary, `pub T BODY` publishes BODY (the bytes after the second space)
//   to T's subscribers with the message's opcode, the sender too if it is subscribed (unless
//   --exclude-sender);
// - a topic name is not empty and has no space; anything else closes that client with 1008.
//
//   PORT=0 node ws-relay.js [--topics [--exclude-sender]]     # PORT=0 or unset: any free port
//
// The first line of output is the address, `ws://127.0.0.1:PORT/`; the bench reads it.

const { WebSocket, WebSocketServer } = require("ws");

const TOPICS = process.argv.includes("--topics");
const EXCLUDE_SENDER = process.argv.includes("--exclude-sender");
const SPACE = 0x20;

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  perMessageDeflate: false,
});

// Topic -> Set of subscribed clients; an emptied topic is forgotten.
const topics = new Map();

// Why `topic` is not a valid name, or undefined.
function invalid(topic) {
  if (topic === "") return "empty topic";
  if (topic.includes(" ")) return "a topic has no space";
  return undefined;
}

// One client of a topics server, from its upgrade `request`.
function topicClient(ws, request) {
  const mine = new Set();
  const subscribe = (topic) => {
    let subscribers = topics.get(topic);
    if (!subscribers) topics.set(topic, (subscribers = new Set()));
    subscribers.add(ws);
    mine.add(topic);
  };
  const unsubscribe = (topic) => {
    const subscribers = topics.get(topic);
    if (subscribers) {
      subscribers.delete(ws);
      if (subscribers.size === 0) topics.delete(topic);
    }
    mine.delete(topic);
  };
  ws.on("close", () => {
    for (const topic of mine) unsubscribe(topic);
  });
  for (const topic of new URL(request.url, "http://localhost").searchParams.getAll("sub")) {
    const error = invalid(topic);
    if (error) return ws.close(1008, error);
    subscribe(topic);
  }
  ws.on("message", (data, isBinary) => {
    const first = data.indexOf(SPACE);
    const verb = first < 0 ? "" : data.toString("latin1", 0, first);
    if (verb === "pub") {
      const second = data.indexOf(SPACE, first + 1);
      if (second < 0) return ws.close(1008, "pub T BODY: no space after the topic");
      const topic = data.toString("utf8", first + 1, second);
      if (topic === "") return ws.close(1008, "empty topic");
      const body = data.subarray(second + 1);
      for (const client of topics.get(topic) || []) {
        if (EXCLUDE_SENDER && client === ws) continue;
        if (client.readyState === WebSocket.OPEN) client.send(body, { binary: isBinary });
      }
    } else if (verb === "sub" || verb === "unsub") {
      if (isBinary) return ws.close(1008, "sub and unsub must be text messages");
      const topic = data.toString("utf8", first + 1);
      const error = invalid(topic);
      if (error) return ws.close(1008, error);
      if (verb === "sub") subscribe(topic);
      else unsubscribe(topic);
    } else {
      ws.close(1008, "expected sub T, unsub T or pub T BODY");
    }
  });
}

wss.on("connection", (ws, request) => {
  // A protocol error from one client closes that client; without a listener it would end
  // the process.
  ws.on("error", (error) => console.error(`client error: ${error.message}`));
  if (TOPICS) return topicClient(ws, request);
  ws.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});

wss.on("listening", () => console.log(`ws://127.0.0.1:${wss.address().port}/`));
