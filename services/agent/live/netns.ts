/**
 * Network namespaces by name (/var/run/netns/<name>, as `ip netns` creates
 * them), by path, or by inode. The kernel programs see a namespace as the
 * inode of its nsfs file (net->ns.inum), which is what stat() returns here.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LiveError } from './errors.js';
import type { NetnsRef } from './options.js';

export const NETNS_DIR = '/var/run/netns';

export function netnsInode(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

/** The nsfs path a name or path reference enters by. */
function refPath(r: Exclude<NetnsRef, { kind: 'inode' }>): string {
  return r.kind === 'name' ? join(NETNS_DIR, r.name) : r.path;
}

/** Inodes of the referenced namespaces. Throws HOP_LIVE_NETNS_NOT_FOUND naming the entry. */
export function resolveNetns(refs: readonly NetnsRef[], field = 'netns'): Set<number> {
  const out = new Set<number>();
  refs.forEach((r, i) => {
    if (r.kind === 'inode') {
      out.add(r.inode);
      return;
    }
    const path = refPath(r);
    const ino = netnsInode(path);
    if (ino === null) {
      throw new LiveError('HOP_LIVE_NETNS_NOT_FOUND', `live option ${field}[${i}]: no network namespace at ${path}`, true);
    }
    out.add(ino);
  });
  return out;
}

/** Like resolveNetns, but skips namespaces that do not exist (yet, or any more). */
export function resolveNetnsPresent(refs: readonly NetnsRef[]): Set<number> {
  const out = new Set<number>();
  for (const r of refs) {
    const ino = r.kind === 'inode' ? r.inode : netnsInode(refPath(r));
    if (ino !== null) out.add(ino);
  }
  return out;
}

/** The referenced namespaces that exist now, each with a path to enter it by (inode references have none and are left out). */
export function netnsPaths(refs: readonly NetnsRef[]): { path: string; inode: number }[] {
  const out: { path: string; inode: number }[] = [];
  for (const r of refs) {
    if (r.kind === 'inode') continue;
    const path = refPath(r);
    const inode = netnsInode(path);
    if (inode !== null) out.push({ path, inode });
  }
  return out;
}

/** inode -> name of every namespace named under /var/run/netns, and the agent's own as "host". */
export function namedNetns(): Map<number, string> {
  const out = new Map<number, string>();
  const self = netnsInode('/proc/self/ns/net');
  if (self !== null) out.set(self, 'host');
  let names: string[] = [];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return out;
  }
  for (const n of names) {
    const ino = netnsInode(join(NETNS_DIR, n));
    if (ino !== null) out.set(ino, n);
  }
  return out;
}
