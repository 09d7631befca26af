/**
 * Run-time knobs of a running lab: netem delay/loss per directional link, DROP rules on
 * any lab namespace, and per-node clock offsets (recorded for the agent launcher). Each
 * change is applied, then recorded in the state file.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LabError } from './errors.js';
import { nsRun, run, sleep, spawnInNs } from './exec.js';
import { alive, mirror, pidInNetns, terminate, unmirror } from './netns.js';
import { logDir, python, workloadDir } from './paths.js';
import { requireState, writeState, type DropState, type LabState, type NetemState } from './state.js';
import { isNodeName, NODES, SIDECAR, type NodeName } from './topology.js';

/** Parses `20ms`, `1.5ms`, `500us`, `2s` or a bare number of ms. */
export function parseDurationMs(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(us|ms|s)?$/.exec(raw.trim());
  if (!m) throw new LabError('HOP_LAB_BAD_ARGUMENT', `not a duration: ${JSON.stringify(raw)} (e.g. 20ms, 500us, 1s)`);
  const v = Number(m[1]);
  const ms = m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  if (ms > 60_000) throw new LabError('HOP_LAB_BAD_ARGUMENT', `duration ${raw} is over 60 s`);
  return ms;
}

/** Parses `1%`, `0.5%` or a bare percentage. */
export function parsePercent(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(raw.trim());
  const v = m ? Number(m[1]) : NaN;
  if (!(v >= 0 && v <= 100)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `not a percentage in [0, 100]: ${JSON.stringify(raw)}`);
  return v;
}

function fmtMs(ms: number): string {
  return `${Math.round(ms * 1000)}us`;
}

/**
 * Sets (spec) or clears (null, or an all-zero spec) delay/loss on one direction of a link,
 * e.g. `lb-c`: frames going from node-lb to node-c. Ids are in state.links.
 *
 * Inter-node links are made slow in their wire namespace: a relay (workload/wire.py) is
 * started for that direction, and once it is reading, the in-kernel mirred redirect for
 * that direction is removed; clearing restores the redirect first and then lets the relay
 * deliver what it still holds. Frames crossing during a switch may be duplicated (never
 * lost), so switch while the link is quiet when exact packet counts matter. Pod links
 * have no wire: they take tc netem, where the kernel has it.
 */
export async function netem(linkId: string, spec: Partial<NetemState> | null): Promise<LabState> {
  const state = requireState();
  const link = state.links[linkId];
  if (!link) throw new LabError('HOP_LAB_BAD_ARGUMENT', `unknown link ${JSON.stringify(linkId)}; links: ${Object.keys(state.links).join(', ')}`);
  let n: NetemState | null = null;
  if (spec !== null) {
    n = { delayMs: spec.delayMs ?? 0, jitterMs: spec.jitterMs ?? 0, lossPct: spec.lossPct ?? 0 };
    for (const [k, v] of Object.entries(n)) if (!(Number.isFinite(v) && v >= 0)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `netem ${k} must be a non-negative number`);
    if (n.lossPct > 100) throw new LabError('HOP_LAB_BAD_ARGUMENT', 'netem loss is a percentage in [0, 100]');
    if (n.delayMs === 0 && n.jitterMs === 0 && n.lossPct === 0) n = null;
  }
  if (link.wire) await wireNetem(state, linkId, link.wire, n);
  else await qdiscNetem(link.from, n, state);
  link.netem = n;
  writeState(state);
  return state;
}

