/**
 * Two network namespaces joined by a veth pair, for the live-capture bench.
 * Names start with `hopt-bench-`, addresses are 10.x inside them only, and all
 * traffic stays between them. remove() deletes everything it created.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface BenchLab {
  a: string;
  b: string;
  addrA: string;
  addrB: string;
  /** Runs python3 code inside a namespace; resolves with its stdout. */
  python(ns: string, code: string, args: string[]): { child: ChildProcess; done: Promise<string> };
  remove(): void;
}

export function createLab(): BenchLab {
  const id = randomBytes(3).toString('hex');
  const a = `hopt-bench-${id}-a`;
  const b = `hopt-bench-${id}-b`;
  const net = randomInt(16, 250);
  const addrA = `10.${net}.0.1`;
  const addrB = `10.${net}.0.2`;
  const children: ChildProcess[] = [];
  const created: string[] = [];
  const remove = (): void => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const n of created.reverse()) {
      try {
        sh('ip', ['netns', 'del', n]);
      } catch {
        /* gone */
      }
    }
  };
  try {
    for (const n of [a, b]) {
      sh('ip', ['netns', 'add', n]);
      created.push(n);
      sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    sh('ip', ['link', 'add', `hb${id}a`, 'netns', a, 'type', 'veth', 'peer', 'name', `hb${id}b`, 'netns', b]);
    sh('ip', ['-n', a, 'addr', 'add', `${addrA}/24`, 'dev', `hb${id}a`]);
    sh('ip', ['-n', b, 'addr', 'add', `${addrB}/24`, 'dev', `hb${id}b`]);
    sh('ip', ['-n', a, 'link', 'set', `hb${id}a`, 'up']);
    sh('ip', ['-n', b, 'link', 'set', `hb${id}b`, 'up']);
  } catch (err) {
    remove();
    throw err;
  }
  return {
    a,
    b,
    addrA,
    addrB,
    python(ns, code, args) {
      const child = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(child);
      const done = new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        child.on('exit', (code) => (code === 0 || code === null ? resolve(out) : reject(new Error(`python in ${ns} exited ${code}`))));
      });
      return { child, done };
    },
    remove,
  };
}

/** TCP sink: accepts one connection, reads until EOF, prints "ready" first. */
export const TCP_SINK = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print('ready', flush=True)
c, _ = s.accept(); buf = bytearray(1 << 20)
while c.recv_into(buf): pass
`;

/** TCP source: sends for N seconds in `size`-byte writes (TCP_NODELAY if small); prints bytes sent. */
export const TCP_SOURCE = `
import socket, sys, time
host, port, secs, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port))
if size < 1400: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
data = b'x' * size; sent = 0; end = time.monotonic() + secs; t0 = time.monotonic()
while time.monotonic() < end:
    for _ in range(64): s.sendall(data)
    sent += 64 * size
el = time.monotonic() - t0
s.close()
print(sent, el)
`;
