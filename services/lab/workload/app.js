// @ts-check
/**
 * The server pod's application: HTTP on 0.0.0.0:<port>. Listening on every address
 * (not only loopback, where the sidecar proxy connects) is what makes the incident
 * possible: a packet to pod-ip:<port> that escapes the REDIRECT reaches this listener.
 *
 *   GET  /bytes?n=N   N bytes of body (default 100, at most 16 MiB)
 *   POST /upload      reads the body, answers its length
 *   GET  /stats       counters (JSON)
 */
import http from 'node:http';
import { arg, intArg, log } from './args.js';

const port = intArg('port', 8080);
const name = arg('name', 'app');
const stats = { requests: 0, viaLoopback: 0, direct: 0, uploads: 0, uploadBytes: 0, errors: 0 };
const chunk = Buffer.alloc(64 * 1024, 'x');

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://app');
  if (url.pathname === '/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, ...stats }));
    return;
  }
  stats.requests++;
  if (req.socket.remoteAddress === '127.0.0.1') stats.viaLoopback++;
  else stats.direct++;
  if (url.pathname === '/bytes') {
    const n = Math.min(Math.max(Number(url.searchParams.get('n') ?? 100) || 0, 0), 16 << 20);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
    let left = n;
    const write = () => {
      while (left > 0) {
        const part = chunk.subarray(0, Math.min(left, chunk.length));
        left -= part.length;
        if (!res.write(part)) return void res.once('drain', write);
      }
      res.end();
    };
    write();
    return;
  }
  if (url.pathname === '/upload' && req.method === 'POST') {
    let bytes = 0;
    req.on('data', (d) => (bytes += d.length));
    req.on('end', () => {
      stats.uploads++;
      stats.uploadBytes += bytes;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ bytes }));
    });
    req.on('error', () => stats.errors++);
    return;
  }
  res.statusCode = 404;
  res.end('not found\n');
});
server.on('clientError', (_err, socket) => {
  stats.errors++;
  socket.destroy();
});
// No request timeout: an upload the incident cut off must not be answered (408) and closed,
// which would send a FIN towards a client socket that no longer exists. The proxy's idle
// timeout ends such connections, much later.
server.requestTimeout = 0;
server.headersTimeout = 30_000;
server.keepAliveTimeout = 5_000;
server.listen(port, '0.0.0.0', () => log({ event: 'listening', name, port }));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 200).unref();
});
