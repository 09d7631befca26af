/**
 * Writes validated filters (options.ts) into the kernel's filter maps. The
 * programs read them on every event, so a change applies at once, without
 * reloading. Sets are written before the config that switches them on, so an
 * event never meets a half-written filter that would wrongly drop it (it may
 * briefly meet the old one).
 */
import { bindings, lastErrno, BPF_ANY } from './libbpf.js';
import { LiveError } from './errors.js';
import { ADDR_KEY_SIZE, CfgFlag, FILTER_CFG_SIZE, IFNAMSIZ, NETNS_PROBES, NETNS_SLOTS, SharedMap } from './kernel-abi.js';
import type { LiveFilters } from './options.js';

export interface FilterMaps {
  get(name: string): number | undefined;
}

function fail(what: string): never {
  throw new LiveError('HOP_LIVE_MAP_FAILED', `${what} (errno ${lastErrno()})`, true);
}

/** Replaces the contents of a set-like map (value u8 = 1) with `keys`. */
function replaceSet(fd: number, keySize: number, keys: readonly Uint8Array[], name: string): void {
  const { bpf } = bindings();
  const want = new Set(keys.map((k) => Buffer.from(k).toString('hex')));
  const one = new Uint8Array([1]);
  for (const k of keys) if (bpf.bpf_map_update_elem(fd, k, one, BPF_ANY) !== 0) fail(`cannot update ${name}`);
  // Collect first, then delete: deleting while iterating restarts the walk.
  const stale: Uint8Array[] = [];
  let prev: Uint8Array | null = null;
  for (;;) {
    const next = new Uint8Array(keySize);
    if (bpf.bpf_map_get_next_key(fd, prev, next) !== 0) break;
    if (!want.has(Buffer.from(next).toString('hex'))) stale.push(next);
    prev = next;
  }
  for (const k of stale) bpf.bpf_map_delete_elem(fd, k);
}