async function wireNetem(state: LabState, linkId: string, w: { netns: string; in: string; out: string }, n: NetemState | null): Promise<void> {
  const name = `wire-${linkId}`;
  const old = state.processes.filter((p) => p.name === name);
  const inode = state.wires[w.netns]?.inode ?? -1;
  const stopOld = () => terminate(old.filter((p) => pidInNetns(p.pid, inode)).map((p) => p.pid), 2000 + (n?.delayMs ?? 0) * 2);
  if (n === null) {
    await mirror(w.netns, w.in, w.out);
    await stopOld(); // it delivers what it holds, then exits
    state.processes = state.processes.filter((p) => p.name !== name);
    return;
  }
  const argv = [
    python(),
    join(workloadDir, 'wire.py'),
    '--in',
    w.in,
    '--out',
    w.out,
    '--delay-us',
    String(Math.round(n.delayMs * 1000)),
    '--jitter-us',
    String(Math.round(n.jitterMs * 1000)),
    '--loss-pct',
    String(n.lossPct),
    '--name',
    name,
  ];
  const log = join(logDir, `${name}.log`);
  mkdirSync(logDir, { recursive: true });
  const from = existsSync(log) ? statSync(log).size : 0;
  const pid = spawnInNs(w.netns, argv[0]!, argv.slice(1), log);
  const deadline = Date.now() + 10_000;
  while (!readFileSync(log, 'utf8').slice(from).includes('"event": "ready"')) {
    // (not pidInNetns: until `ip netns exec` has switched namespaces the pid is still in the host's)
    if (Date.now() > deadline || !alive(pid)) {
      await terminate([pid], 500);
      throw new LabError('HOP_LAB_COMMAND', `the delay relay for ${linkId} did not start: ${readFileSync(log, 'utf8').slice(from).trim().slice(-400)}`);
    }
    await sleep(20);
  }
  await unmirror(w.netns, w.in);
  await stopOld();
  state.processes = [...state.processes.filter((p) => p.name !== name), { name, netns: w.netns, pid, argv, log }];
}

async function qdiscNetem(from: { netns: string; ifname: string }, n: NetemState | null, state: LabState): Promise<void> {
  if (n === null) {
    // No qdisc to delete is fine: clearing is idempotent.
    await run('tc', ['-n', from.netns, 'qdisc', 'del', 'dev', from.ifname, 'root'], { allowFail: true });
    return;
  }
  const args = ['-n', from.netns, 'qdisc', 'replace', 'dev', from.ifname, 'root', 'netem', 'delay', fmtMs(n.delayMs)];
  if (n.jitterMs > 0) args.push(fmtMs(n.jitterMs));
  args.push('loss', `${n.lossPct}%`, 'limit', '10000');
  const r = await run('tc', args, { allowFail: true });
  if (r.code !== 0) {
    const wired = Object.entries(state.links).filter(([, l]) => l.wire).map(([id]) => id);
    const why = /unknown/i.test(r.stderr) ? 'this kernel has no sch_netem' : r.stderr.trim();
    throw new LabError('HOP_LAB_COMMAND', `cannot add netem on ${from.netns} ${from.ifname}: ${why}; delay and loss work on the inter-node links: ${wired.join(', ')}`);
  }
}

export type DropHook = DropState['hook'];

export interface DropSpec {
  /** Built-in chain: FORWARD (default on nodes: traffic passing through), INPUT (default on pods), OUTPUT. */
  hook?: DropHook;
  proto?: 'tcp' | 'udp' | 'icmp';
  /** Source / destination address or CIDR. */
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  /** Drop only this fraction of matching packets (statistic random), (0, 1]. */
  probability?: number;
  /** Answer instead of dropping, as a firewall's REJECT does: a TCP reset for TCP, ICMP port unreachable otherwise. */
  reject?: boolean;
}

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(\/(\d{1,2}))?$/;

function checkCidr(what: string, v: string): string {
  const m = CIDR.exec(v);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || (m[6] !== undefined && Number(m[6]) > 32)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `${what}: not an IPv4 address or CIDR: ${JSON.stringify(v)}`);
  return v;
}

function checkPort(what: string, v: number): string {
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new LabError('HOP_LAB_BAD_ARGUMENT', `${what}: not a port: ${v}`);
  return String(v);
}

/** A node name (node-lb), a pod name (server), a namespace key (lb) or a lab namespace name. */
export function resolveNetns(state: LabState, where: string): string {
  if (isNodeName(where)) return state.nodes[where].netns;
  const pod = state.pods[where as keyof LabState['pods']];
  if (pod) return pod.netns;
  if (state.namespaces[where]) return where;
  for (const n of NODES) if (n === `node-${where}`) return state.nodes[n].netns;
  throw new LabError('HOP_LAB_BAD_ARGUMENT', `unknown node, pod or namespace ${JSON.stringify(where)}; namespaces: ${Object.keys(state.namespaces).join(', ')}`);
}

