/**
 * Options of live capture, validated once and frozen. Each option is declared
 * once, in a spec entry that documents it and parses it; the option types are
 * derived from the parsers, so type and validation cannot drift.
 *
 * Filter options (the `FILTER_SPEC` part) can also be changed at run time with
 * LiveSource.setFilters(), which validates them with the same parsers and then
 * updates kernel maps without reloading any program.
 */
import { hostname } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIP } from 'node:net';
import { LiveError } from './errors.js';
import { IFNAMSIZ, MAX_ADDRS, MAX_IFNAMES, MAX_NETNS, MAX_PORTS, OBJECTS, RUN_MAX, type ObjectName } from './kernel-abi.js';

type Parser<T> = (v: unknown, field: string) => T;
interface Entry<T> {
  /** What the option means, with its unit. */
  doc: string;
  parse: Parser<T>;
}

function bad(field: string, why: string): never {
  throw new LiveError('HOP_LIVE_BAD_OPTION', `live option ${field}: ${why}`);
}

function int(v: unknown, field: string, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) bad(field, `expected an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

/** 'all' (or absent) means no filter: null. Otherwise a list, or a comma-separated string. */
function list(v: unknown, field: string, max: number): unknown[] | null {
  if (v === undefined || v === null || v === 'all') return null;
  const items = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(items)) bad(field, `expected "all" or a list, got ${JSON.stringify(v)}`);
  if (items.length === 0) bad(field, 'an empty list would admit nothing; use "all" for no filter');
  if (items.length > max) bad(field, `at most ${max} entries (kernel map size), got ${items.length}`);
  return items;
}

/** A namespace: a name under /var/run/netns, an absolute path, or an inode number. */
export type NetnsRef = { kind: 'name'; name: string } | { kind: 'path'; path: string } | { kind: 'inode'; inode: number };

const NETNS_NAME = /^[A-Za-z0-9_.-]{1,255}$/;

function netnsRef(v: unknown, field: string): NetnsRef {
  if (typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v))) return { kind: 'inode', inode: int(v, field, 1, 0xffffffff) };
  if (typeof v !== 'string') bad(field, `expected a netns name, path or inode, got ${JSON.stringify(v)}`);
  if (v.startsWith('/')) return { kind: 'path', path: v };
  if (!NETNS_NAME.test(v) || v === '.' || v === '..') bad(field, `not a valid netns name: ${JSON.stringify(v)}`);
  return { kind: 'name', name: v };
}

/** A CIDR (or a bare address = host prefix) as a 16-byte IPv4-mapped/IPv6 key. */
export interface Cidr {
  text: string;
  /** Prefix length over the 128-bit form (IPv4 prefixes + 96). */
  prefixlen: number;
  addr: Uint8Array;
}

export function ipBytes(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  if (isIP(text) === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    text.split('.').forEach((p, i) => (out[12 + i] = Number(p)));
    return out;
  }
  if (isIP(text) !== 6) return null;
  let s = text;
  const v4 = s.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    s = `${s.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head = '', tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

function cidr(v: unknown, field: string): Cidr {
  if (typeof v !== 'string') bad(field, `expected an address or CIDR, got ${JSON.stringify(v)}`);
  const [a = '', p] = v.split('/');
  const addr = ipBytes(a);
  if (!addr) bad(field, `not an IP address: ${JSON.stringify(a)}`);
  const v4 = isIP(a) === 4;
  const bits = p === undefined ? (v4 ? 32 : 128) : int(p, field, 0, v4 ? 32 : 128);
  return { text: v, prefixlen: v4 ? bits + 96 : bits, addr };
}

const PROTOCOLS: Record<string, number> = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58, sctp: 132 };

function protocol(v: unknown, field: string): number {
  if (typeof v === 'string' && v.toLowerCase() in PROTOCOLS) return PROTOCOLS[v.toLowerCase()]!;
  return int(v, field, 0, 255);
}

function ifname(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length >= IFNAMSIZ || /[\s/:]/.test(v)) {
    bad(field, `not a device name (1-${IFNAMSIZ - 1} chars, no whitespace, '/' or ':'): ${JSON.stringify(v)}`);
  }
  return v;
}

