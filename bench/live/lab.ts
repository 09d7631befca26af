/**
 * Two network namespaces joined by a veth pair, for the live-capture bench.
 * Names start with `hopt-bench-`, addresses are 10.x inside them only, and all
 * traffic stays between them. remove() deletes everything it created.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { procCpuS } from '../common.js';

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface BenchLab {
  a: string;
  b: string;
  /** A namespace with only lo, carrying none of the traffic: owned to measure "not owned". */
  idle: string;
  addrA: string;
  addrB: string;
  /** Runs python3 code inside a namespace (on CPUs `cpus`, a taskset list, when given); resolves with its stdout. */
  python(ns: string, code: string, args: string[], cpus?: string): { child: ChildProcess; done: Promise<string> };
  /**
   * `streams` parallel TCP senders from a to b (ports port, port+1, ...), each
   * sending `size`-byte writes for `seconds` over `conns` connections. `onStart`
   * runs once every sink listens, just before the senders start. Gbit/s is the
   * sum over streams.
   */
  tcp(o: TcpRun, onStart?: () => void): Promise<TcpResult>;
  /**
   * Root qdisc of both veth ends: a queueing one (pfifo, as a NIC has) or null for
   * veth's own noqueue, where net_dev_start_xmit records nothing.
   */
  qdisc(kind: 'pfifo' | null): void;
  remove(): void;
}

export interface TcpRun {
  /** Sender processes, each to a sink of its own. */
  streams: number;
  /** Connections per stream (default 1), written round robin. */
  conns?: number;
  port: number;
  seconds: number;
  size: number;
  /** Senders and sinks run only on these CPUs (a taskset list), and so does their softirq work. */
  cpus?: string;
}

export interface TcpResult {
  gbps: number;
  bytes: number;
  /** Longest sender's elapsed time. */
  seconds: number;
  /** CPU seconds of the senders and sinks once connected (user + kernel, incl. softirqs run in their context). */
  cpuS: number;
  /** CPU seconds of the ksoftirqd threads meanwhile (network work deferred there; includes others' traffic). */
  ksoftirqdS: number;
}

/** CPU seconds of all ksoftirqd/N threads. */
function ksoftirqdCpuS(): number {
  let sum = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('ksoftirqd/')) continue;
    } catch {
      continue;
    }
    const cpu = procCpuS(pid);
    if (!Number.isNaN(cpu)) sum += cpu;
  }
  return sum;
}

export function createLab(): BenchLab {
  const id = randomBytes(3).toString('hex');
  const a = `hopt-bench-${id}-a`;
  const b = `hopt-bench-${id}-b`;
  const idle = `hopt-bench-${id}-idle`;
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
    for (const n of [a, b, idle]) {
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
  const python = pythonRunner(children);
  return {
    a,
    b,
    idle,
    addrA,
    addrB,
    python,
    qdisc(kind) {
      for (const [ns, dev] of [[a, `hb${id}a`], [b, `hb${id}b`]] as const) {
        if (kind) sh('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', kind]);
        else sh('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', dev, 'root']);
      }
    },
    tcp: (o, onStart) => tcpBetween(python, a, b, addrB, o, onStart),
    remove,
  };
}

/** Bytes per write of the bulk TCP senders (TCP_SOURCE): many full-size segments per write. */
export const BULK_WRITE = 128 * 1024;

/** Runs python3 code inside a namespace; every child is pushed on `children` (to be killed on cleanup). */
export function pythonRunner(children: ChildProcess[]): BenchLab['python'] {
  return (ns, code, args, cpus) => {
    const pin = cpus ? ['taskset', '-c', cpus] : [];
    const child = spawn('ip', ['netns', 'exec', ns, ...pin, 'python3', '-c', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const done = new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => (code === 0 || code === null ? resolve(out) : reject(new Error(`python in ${ns} exited ${code}`))));
    });
    return { child, done };
  };
}

/** BenchLab.tcp between any two namespaces: senders in `from`, sinks in `to` listening on `addr`. */
export async function tcpBetween(python: BenchLab['python'], from: string, to: string, addr: string, o: TcpRun, onStart?: () => void): Promise<TcpResult> {
  const ports = Array.from({ length: o.streams }, (_, i) => String(o.port + i));
  const conns = String(o.conns ?? 1);
  const sinks = ports.map((p) => python(to, TCP_SINK, [addr, p, conns], o.cpus));
  await Promise.all(sinks.map((s) => new Promise<void>((r) => s.child.stdout!.once('data', () => r()))));
  onStart?.();
  const soft0 = ksoftirqdCpuS();
  const outs = await Promise.all(ports.map((p) => python(from, TCP_SOURCE, [addr, p, String(o.seconds), String(o.size), conns], o.cpus).done));
  const sinkOuts = await Promise.all(sinks.map((s) => s.done));
  const ksoftirqdS = ksoftirqdCpuS() - soft0;
  let bytes = 0;
  let gbps = 0;
  let seconds = 0;
  let cpuS = 0;
  for (const out of outs) {
    const [sent = '0', el = '1', cpu = 'NaN'] = out.trim().split(/\s+/);
    bytes += Number(sent);
    gbps += (Number(sent) * 8) / Number(el) / 1e9;
    seconds = Math.max(seconds, Number(el));
    cpuS += Number(cpu);
  }
  for (const out of sinkOuts) cpuS += Number(out.trim().split(/\s+/).pop());
  return { gbps, bytes, seconds, cpuS, ksoftirqdS };
}

/** TCP sink: accepts `conns` connections (argv[3], default 1), reads them all until EOF; prints "ready" first, then its CPU seconds after accepting. */
export const TCP_SINK = `
import socket, sys, selectors, resource
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(n)
print('ready', flush=True)
conns = [s.accept()[0] for _ in range(n)]; buf = bytearray(1 << 20)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); c0 = cpu()
if n == 1:
    while conns[0].recv_into(buf): pass
sel = selectors.DefaultSelector()
for c in conns[n == 1:]: sel.register(c, selectors.EVENT_READ)
while n > 1:
    for k, _ in sel.select():
        if not k.fileobj.recv_into(buf): sel.unregister(k.fileobj); n -= 1
print(cpu() - c0)
`;

/**
 * TCP source: sends for N seconds in `size`-byte writes (TCP_NODELAY if small) over
 * `conns` connections (argv[5], default 1), round robin so each flow carries the
 * same bytes; prints bytes sent, seconds and CPU seconds while sending.
 */
export const TCP_SOURCE = `
import socket, sys, time, resource
host, port, secs, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
n = int(sys.argv[5]) if len(sys.argv) > 5 else 1
socks = [socket.create_connection((host, port)) for _ in range(n)]
if size < 1400:
    for s in socks: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); c0 = cpu()
data = b'x' * size; sent = 0; end = time.monotonic() + secs; t0 = time.monotonic()
while time.monotonic() < end:
    for s in socks:
        for _ in range(64): s.sendall(data)
    sent += 64 * size * n
el = time.monotonic() - t0
for s in socks: s.close()
print(sent, el, cpu() - c0)
`;
