/**
 * Writes validated filters (options.ts) into the kernel's filter maps. The
 * programs read them on every event, so a change applies at once, without
 * reloading. Sets are written before the config that switches them on, so an
 * event never meets a half-written filter that would wrongly drop it (it may
 * briefly meet the old one).
 */
import { bindings, lastErrno, BPF_ANY } from './libbpf.js';
import { LiveError } from './errors.js';
import { ADDR_KEY_SIZE, CfgFlag, FILTER_CFG_SIZE, IFNAMSIZ, SharedMap } from './kernel-abi.js';
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

export function encodeFilterCfg(f: LiveFilters, netnsOn: boolean): Buffer {
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
  return b;
}

/** Replaces the owned namespace set only (the config flag is unchanged). */
export function applyNetnsSet(maps: FilterMaps, netns: ReadonlySet<number>): void {
  const fd = maps.get(SharedMap.NETNS);
  if (fd !== undefined) replaceSet(fd, 4, [...netns].map(u32Key), SharedMap.NETNS);
}

/** Applies filters; `netns` null = all namespaces, else the owned inodes. */
export function applyFilters(maps: FilterMaps, f: LiveFilters, netns: ReadonlySet<number> | null): void {
  const { bpf } = bindings();
  const fd = (name: string): number | undefined => maps.get(name);

  const netnsFd = fd(SharedMap.NETNS);
  if (netnsFd !== undefined) replaceSet(netnsFd, 4, [...(netns ?? [])].map(u32Key), SharedMap.NETNS);

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

  const cfgFd = fd(SharedMap.CFG);
  if (cfgFd === undefined) throw new LiveError('HOP_LIVE_MAP_FAILED', `map ${SharedMap.CFG} missing`);
  if (bpf.bpf_map_update_elem(cfgFd, u32Key(0), encodeFilterCfg(f, netns !== null), BPF_ANY) !== 0) {
    fail(`cannot update ${SharedMap.CFG}`);
  }
}