function each<T>(items: unknown[] | null, field: string, f: Parser<T>): readonly T[] | null {
  return items ? Object.freeze(items.map((x, i) => f(x, `${field}[${i}]`))) : null;
}

/** Run-time changeable filters. null = no filter ("all"). */
export const FILTER_SPEC = {
  netns: {
    doc: 'Owned network namespaces: names under /var/run/netns, absolute paths, or inode numbers; "all" (default) = every namespace on the kernel. Events elsewhere never leave the kernel.',
    parse: (v: unknown, f: string) => each(list(v, f, MAX_NETNS), f, netnsRef),
  },
  interfaces: {
    doc: 'Device names whose packets are captured at the device hooks (any owned namespace); "all" (default). Drops and socket events are not filtered by device.',
    parse: (v: unknown, f: string) => each(list(v, f, MAX_IFNAMES), f, ifname),
  },
  addrs: {
    doc: 'Addresses or CIDRs (IPv4 or IPv6); an event is kept when its source or destination is inside one. "all" (default).',
    parse: (v: unknown, f: string) => each(list(v, f, MAX_ADDRS), f, cidr),
  },
  ports: {
    doc: 'TCP/UDP ports; an event is kept when its source or destination port is one of them. "all" (default).',
    parse: (v: unknown, f: string) => each(list(v, f, MAX_PORTS), f, (x, g) => int(x, g, 0, 65535)),
  },
  protocols: {
    doc: 'L4 protocols kept: tcp, udp, icmp, icmpv6, sctp or IPPROTO numbers. "all" (default).',
    parse: (v: unknown, f: string) => each(list(v, f, 256), f, protocol),
  },
  sampleN: {
    doc: 'Keep packets of 1 flow in N: a TCP connection by its client ISN, so every node of its path agrees across NAT; other flows, and connections whose handshake was not seen, by a symmetric hash of the tuple (both directions agree, the two sides of a NAT decide apart). Drops, resets and socket events are never sampled. Default 1 (all).',
    parse: (v: unknown, f: string) => (v === undefined ? 1 : int(v, f, 1, 1 << 20)),
  },
} satisfies Record<string, Entry<unknown>>;

