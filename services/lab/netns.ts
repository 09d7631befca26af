/** Small queries about namespaces, interfaces, processes and counters inside the lab. */
import { readlinkSync, statSync } from 'node:fs';
import { nsRun, run, sleep } from './exec.js';
import { ALL_NETNS } from './topology.js';

/** Names of the lab's namespaces that exist now (never any other hopt-*). */
export async function existingLabNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const present = new Set(stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean));
  return ALL_NETNS.filter((n) => present.has(n));
}

export function netnsInode(netns: string): number {
  return statSync(`/run/netns/${netns}`).ino;
}

/** Whether a pid is alive and still inside the namespace with this inode (pids get reused). */
export function pidInNetns(pid: number, inode: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`) === `net:[${inode}]`;
  } catch {
    return false;
  }
}

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  address: string;
}

export async function linksOf(netns: string): Promise<LinkInfo[]> {
  const { stdout } = await run('ip', ['-n', netns, '-j', 'link', 'show']);
  const rows = JSON.parse(stdout) as { ifname: string; ifindex: number; address?: string }[];
  return rows.map((r) => ({ ifname: r.ifname, ifindex: r.ifindex, address: r.address ?? '' }));
}

/** Pids of every process whose network namespace is `netns`. */
export async function pidsIn(netns: string): Promise<number[]> {
  const { stdout } = await run('ip', ['netns', 'pids', netns], { allowFail: true });
  return stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** A `/proc/net/snmp` or `/proc/net/netstat` counter inside a namespace, e.g. ('Tcp', 'OutRsts'). */
export async function snmpCounter(netns: string, file: 'snmp' | 'netstat', group: string, name: string): Promise<number> {
  const { stdout } = await nsRun(netns, 'cat', [`/proc/net/${file}`]);
  const lines = stdout.split('\n').filter((l) => l.startsWith(`${group}:`));
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i]!.split(/\s+/).slice(1);
    const vals = lines[i + 1]!.split(/\s+/).slice(1);
    const at = keys.indexOf(name);
    if (at >= 0) return Number(vals[at]);
  }
  return NaN;
}

/** Sum over CPUs of one `conntrack -S` statistic (e.g. invalid) in a namespace. */
export async function conntrackStat(netns: string, name: string): Promise<number> {
  const { stdout } = await nsRun(netns, 'conntrack', ['-S']);
  let sum = 0;
  for (const m of stdout.matchAll(new RegExp(`\\b${name}=(\\d+)`, 'g'))) sum += Number(m[1]);
  return sum;
}

export interface CtTuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

export interface CtEntry {
  state: string;
  orig: CtTuple;
  reply: CtTuple;
  line: string;
}

/** TCP conntrack entries of a namespace (`conntrack -L -p tcp`), parsed. */
export async function conntrackList(netns: string): Promise<CtEntry[]> {
  const { stdout } = await nsRun(netns, 'conntrack', ['-L', '-p', 'tcp'], { allowFail: true });
  const out: CtEntry[] = [];
  for (const line of stdout.split('\n')) {
    const kv = [...line.matchAll(/\b(src|dst|sport|dport)=(\S+)/g)].map((m) => [m[1]!, m[2]!] as const);
    if (kv.length < 8) continue;
    const tuple = (part: (readonly [string, string])[]): CtTuple => {
      const o = Object.fromEntries(part);
      return { src: o.src ?? '', dst: o.dst ?? '', sport: Number(o.sport), dport: Number(o.dport) };
    };
    const state = /^\s*tcp\s+\d+\s+\d+\s+([A-Z_]+)/.exec(line)?.[1] ?? '';
    out.push({ state, orig: tuple(kv.slice(0, 4)), reply: tuple(kv.slice(4, 8)), line: line.trim() });
  }
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** SIGTERM, then SIGKILL whatever is still there after `graceMs`. Only pids the lab started or found in its namespaces. */
export async function terminate(pids: number[], graceMs: number): Promise<void> {
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(25);
  for (const pid of pids.filter(alive)) signal(pid, 'SIGKILL');
}

/** In-kernel forwarding of every frame arriving on `from` out of `to` (the wire's normal, undelayed state). */
export async function mirror(netns: string, from: string, to: string): Promise<void> {
  await run('tc', ['-n', netns, 'filter', 'replace', 'dev', from, 'ingress', 'protocol', 'all', 'prio', '1', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to]);
}

export async function unmirror(netns: string, from: string): Promise<void> {
  await run('tc', ['-n', netns, 'filter', 'del', 'dev', from, 'ingress', 'protocol', 'all', 'prio', '1'], { allowFail: true });
}
