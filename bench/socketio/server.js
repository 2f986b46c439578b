// The socket.io setup Switchboard replaces, reduced to what the benchmark
// needs: browsers connect with socket.io, the server counts them in memory,
// and POST /emit broadcasts the JSON body to every socket as a ShowMessage
// event, as the original site's web server did. One process, one node:
// exactly the setup that breaks the day a second web server starts.
//
//   PORT=3000 node server.js
//   curl -XPOST -H 'content-type: application/json' -d '{"text":"hi"}' localhost:3000/emit
"use strict";

const http = require("node:http");
const express = require("express");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";

const app = express();
app.use(express.json({ limit: "1mb" }));

const server = http.createServer(app);
const io = new Server(server, {
  // The original site allowed its own pages only; the benchmark client
  // sends no Origin, which socket.io accepts.
  cors: { origin: true },
  // Matches Switchboard's 20 s keep-alive window.
  pingInterval: 10000,
  pingTimeout: 10000,
});

let online = 0;
io.on("connection", (socket) => {
  online++;
  socket.on("disconnect", () => {
    online--;
  });
});

app.post("/emit", (req, res) => {
  io.emit("ShowMessage", req.body);
  res.json({ recipients: online });
});

app.get("/online", (req, res) => {
  res.json({ connections: online });
});

app.get("/healthz", (req, res) => {
  res.send("ok\n");
});

server.listen(port, host, () => {
  console.log(`socket.io reference app on http://${host}:${port}`);
});

function stop() {
  io.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