export const LIVE_SPEC = {
  ...FILTER_SPEC,
  node: {
    doc: 'Name of the node these records come from. Default: the host name.',
    parse: (v: unknown, f: string) => {
      if (v === undefined) return hostname();
      if (typeof v !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/.test(v)) bad(f, `not a node name: ${JSON.stringify(v)}`);
      return v;
    },
  },
  ringBytes: {
    doc: 'Ring buffer size in bytes: a power of two, 64 KiB to 1 GiB. Each record takes 136 bytes of it. Default 16 MiB.',
    parse: (v: unknown, f: string) => {
      const n = v === undefined ? 1 << 24 : int(v, f, 1 << 16, 1 << 30);
      if ((n & (n - 1)) !== 0) bad(f, `must be a power of two, got ${n}`);
      return n;
    },
  },
  wakeupFraction: {
    doc: 'The kernel wakes the agent early once this fraction of the ring is full; below it the agent drains on its timer only. Default 0.25.',
    parse: (v: unknown, f: string) => {
      const n = v === undefined ? 0.25 : Number(v);
      if (!(n > 0 && n <= 1)) bad(f, `expected a number in (0, 1], got ${JSON.stringify(v)}`);
      return n;
    },
  },
  drainIntervalMs: {
    doc: 'Shortest timer drain period in ms. The period scales so that each drain finds ~16,384 records (ring.ts DRAIN_TARGET_RECORDS), between this and drainIdleMs. Default 10.',
    parse: (v: unknown, f: string) => (v === undefined ? 10 : int(v, f, 1, 1000)),
  },
  drainIdleMs: {
    doc: 'Longest timer drain period in ms (see drainIntervalMs). A batch\'s linger (HOPTRACE_LINGER_MS; HOPTRACE_PARTIAL_LINGER_MS while it is not full) counts from the drain before the one that found its first record, so at low rates the agent adds at most the larger of the two to a record\'s latency. Default 250, the linger\'s default: a quiet agent wakes ~4 times a second, and each wake-up costs ~0.5 ms of CPU. drainIntervalMs when smaller.',
    parse: (v: unknown, f: string) => (v === undefined ? 250 : int(v, f, 1, 10_000)),
  },
  chunkRecords: {
    doc: `Most records per yielded chunk, at least a whole run (${RUN_MAX}). Default 8192 (1 MiB).`,
    parse: (v: unknown, f: string) => (v === undefined ? 8192 : int(v, f, RUN_MAX, 1 << 16)),
  },
  runRecords: {
    doc: `Records each CPU gathers in the kernel before writing them to the ring buffer together, as one ring record (1 to ${RUN_MAX}; 1 writes each on its own): one ring write per run instead of per record, and the agent copies a run out at once. Default ${RUN_MAX}.`,
    parse: (v: unknown, f: string) => (v === undefined ? RUN_MAX : int(v, f, 1, RUN_MAX)),
  },
  runFlushMs: {
    doc: 'Longest a run\'s first record waits in the kernel for the rest (a per-CPU timer then writes the run as it is), in ms. It adds to the latency of records on a quiet CPU; drainIdleMs adds after it. Default 10.',
    parse: (v: unknown, f: string) => (v === undefined ? 10 : int(v, f, 1, 10_000)),
  },
  queueIdleMs: {
    doc: 'net_dev_start_xmit (the time packets wait in a device queue) is linked only while packets leave an owned device through a root qdisc that queues (netem, shaping, a NIC\'s mq), and unlinked after this many ms without one: on a node of veth pairs (noqueue) it ran for every packet of every device and recorded nothing, ~1% of a CPU-bound node\'s CPU. The first packets through a queue that appears while it is unlinked have no queue time (up to ~100 ms plus a drain period). 0 keeps it linked. Default 10000.',
    parse: (v: unknown, f: string) => (v === undefined ? 10_000 : int(v, f, 0, 3_600_000)),
  },
  maxQueuedChunks: {
    doc: 'Full chunks\' worth of records held while the consumer is not pulling (maxQueuedChunks x chunkRecords records, however small the chunks); with no room for another chunk the source stops draining, and records wait in the ring buffer (ringBytes) until the consumer pulls: only a full ring loses them (counted by the kernel, ringbuf_full). Bounds memory to maxQueuedChunks x chunkRecords x 128 bytes. The agent\'s own buffer (bufferBytes) holds what Kafka has not taken; this queue only rides out pauses of its event loop. Default 8.',
    parse: (v: unknown, f: string) => (v === undefined ? 8 : int(v, f, 1, 4096)),
  },
  objects: {
    doc: 'BPF objects to load: packet, drop, tcp. Default all.',
    parse: (v: unknown, f: string): readonly ObjectName[] => {
      const items = list(v, f, OBJECTS.length);
      if (!items) return OBJECTS;
      return Object.freeze(
        items.map((x, i) => {
          if (!OBJECTS.includes(x as ObjectName)) bad(`${f}[${i}]`, `expected one of ${OBJECTS.join(', ')}, got ${JSON.stringify(x)}`);
          return x as ObjectName;
        }),
      );
    },
  },
  conntrackInPlace: {
    doc: 'Read conntrack entries in place (bpf_rdonly_cast) where the kernel\'s own BTF has struct nf_conn; false copies them out with bpf_probe_read_kernel, as happens anyway where conntrack is a module. Default true.',
    parse: (v: unknown, f: string) => {
      if (v === undefined) return true;
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      return bad(f, `expected true or false, got ${JSON.stringify(v)}`);
    },
  },
  deviceHooks: {
    doc: 'How packets are taken at devices: "tc" (tcx links on every device of the owned namespaces, kernel >= 6.6: nothing runs for packets elsewhere, and a call costs less than a tracepoint\'s; needs netns given by name or path), "tracepoint" (netif_receive_skb and net_dev_queue, which fire for every device of the machine and see a new device from its first packet), or "auto" (default): tc when netns names every owned namespace by name or path, else tracepoint.',
    parse: (v: unknown, f: string): 'auto' | 'tc' | 'tracepoint' => {
      if (v === undefined) return 'auto';
      if (v === 'auto' || v === 'tc' || v === 'tracepoint') return v;
      return bad(f, `expected auto, tc or tracepoint, got ${JSON.stringify(v)}`);
    },
  },
  objDir: {
    doc: 'Directory holding the compiled *.bpf.o. Default: bpf/.output of this checkout.',
    parse: (v: unknown, f: string) => {
      if (v === undefined) return defaultObjDir();
      if (typeof v !== 'string' || !v) bad(f, `expected a directory path, got ${JSON.stringify(v)}`);
      return resolve(v);
    },
  },
} satisfies Record<string, Entry<unknown>>;

