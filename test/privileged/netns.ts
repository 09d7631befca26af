/**
 * Network namespaces for privileged tests: every name starts with `hopt-` and a
 * random suffix, addresses are 10.x inside them only, and traffic stays
 * between them. A Lab records what it created so cleanup() removes exactly that.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { statSync } from 'node:fs';

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** A program, map or link as `bpftool -j ... show` prints it (only the fields the tests read). */
export interface BpfObj {
  id: number;
  name?: string;
  /** Links: bpftool 7.1 predates tcx and prints its type as 11 (BPF_LINK_TYPE_TCX). */
  type?: string | number;
  max_entries?: number;
  map_ids?: number[];
  prog_id?: number;
}

/** `bpftool -j ARGS`, parsed. */
export function bpftoolJson<T>(...args: string[]): T {
  return JSON.parse(sh('bpftool', ['-j', ...args]) || 'null') as T;
}

/** `bpftool -j ... show`: the objects listed. */
export const bpftool = (...args: string[]): BpfObj[] => bpftoolJson<BpfObj[] | null>(...args) ?? [];

export interface Ns {
  name: string;
  inode: number;
  /** Runs a command inside the namespace and returns its stdout. */
  run(cmd: string, args?: string[]): string;
  /** Starts a long-running process inside the namespace. */
  spawn(cmd: string, args: string[]): ChildProcess;
}

export interface Link {
  /** Device names on each side. */
  a: string;
  b: string;
  /** Addresses (no prefix) on each side. */
  addrA: string;
  addrB: string;
  /** IPv6 (ULA) addresses on each side, in RFC 5952 form. */
  addr6A: string;
  addr6B: string;
}

export class Lab {
  readonly id = randomBytes(3).toString('hex');
  private readonly names: string[] = [];
  private readonly children: ChildProcess[] = [];
  /** A /16 of 10.0.0.0/8 for this lab's links, random so concurrent labs look different. */
  private readonly net = randomInt(16, 250);
  /** A ULA /48 for the same purpose (fdXX:XXXX:XXXX::/48), groups without leading zeros. */
  private readonly net6 = `fd${randomInt(0x10, 0xff).toString(16)}:${randomInt(0x1000, 0xffff).toString(16)}:${randomInt(0x1000, 0xffff).toString(16)}`;
  private links = 0;

  ns(role: string): Ns {
    const name = `hopt-${this.id}-${role}`;
    sh('ip', ['netns', 'add', name]);
    this.names.push(name);
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    const inode = statSync(`/var/run/netns/${name}`).ino;
    return {
      name,
      inode,
      run: (cmd, args = []) => sh('ip', ['netns', 'exec', name, cmd, ...args]),
      spawn: (cmd, args) => {
        const child = spawn('ip', ['netns', 'exec', name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        this.children.push(child);
        return child;
      },
    };
  }

  /** A veth pair between two namespaces, 10.<net>.<n>.1 on a and .2 on b (/24), and IPv6 ULAs ::1 and ::2. */
  link(a: Ns, b: Ns): Link {
    const n = ++this.links;
    const devA = `hv${this.id}${n}a`;
    const devB = `hv${this.id}${n}b`;
    const addrA = `10.${this.net}.${n}.1`;
    const addrB = `10.${this.net}.${n}.2`;
    sh('ip', ['link', 'add', devA, 'netns', a.name, 'type', 'veth', 'peer', 'name', devB, 'netns', b.name]);
    sh('ip', ['-n', a.name, 'addr', 'add', `${addrA}/24`, 'dev', devA]);
    sh('ip', ['-n', b.name, 'addr', 'add', `${addrB}/24`, 'dev', devB]);
    const addr6A = `${this.net6}:${n}::1`;
    const addr6B = `${this.net6}:${n}::2`;
    sh('ip', ['-n', a.name, 'addr', 'add', `${addr6A}/64`, 'dev', devA, 'nodad']);
    sh('ip', ['-n', b.name, 'addr', 'add', `${addr6B}/64`, 'dev', devB, 'nodad']);
    sh('ip', ['-n', a.name, 'link', 'set', devA, 'up']);
    sh('ip', ['-n', b.name, 'link', 'set', devB, 'up']);
    return { a: devA, b: devB, addrA, addrB, addr6A, addr6B };
  }

  cleanup(): void {
    for (const c of this.children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
    // Deleting a namespace deletes its veth ends, iptables rules and conntrack entries.
    for (const n of this.names.splice(0).reverse()) {
      try {
        sh('ip', ['netns', 'del', n]);
      } catch {
        /* already gone */
      }
    }
  }
}

/** Node one-liners run inside namespaces: a TCP server and client. */
export const TCP_ECHO_SERVER = `
const net = require('net');
const [host, port] = process.argv.slice(1);
net.createServer((s) => s.on('data', (d) => s.write(d)).on('end', () => s.end()).on('error', () => {}))
  .listen(Number(port), host, () => console.log('listening'));
`;

export const TCP_CLIENT = `
const net = require('net');
const [host, port, msg, timeoutMs] = process.argv.slice(1);
let got = '';
let error;
let local;
const s = net.connect(Number(port), host, () => { local = s.localPort; s.write(msg); });
s.on('data', (d) => { got += d; if (got.length >= msg.length) s.end(); });
s.on('error', (e) => { error = e.code; });
if (timeoutMs) s.setTimeout(Number(timeoutMs), () => { error = 'ETIMEDOUT'; s.destroy(); });
s.on('close', () => { console.log(JSON.stringify(error ? { error } : { local, got })); });
`;

/** Waits for a line on a child's stdout. */
export function waitLine(child: ChildProcess, pattern: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${pattern}; got ${JSON.stringify(buf)}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => pattern.test(l));
      if (line) {
        clearTimeout(t);
        resolve(line);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`process exited (${code}) before ${pattern}; got ${JSON.stringify(buf)}`));
    });
  });
}

/**
 * Sends one hand-made TCP segment through a raw socket (python3, standard
 * library only): the kernel adds the IPv4 header, we supply TCP and checksum.
 * Args: src dst sport dport seq ack flags payload.
 */
export const RAW_TCP_SEGMENT = `
import socket, struct, sys
src, dst = sys.argv[1], sys.argv[2]
sport, dport, seq, ack, flags = (int(x) for x in sys.argv[3:8])
payload = sys.argv[8].encode()
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
hdr = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff, ack & 0xffffffff, 5 << 4, flags, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(hdr) + len(payload))
hdr = hdr[:16] + struct.pack('!H', csum(pseudo + hdr + payload)) + hdr[18:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.sendto(hdr + payload, (dst, 0))
`;

/**
 * A client that connects, sends msg, prints its local port once echoed, then
 * (optionally) sends `later` on SIGUSR2, and stays connected until killed.
 */
export const TCP_HOLD_CLIENT = `
const net = require('net');
const [host, port, msg, later] = process.argv.slice(1);
const s = net.connect(Number(port), host, () => { s.write(msg); });
s.once('data', () => {
  // The second write waits for SIGUSR2: a test first changes the path, then signals (ip netns exec execs, so the pid is this one).
  if (later) process.once('SIGUSR2', () => s.write(later));
  console.log(JSON.stringify({ local: s.localPort }));
});
s.on('error', (e) => console.log(JSON.stringify({ error: e.code })));
s.on('close', () => console.log(JSON.stringify({ closed: true })));
`;
