// uWebSockets baseline for `shardcast bench --server bun`: a relay on Bun.serve, whose
// WebSocket server is uWebSockets. Every client joins the topic "all" and every message it
// sends is published to that topic, opcode kept, through uWebSockets' own pub/sub fan-out, so
// the sender gets it too, as with `shardcast serve`.
//
//   PORT=0 node_modules/.bin/bun bun-relay.js     # PORT=0 or unset: any free port
//
// The first line of output is the address, `ws://127.0.0.1:PORT/`; the bench reads it.

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  fetch(request, server) {
    if (server.upgrade(request)) return undefined;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: 64 * 1024,
    backpressureLimit: 1024 * 1024,
    idleTimeout: 120,
    open(ws) {
      ws.subscribe("all");
    },
    message(_ws, message) {
      server.publish("all", message);
    },
  },
});

console.log(`ws://127.0.0.1:${server.port}/`);
