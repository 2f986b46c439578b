'use strict';
// Entry point: `npm start`. Listens on LISTEN_ADDR ("host:port" or ":port")
// or PORT (default 3000).

const { createApp } = require('./app');

function listenAddr(env) {
  if (env.LISTEN_ADDR) {
    const i = env.LISTEN_ADDR.lastIndexOf(':');
    const host = env.LISTEN_ADDR.slice(0, i).replace(/^\[(.*)\]$/, '$1');
    return { host: host || undefined, port: Number(env.LISTEN_ADDR.slice(i + 1)) };
  }
  return { host: undefined, port: Number(env.PORT || 3000) };
}

const app = createApp();
const { host, port } = listenAddr(process.env);
const server = app.listen(port, host);
server.on('listening', () => {
  const a = server.address();
  console.log(`listening on http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}, ` +
    `Switchboard gRPC at ${process.env.SWITCHBOARD_ADDR || '127.0.0.1:9090'}`);
});
server.on('error', (err) => {
  console.error(`cannot listen: ${err.message}`);
  process.exit(1);
});

function shutdown(signal) {
  console.log(`${signal}: shutting down`);
  server.close(() => {
    app.locals.switchboard.close();
    process.exit(0);
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
