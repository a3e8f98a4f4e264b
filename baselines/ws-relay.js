// Node `ws` baseline for `shardcast bench --server node-ws`: the relay most Node servers are
// built like. Every message a client sends is sent, opcode kept, to every open client in
// `wss.clients` (the sender too, as with `shardcast serve`), one `send` per client.
//
//   PORT=0 node ws-relay.js     # PORT=0 or unset: any free port
//
// The first line of output is the address, `ws://127.0.0.1:PORT/`; the bench reads it.

const { WebSocket, WebSocketServer } = require("ws");

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  perMessageDeflate: false,
});

wss.on("connection", (ws) => {
  // A protocol error from one client closes that client; without a listener it would end
  // the process.
  ws.on("error", (error) => console.error(`client error: ${error.message}`));
  ws.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});

wss.on("listening", () => console.log(`ws://127.0.0.1:${wss.address().port}/`));