/** The iptables match for a drop spec; without any match on a node, the VIP's backend traffic. */
export function dropMatch(state: LabState, netns: string, spec: DropSpec): { hook: DropHook; match: string[] } {
  const kind = state.namespaces[netns]?.kind ?? 'node';
  const hook = spec.hook ?? (kind === 'node' ? 'FORWARD' : 'INPUT');
  if (!['FORWARD', 'INPUT', 'OUTPUT'].includes(hook)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `hook must be FORWARD, INPUT or OUTPUT, not ${hook}`);
  const given = spec.src !== undefined || spec.dst !== undefined || spec.sport !== undefined || spec.dport !== undefined || spec.proto !== undefined;
  const s: DropSpec = given ? spec : kind === 'node' ? { proto: 'tcp', dst: state.backends.map((b) => b.ip).join(','), dport: SIDECAR.appPort } : { proto: 'tcp' };
  const match: string[] = [];
  const proto = s.proto ?? (s.sport !== undefined || s.dport !== undefined ? 'tcp' : undefined);
  if (proto) {
    if (!['tcp', 'udp', 'icmp'].includes(proto)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `proto must be tcp, udp or icmp, not ${proto}`);
    match.push('-p', proto);
  }
  if (s.src !== undefined) match.push('-s', s.src.split(',').map((x) => checkCidr('src', x)).join(','));
  if (s.dst !== undefined) match.push('-d', s.dst.split(',').map((x) => checkCidr('dst', x)).join(','));
  if (s.sport !== undefined || s.dport !== undefined) {
    if (proto === 'icmp') throw new LabError('HOP_LAB_BAD_ARGUMENT', 'ports need tcp or udp');
    match.push('-m', proto!);
    if (s.sport !== undefined) match.push('--sport', checkPort('sport', s.sport));
    if (s.dport !== undefined) match.push('--dport', checkPort('dport', s.dport));
  }
  if (spec.probability !== undefined) {
    if (!(spec.probability > 0 && spec.probability <= 1)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `probability must be in (0, 1], not ${spec.probability}`);
    if (spec.probability < 1) match.push('-m', 'statistic', '--mode', 'random', '--probability', String(spec.probability));
  }
  return { hook, match };
}

const chainOf = (hook: DropHook) => `HOPT-DROP-${hook}`;

/** The rule's `-j` target and options. */
export const targetOf = (d: Pick<DropState, 'target'>): string[] => d.target ?? ['DROP'];

/** Adds a DROP (or REJECT) rule in a lab namespace (its own chain, jumped to first from the hook). */
export async function dropRule(where: string, spec: DropSpec = {}): Promise<DropState> {
  const state = requireState();
  const netns = resolveNetns(state, where);
  const { hook, match } = dropMatch(state, netns, spec);
  const chain = chainOf(hook);
  const ipt = (args: string[], allowFail = false) => nsRun(netns, 'iptables', ['-w', '-t', 'filter', ...args], { allowFail });
  if ((await ipt(['-n', '-L', chain], true)).code !== 0) await ipt(['-N', chain]);
  if ((await ipt(['-C', hook, '-j', chain], true)).code !== 0) await ipt(['-I', hook, '1', '-j', chain]);
  const used = new Set(state.drops.map((d) => d.id));
  let i = 1;
  while (used.has(`hopt-drop-${i}`)) i++;
  const id = `hopt-drop-${i}`;
  const target = spec.reject ? ['REJECT', '--reject-with', match.includes('tcp') ? 'tcp-reset' : 'icmp-port-unreachable'] : ['DROP'];
  await ipt(['-A', chain, ...match, '-m', 'comment', '--comment', id, '-j', ...target]);
  const d: DropState = { id, netns, hook, match, target };
  state.drops.push(d);
  writeState(state);
  return d;
}