export function u32Key(n: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function encodeFilterCfg(f: LiveFilters, netnsOn: boolean, netnsBase = 0): Buffer {
  const b = Buffer.alloc(FILTER_CFG_SIZE);
  let flags = 0;
  if (netnsOn) flags |= CfgFlag.NETNS;
  if (f.addrs) flags |= CfgFlag.ADDR;
  if (f.ports) flags |= CfgFlag.PORT;
  if (f.protocols) flags |= CfgFlag.PROTO;
  if (f.interfaces) flags |= CfgFlag.IFNAME;
  b.writeUInt32LE(flags, 0);
  b.writeUInt32LE(f.sampleN, 4);
  const bits = [0n, 0n, 0n, 0n];
  for (const p of f.protocols ?? []) bits[p >> 6]! |= 1n << BigInt(p & 63);
  bits.forEach((v, i) => b.writeBigUInt64LE(v, 8 + 8 * i));
  b.writeUInt32LE(netnsBase, 40);
  return b;
}

/** Home slot of a namespace inode in an owned-namespace table: hop_mix32 (bpf/filter.bpf.h). */
export function netnsHome(ino: number): number {
  let h = Math.imul(ino, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/**
 * Slot -> inode of one owned-namespace table holding `inodes`, placed as the programs
 * look them up (hop_netns_admit): linear probing from the home slot, at most
 * NETNS_PROBES slots. Throws for a set that would need more (practically never below
 * MAX_NETNS namespaces in NETNS_SLOTS slots).
 */
export function netnsLayout(inodes: Iterable<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const ino of new Set(inodes)) {
    const home = netnsHome(ino);
    let placed = false;
    for (let i = 0; i < NETNS_PROBES && !placed; i++) {
      const slot = (home + i) & (NETNS_SLOTS - 1);
      if (out.has(slot)) continue;
      out.set(slot, ino);
      placed = true;
    }
    if (!placed) throw new LiveError('HOP_LIVE_BAD_OPTION', `live option netns: cannot place namespace ${ino} within ${NETNS_PROBES} slots of the kernel's table; own fewer namespaces`);
  }
  return out;
}

/** Writes filters into the kernel's maps; holds which owned-namespace table is live. */
export interface FilterWriter {
  /** Applies filters; `netns` null = all namespaces, else the owned inodes. */
  apply(f: LiveFilters, netns: ReadonlySet<number> | null): void;
  /** Replaces the owned namespace set only (the other filters as last applied). */
  applyNetns(netns: ReadonlySet<number>): void;
}

/**
 * The owned namespaces live in two tables (bpf/shared_maps.bpf.h hop_netns): a change is
 * written into the one the programs are not reading, then the config flips to it in one
 * update, so no event meets a half-written set.
 */
export function createFilterWriter(maps: FilterMaps): FilterWriter {
  const { bpf } = bindings();
  const fd = (name: string): number | undefined => maps.get(name);
  let live = 0;
  /** What each table holds: slot -> inode. */
  const tables = [new Map<number, number>(), new Map<number, number>()];
  let last: { f: LiveFilters; netnsOn: boolean } | null = null;

  /** Fills the table not in use with `netns`; returns its index. */
  function fillSpare(netns: Iterable<number>): number {
    const spare = 1 - live;
    const netnsFd = fd(SharedMap.NETNS);
    const want = netnsLayout(netns);
    if (netnsFd === undefined) return spare;
    const had = tables[spare]!;
    const write = (slot: number, ino: number) => {
      if (bpf.bpf_map_update_elem(netnsFd, u32Key(spare * NETNS_SLOTS + slot), u32Key(ino), BPF_ANY) !== 0) fail(`cannot update ${SharedMap.NETNS}`);
    };
    for (const [slot, ino] of want) if (had.get(slot) !== ino) write(slot, ino);
    for (const slot of had.keys()) if (!want.has(slot)) write(slot, 0);
    tables[spare] = want;
    return spare;
  }

  function writeCfg(f: LiveFilters, netnsOn: boolean, table: number): void {
    const cfgFd = fd(SharedMap.CFG);
    if (cfgFd === undefined) throw new LiveError('HOP_LIVE_MAP_FAILED', `map ${SharedMap.CFG} missing`);
    if (bpf.bpf_map_update_elem(cfgFd, u32Key(0), encodeFilterCfg(f, netnsOn, table * NETNS_SLOTS), BPF_ANY) !== 0) fail(`cannot update ${SharedMap.CFG}`);
    live = table;
    last = { f, netnsOn };
  }

  return {
    apply(f, netns) {
      const table = fillSpare(netns ?? []);

      const addrsFd = fd(SharedMap.ADDRS);
      if (addrsFd !== undefined) {
        const keys = (f.addrs ?? []).map((c) => {
          const k = Buffer.alloc(ADDR_KEY_SIZE);
          k.writeUInt32LE(c.prefixlen, 0);
          k.set(c.addr, 4);
          return k;
        });
        replaceSet(addrsFd, ADDR_KEY_SIZE, keys, SharedMap.ADDRS);
      }

      const portsFd = fd(SharedMap.PORTS);
      if (portsFd !== undefined) {
        const keys = (f.ports ?? []).map((p) => {
          const k = Buffer.alloc(2);
          k.writeUInt16LE(p);
          return k;
        });
        replaceSet(portsFd, 2, keys, SharedMap.PORTS);
      }

      const ifFd = fd(SharedMap.IFNAMES);
      if (ifFd !== undefined) {
        const keys = (f.interfaces ?? []).map((n) => {
          const k = Buffer.alloc(IFNAMSIZ);
          k.write(n, 'latin1');
          return k;
        });
        replaceSet(ifFd, IFNAMSIZ, keys, SharedMap.IFNAMES);
      }

      writeCfg(f, netns !== null, table);
    },
    applyNetns(netns) {
      if (!last) throw new LiveError('HOP_LIVE_MAP_FAILED', 'owned namespaces changed before any filter was applied');
      writeCfg(last.f, last.netnsOn, fillSpare(netns));
    },
  };
}