type Parsed<S extends Record<string, Entry<unknown>>> = { readonly [K in keyof S]: ReturnType<S[K]['parse']> };
export type LiveFilters = Parsed<typeof FILTER_SPEC>;
export type LiveOptions = Parsed<typeof LIVE_SPEC>;
/** Input: plain values (from config, JSON or the command line); every field optional. */
export type LiveOptionsInput = { [K in keyof typeof LIVE_SPEC]?: unknown };
export type LiveFiltersInput = { [K in keyof typeof FILTER_SPEC]?: unknown };

function parseWith<S extends Record<string, Entry<unknown>>>(spec: S, plain: unknown, prefix: string): Parsed<S> {
  if (plain === null || typeof plain !== 'object' || Array.isArray(plain)) bad(prefix || '(root)', 'expected an object');
  const input = plain as Record<string, unknown>;
  for (const k of Object.keys(input)) if (!(k in spec)) bad(prefix + k, `unknown option (known: ${Object.keys(spec).join(', ')})`);
  const out: Record<string, unknown> = {};
  for (const [k, e] of Object.entries(spec)) out[k] = e.parse(input[k], prefix + k);
  return Object.freeze(out) as Parsed<S>;
}

/** Validates live options; throws LiveError HOP_LIVE_BAD_OPTION naming the bad field. */
export function parseLiveOptions(plain: LiveOptionsInput | unknown = {}): LiveOptions {
  return parseWith(LIVE_SPEC, plain, '');
}

/** Validates a run-time filter change (every field optional; absent = "all"). */
export function parseLiveFilters(plain: LiveFiltersInput | unknown = {}): LiveFilters {
  return parseWith(FILTER_SPEC, plain, '');
}

/** How packets are taken at devices (objects.ts, tcx.ts). */
export type DeviceHooks = 'tc' | 'tracepoint';

/** Whether every owned namespace is named by name or path, so it can be entered (tcx links are made inside it). */
export function netnsEnterable(netns: LiveFilters['netns']): boolean {
  return netns !== null && netns.every((r) => r.kind !== 'inode');
}

/**
 * The device hooks `o` resolves to on a kernel with (`kernelHasTcx`) or without tcx links
 * (BPF_TCX_INGRESS, Linux >= 6.6): tc needs them, and every owned namespace named by name
 * or path. Throws HOP_LIVE_BAD_OPTION for an explicit tc that cannot be had.
 */
export function deviceHooksOf(o: LiveOptions, kernelHasTcx = true): DeviceHooks {
  const enterable = netnsEnterable(o.netns);
  if (o.deviceHooks === 'tc' && !enterable) bad('deviceHooks', 'tc needs netns to name every owned namespace by name or path (a tcx link is made per device, inside its namespace)');
  if (o.deviceHooks === 'tc' && !kernelHasTcx) bad('deviceHooks', 'tc needs tcx links (BPF_TCX_INGRESS, Linux >= 6.6), which this kernel lacks; use tracepoint');
  return o.deviceHooks === 'tracepoint' || !enterable || !kernelHasTcx ? 'tracepoint' : 'tc';
}

/** The filter part of full options. */
export function filtersOf(o: LiveOptions): LiveFilters {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(FILTER_SPEC)) out[k] = o[k as keyof LiveFilters];
  return Object.freeze(out) as LiveFilters;
}

function defaultObjDir(): string {
  // Walk up from this module (services/agent/live, or dist/services/agent/live) to the checkout.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'bpf', '.output');
    if (existsSync(join(dir, 'bpf', 'events.h'))) return candidate;
    dir = dirname(dir);
  }
  return resolve('bpf/.output');
}