/** Removes drop rules: one by id, those of one namespace, or (no argument) all. Returns the removed ones. */
export async function dropClear(target?: { id?: string; where?: string }): Promise<DropState[]> {
  const state = requireState();
  const netns = target?.where !== undefined ? resolveNetns(state, target.where) : undefined;
  const gone = state.drops.filter((d) => (target?.id === undefined || d.id === target.id) && (netns === undefined || d.netns === netns));
  if (target?.id !== undefined && gone.length === 0) throw new LabError('HOP_LAB_BAD_ARGUMENT', `no drop rule ${target.id}; rules: ${state.drops.map((d) => d.id).join(', ') || 'none'}`);
  for (const d of gone) {
    const ipt = (args: string[]) => nsRun(d.netns, 'iptables', ['-w', '-t', 'filter', ...args], { allowFail: true });
    await ipt(['-D', chainOf(d.hook), ...d.match, '-m', 'comment', '--comment', d.id, '-j', ...targetOf(d)]);
  }
  state.drops = state.drops.filter((d) => !gone.includes(d));
  // Unhook chains that no longer hold rules.
  const pairs = new Set(gone.map((d) => `${d.netns} ${d.hook}`));
  for (const pair of pairs) {
    const [ns, hook] = pair.split(' ') as [string, DropHook];
    if (state.drops.some((d) => d.netns === ns && d.hook === hook)) continue;
    const ipt = (args: string[]) => nsRun(ns, 'iptables', ['-w', '-t', 'filter', ...args], { allowFail: true });
    await ipt(['-D', hook, '-j', chainOf(hook)]);
    await ipt(['-F', chainOf(hook)]);
    await ipt(['-X', chainOf(hook)]);
  }
  writeState(state);
  return gone;
}

/** Records the clock offset an agent for `node` should apply (the lab itself changes no clock). */
export function setClockOffset(node: string, ms: number): LabState {
  if (!isNodeName(node)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `unknown node ${JSON.stringify(node)}; nodes: ${NODES.join(', ')}`);
  if (!Number.isFinite(ms)) throw new LabError('HOP_LAB_BAD_ARGUMENT', 'clock offset must be a number of ms');
  const state = requireState();
  state.nodes[node as NodeName].clockOffsetMs = ms;
  writeState(state);
  return state;
}

export type Fix = LabState['fixes'][number];
export const FIXES: readonly Fix[] = ['be-liberal', 'drop-invalid'];

/**
 * Applies (or with `undo` removes) one of the incident's fixes in every backend pod:
 * `be-liberal` sets net.netfilter.nf_conntrack_tcp_be_liberal=1 (the out-of-window segment
 * stays tracked, so it is REDIRECTed to the proxy, whose socket ignores it);
 * `drop-invalid` drops INVALID packets in mangle PREROUTING, before NAT (the segment is lost
 * instead of reaching the listener). Either way inject-oow no longer resets the client.
 */
export async function applyFix(fix: Fix, undo = false): Promise<LabState> {
  if (!FIXES.includes(fix)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `unknown fix ${JSON.stringify(fix)}; fixes: ${FIXES.join(', ')}`);
  const state = requireState();
  for (const b of state.backends) {
    const netns = state.pods[b.pod]!.netns;
    if (fix === 'be-liberal') {
      const value = undo ? '0' : '1';
      await nsRun(netns, 'sysctl', ['-q', '-w', `net.netfilter.nf_conntrack_tcp_be_liberal=${value}`]);
      state.namespaces[netns]!.sysctls['net.netfilter.nf_conntrack_tcp_be_liberal'] = value;
    } else {
      const rule = ['PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-m', 'comment', '--comment', 'hopt-fix-drop-invalid', '-j', 'DROP'];
      const present = (await nsRun(netns, 'iptables', ['-w', '-t', 'mangle', '-C', ...rule], { allowFail: true })).code === 0;
      if (!undo && !present) await nsRun(netns, 'iptables', ['-w', '-t', 'mangle', '-I', ...rule]);
      if (undo && present) await nsRun(netns, 'iptables', ['-w', '-t', 'mangle', '-D', ...rule]);
    }
  }
  state.fixes = undo ? state.fixes.filter((f) => f !== fix) : [...new Set([...state.fixes, fix])];
  writeState(state);
  return state;
}
