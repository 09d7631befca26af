// @ts-check
/**
 * The sidecar proxy: a plain TCP forwarder from 0.0.0.0:<listen> (where iptables
 * REDIRECTs the service port) to the application at <upstream>, with its own counters on
 * http://127.0.0.1:<admin>/stats. Accepted connections per peer address show whether
 * node-lb masqueraded (peer 10.10.2.1) or preserved the client (peer 10.244.1.2).
 */
import http from 'node:http';
import net from 'node:net';
import { arg, intArg, log } from './args.js';

const listen = intArg('listen', 15006);
const admin = intArg('admin', 15000);
const [upHost = '127.0.0.1', upPortRaw = '8080'] = arg('upstream', '127.0.0.1:8080').split(':');
const upPort = Number(upPortRaw);
// Long, so that a connection the incident reset on the client side stays half-open here
// instead of the proxy's FIN drawing a second (no-socket) RST from the client within a demo.
const idleMs = intArg('idle-ms', 600_000);
const name = arg('name', 'proxy');

const stats = {
  accepted: 0,
  active: 0,
  upstreamErrors: 0,
  downstreamErrors: 0,
  bytesIn: 0,
  bytesOut: 0,
  /** @type {Record<string, number>} */
  byPeer: {},
};

const server = net.createServer({ allowHalfOpen: true }, (down) => {
  stats.accepted++;
  stats.active++;
  const peer = down.remoteAddress ?? '?';
  stats.byPeer[peer] = (stats.byPeer[peer] ?? 0) + 1;
  const up = net.connect({ host: upHost, port: upPort, allowHalfOpen: true });
  let closed = 0;
  const done = () => {
    if (++closed === 2) stats.active--;
  };
  down.on('data', (d) => (stats.bytesIn += d.length));
  up.on('data', (d) => (stats.bytesOut += d.length));
  down.on('error', () => {
    stats.downstreamErrors++;
    up.destroy();
  });
  up.on('error', () => {
    stats.upstreamErrors++;
    down.destroy();
  });
  down.on('close', done);
  up.on('close', done);
  down.setTimeout(idleMs, () => {
    down.destroy();
    up.destroy();
  });
  down.pipe(up);
  up.pipe(down);
});
server.listen(listen, '0.0.0.0', () => log({ event: 'listening', name, port: listen, upstream: `${upHost}:${upPort}` }));

const adminServer = http.createServer((_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ name, ...stats }));
});
adminServer.listen(admin, '127.0.0.1');

process.on('SIGTERM', () => {
  server.close();
  adminServer.close();
  setTimeout(() => process.exit(0), 200).unref();
});
