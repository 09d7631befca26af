/**
 * Bringing the lab up and down, its status, and the client workload. `up` and `down`
 * are idempotent: `up` first removes whatever an earlier lab left, `down` removes every
 * lab namespace that exists (and the processes in them) whether or not a state file does.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LabError } from './errors.js';
import { nsRun, run, sleep, spawnInNs } from './exec.js';
import { existingLabNetns, linksOf, mirror, netnsInode, pidInNetns, pidsIn, terminate } from './netns.js';
import { logDir, workloadDir } from './paths.js';
import { readState, removeState, requireState, writeState, type InterfaceState, type LabState, type NamespaceState, type NodeState, type PodState, type ProcessState, type WireState } from './state.js';
import { defaultOptions, NODES, nodeNetns, planLab, SIDECAR, VIP, type LabOptions, type LabPlan, type NodeName, type PodPlan } from './topology.js';

const NODE_ROLE: Record<NodeName, NodeState['role']> = { 'node-a': 'client', 'node-lb': 'lb', 'node-c': 'server' };

export interface UpOptions extends Partial<LabOptions> {
  /** Skip the end-to-end check through the VIP after start (default: check). */
  skipHealthCheck?: boolean;
}

/** Builds the lab (after removing any previous one) and returns its state. */
export async function labUp(opts: UpOptions = {}): Promise<LabState> {
  const options: LabOptions = {
    snat: opts.snat ?? defaultOptions.snat,
    backends: opts.backends ?? defaultOptions.backends,
    lbLiberal: opts.lbLiberal ?? defaultOptions.lbLiberal,
    clockOffsetsMs: { ...(opts.clockOffsetsMs ?? {}) },
  };
  if (options.backends !== 1 && options.backends !== 2) throw new LabError('HOP_LAB_BAD_ARGUMENT', `backends must be 1 or 2, not ${String(options.backends)}`);
  for (const [node, ms] of Object.entries(options.clockOffsetsMs)) {
    if (!(NODES as readonly string[]).includes(node)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `clock offset for unknown node ${node} (nodes: ${NODES.join(', ')})`);
    if (!Number.isFinite(ms)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `clock offset for ${node} is not a number`);
  }
  await labDown();
  // Logs of the previous lab stay until the next `up`, for post-mortems.
  rmSync(logDir, { recursive: true, force: true });
  mkdirSync(logDir, { recursive: true });
  const plan = planLab(options);
  try {
    await build(plan);
    const processes = startWorkloads(plan);
    const state = await describe(plan, processes);
    writeState(state);
    await waitListening(state);
    if (!opts.skipHealthCheck) {
      const r = await runRequests(3, { timeoutMs: 3000 });
      if (r.ok !== r.requests) throw new LabError('HOP_LAB_UNHEALTHY', `requests through the VIP fail after start: ${JSON.stringify(r.errors)}`);
    }
    return state;
  } catch (err) {
    await labDown().catch(() => undefined);
    throw err;
  }
}

async function build(plan: LabPlan): Promise<void> {
  const wires = plan.cables.flatMap((c) => (c.wire ? [c.wire.netns] : []));
  for (const ns of [...plan.namespaces.map((n) => n.netns), ...wires]) {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  for (const ns of plan.namespaces) {
    // conntrack sysctls are written after the rules below; the rest before any interface exists.
    const early = Object.entries(ns.sysctls).filter(([k]) => !k.startsWith('net.netfilter.'));
    await nsRun(ns.netns, 'sysctl', ['-q', '-w', ...early.map(([k, v]) => `${k}=${v}`)]);
  }
  for (const w of wires) await nsRun(w, 'sysctl', ['-q', '-w', ...Object.entries(WIRE_SYSCTLS).map(([k, v]) => `${k}=${v}`)]);

  // Both ends of every veth are created directly inside their namespaces: nothing ever appears in the host's.
  const veth = (a: { netns: string; ifname: string }, b: { netns: string; ifname: string }) =>
    run('ip', ['link', 'add', a.ifname, 'netns', a.netns, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.netns]);
  for (const c of plan.cables) {
    if (c.wire) {
      const w = c.wire;
      await veth(c.a, { netns: w.netns, ifname: w.aIf });
      await veth(c.b, { netns: w.netns, ifname: w.bIf });
      for (const i of [w.aIf, w.bIf]) {
        await run('ip', ['-n', w.netns, 'link', 'set', i, 'up']);
        await run('tc', ['-n', w.netns, 'qdisc', 'add', 'dev', i, 'clsact']);
      }
      await mirror(w.netns, w.aIf, w.bIf);
      await mirror(w.netns, w.bIf, w.aIf);
    } else await veth(c.a, c.b);
    for (const end of [c.a, c.b]) {
      const addr = end.peerAddress ? [end.address, 'peer', `${end.peerAddress}/32`] : [`${end.address}/${end.prefix}`];
      await run('ip', ['-n', end.netns, 'addr', 'add', ...addr, 'dev', end.ifname]);
      await run('ip', ['-n', end.netns, 'link', 'set', end.ifname, 'up']);
    }
  }
  for (const ns of plan.namespaces) {
    for (const r of ns.routes) await run('ip', ['-n', ns.netns, 'route', 'add', r.dst, 'via', r.via]);
    if (ns.iptables) await nsRun(ns.netns, 'iptables-restore', ['-w'], { input: ns.iptables });
    const late = Object.entries(ns.sysctls).filter(([k]) => k.startsWith('net.netfilter.'));
    if (late.length) await nsRun(ns.netns, 'sysctl', ['-q', '-w', ...late.map(([k, v]) => `${k}=${v}`)]);
  }
}

/** A wire namespace carries frames only: no IPv6 chatter of its own. */
const WIRE_SYSCTLS = { 'net.ipv6.conf.all.disable_ipv6': '1', 'net.ipv6.conf.default.disable_ipv6': '1' };

function startWorkloads(plan: LabPlan): ProcessState[] {
  const out: ProcessState[] = [];
  const start = (name: string, netns: string, script: string, args: string[]) => {
    const argv = [process.execPath, join(workloadDir, script), ...args];
    const log = join(logDir, `${name}.log`);
    const pid = spawnInNs(netns, argv[0]!, argv.slice(1), log);
    out.push({ name, netns, pid, argv, log });
  };
  for (const p of plan.pods.filter((x) => x.role === 'backend')) {
    start(`app-${p.name}`, p.netns, 'app.js', ['--port', String(SIDECAR.appPort), '--name', `app-${p.name}`]);
    start(`proxy-${p.name}`, p.netns, 'proxy.js', [
      '--listen',
      String(SIDECAR.proxyPort),
      '--upstream',
      `127.0.0.1:${SIDECAR.appPort}`,
      '--admin',
      String(SIDECAR.adminPort),
      '--name',
      `proxy-${p.name}`,
    ]);
  }
  return out;
}

/** The state file content: the plan plus what only exists once built (inodes, ifindexes, pids). */
async function describe(plan: LabPlan, processes: ProcessState[]): Promise<LabState> {
  const namespaces: Record<string, NamespaceState> = {};
  const wires: Record<string, WireState> = {};
  const linkInfo = new Map<string, Awaited<ReturnType<typeof linksOf>>>();
  const info = async (netns: string) => {
    if (!linkInfo.has(netns)) linkInfo.set(netns, await linksOf(netns));
    return linkInfo.get(netns)!;
  };
  for (const ns of plan.namespaces) {
    const links = await info(ns.netns);
    const interfaces: InterfaceState[] = [];
    for (const c of plan.cables) {
      for (const [end, peer, via] of [
        [c.a, c.b, c.wire ? c.wire.aIf : undefined],
        [c.b, c.a, c.wire ? c.wire.bIf : undefined],
      ] as const) {
        if (end.netns !== ns.netns) continue;
        const l = links.find((k) => k.ifname === end.ifname);
        interfaces.push({
          name: end.ifname,
          ifindex: l?.ifindex ?? -1,
          mac: l?.address ?? '',
          address: end.address,
          prefix: end.prefix,
          ...(end.peerAddress ? { peerAddress: end.peerAddress } : {}),
          peer: { netns: peer.netns, name: peer.ifname },
          ...(via && c.wire ? { via: { netns: c.wire.netns, name: via } } : {}),
        });
      }
    }
    namespaces[ns.netns] = {
      kind: ns.kind,
      node: ns.node,
      ...(ns.pod ? { pod: ns.pod } : {}),
      inode: netnsInode(ns.netns),
      interfaces,
      routes: ns.routes,
      sysctls: ns.sysctls,
    };
  }
  for (const c of plan.cables) {
    if (!c.wire) continue;
    const links = await info(c.wire.netns);
    const iface = (name: string, attachedTo: { netns: string; ifname: string }) => ({
      name,
      ifindex: links.find((k) => k.ifname === name)?.ifindex ?? -1,
      attachedTo: { netns: attachedTo.netns, name: attachedTo.ifname },
    });
    wires[c.wire.netns] = { inode: netnsInode(c.wire.netns), interfaces: [iface(c.wire.aIf, c.a), iface(c.wire.bIf, c.b)] };
  }
  const nodes = {} as Record<NodeName, NodeState>;
  for (const n of NODES) {
    const pods = plan.pods.filter((p) => p.node === n);
    nodes[n] = {
      netns: nodeNetns(n),
      role: NODE_ROLE[n],
      namespaces: [nodeNetns(n), ...pods.map((p) => p.netns)],
      pods: pods.map((p) => p.name),
      clockOffsetMs: plan.options.clockOffsetsMs[n] ?? 0,
    };
  }
  const pods: LabState['pods'] = {};
  for (const p of plan.pods) pods[p.name] = podState(p);
  const links: LabState['links'] = {};
  for (const l of plan.links) links[l.id] = { from: { netns: l.from.netns, ifname: l.from.ifname }, to: { netns: l.to.netns, ifname: l.to.ifname }, wire: l.wire ?? null, netem: null };
  return {
    version: 1,
    createdAt: new Date().toISOString(),
    options: plan.options,
    mode: plan.mode,
    vip: plan.vip,
    backends: plan.backends,
    balance: plan.balance,
    nodes,
    pods,
    namespaces,
    links,
    wires,
    drops: [],
    fixes: [],
    processes,
  };
}

function podState(p: PodPlan): PodState {
  const base: PodState = { netns: p.netns, node: p.node, role: p.role, ip: p.ip, ifname: p.ifname, gateway: p.gateway, hostIf: p.hostIf };
  if (p.role !== 'backend') return base;
  return {
    ...base,
    sidecar: {
      appPort: SIDECAR.appPort,
      proxyPort: SIDECAR.proxyPort,
      adminPort: SIDECAR.adminPort,
      redirect: `-t nat -A PREROUTING -p tcp -m tcp --dport ${SIDECAR.appPort} -j REDIRECT --to-ports ${SIDECAR.proxyPort}`,
    },
  };
}

async function waitListening(state: LabState): Promise<void> {
  const want = [SIDECAR.appPort, SIDECAR.proxyPort, SIDECAR.adminPort];
  for (const [name, pod] of Object.entries(state.pods)) {
    if (pod.role !== 'backend') continue;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { stdout } = await nsRun(pod.netns, 'ss', ['-Hltn']);
      const missing = want.filter((p) => !new RegExp(`:${p}\\s`).test(stdout));
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        const logs = state.processes.filter((p) => p.netns === pod.netns).map((p) => `${p.name}: ${tail(p.log)}`);
        throw new LabError('HOP_LAB_UNHEALTHY', `pod ${name}: nothing listening on ${missing.join(', ')} after 10 s; ${logs.join('; ')}`);
      }
      await sleep(50);
    }
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}

/** Inode of a lab namespace (node, pod or wire) as recorded at `up`, or -1. */
export function inodeOf(state: LabState, netns: string): number {
  return state.namespaces[netns]?.inode ?? state.wires[netns]?.inode ?? -1;
}

export interface DownResult {
  removedNamespaces: string[];
  killedPids: number[];
}

/** Removes every lab namespace and the processes in it, and the state file. Safe to repeat. */
export async function labDown(): Promise<DownResult> {
  let state: LabState | undefined;
  try {
    state = readState();
  } catch {
    state = undefined; // an unreadable state file must not keep the lab from coming down
  }
  const present = await existingLabNetns();
  const targets = new Set<number>();
  for (const p of state?.processes ?? []) if (state && pidInNetns(p.pid, inodeOf(state, p.netns))) targets.add(p.pid);
  // Whatever else runs in a lab namespace (a client, an agent someone started there) would keep it alive.
  for (const ns of present) for (const pid of await pidsIn(ns)) targets.add(pid);
  const killed = [...targets];
  await terminate(killed, 2000);
  for (const ns of present) await run('ip', ['netns', 'del', ns]);
  removeState();
  return { removedNamespaces: present, killedPids: killed };
}

export interface ProxyStats {
  name: string;
  accepted: number;
  active: number;
  upstreamErrors: number;
  downstreamErrors: number;
  bytesIn: number;
  bytesOut: number;
  byPeer: Record<string, number>;
}

export interface AppStats {
  name: string;
  requests: number;
  viaLoopback: number;
  direct: number;
  uploads: number;
  uploadBytes: number;
  errors: number;
}

export interface LabStatus {
  up: boolean;
  state?: LabState;
  /** Lab namespaces that exist, and those the state names but are missing. */
  namespaces: { present: string[]; missing: string[] };
  processes: { name: string; pid: number; alive: boolean }[];
  /** Per backend pod: the sidecar proxy's and the app's counters (null when unreachable). */
  backends: Record<string, { proxy: ProxyStats | null; app: AppStats | null }>;
  /** Per link with delay/loss: how it is made (the wire relay, alive or not, or a tc qdisc). */
  netem: Record<string, string>;
  /** Packets dropped so far by each drop rule, by id. */
  dropped: Record<string, number>;
}

/** Reads a workload's JSON counters from inside its namespace. */
export async function workloadStats<T>(netns: string, url: string): Promise<T | null> {
  const r = await nsRun(netns, process.execPath, [join(workloadDir, 'get.js'), url], { allowFail: true, timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    return null;
  }
}

export async function labStatus(): Promise<LabStatus> {
  const state = readState();
  const present = await existingLabNetns();
  if (!state) return { up: false, namespaces: { present, missing: [] }, processes: [], backends: {}, netem: {}, dropped: {} };
  const missing = [...Object.keys(state.namespaces), ...Object.keys(state.wires)].filter((n) => !present.includes(n));
  const processes = state.processes.map((p) => ({ name: p.name, pid: p.pid, alive: pidInNetns(p.pid, inodeOf(state, p.netns)) }));
  const backends: LabStatus['backends'] = {};
  for (const [name, pod] of Object.entries(state.pods)) {
    if (pod.role !== 'backend' || missing.includes(pod.netns)) continue;
    backends[name] = {
      proxy: await workloadStats<ProxyStats>(pod.netns, `http://127.0.0.1:${SIDECAR.adminPort}/stats`),
      app: await workloadStats<AppStats>(pod.netns, `http://127.0.0.1:${SIDECAR.appPort}/stats`),
    };
  }
  const netem: Record<string, string> = {};
  for (const [id, l] of Object.entries(state.links)) {
    if (!l.netem) continue;
    if (l.wire) {
      const relay = processes.find((p) => p.name === `wire-${id}`);
      netem[id] = `relay in ${l.wire.netns} (${l.wire.in} -> ${l.wire.out}) ${relay?.alive ? `pid ${relay.pid}` : 'NOT RUNNING'}`;
    } else if (!missing.includes(l.from.netns)) {
      netem[id] = (await run('tc', ['-n', l.from.netns, 'qdisc', 'show', 'dev', l.from.ifname], { allowFail: true })).stdout.trim();
    }
  }
  const dropped: Record<string, number> = {};
  for (const d of state.drops) dropped[d.id] = await dropCount(d.netns, d.id);
  const up = missing.length === 0 && processes.every((p) => p.alive);
  return { up, state, namespaces: { present, missing }, processes, backends, netem, dropped };
}

/** Packet counter of the drop rule tagged `id` (iptables-save -c), or -1. */
export async function dropCount(netns: string, id: string): Promise<number> {
  const r = await nsRun(netns, 'iptables-save', ['-c', '-t', 'filter'], { allowFail: true });
  for (const line of r.stdout.split('\n')) {
    if (!line.includes(`--comment ${id} `) && !line.includes(`--comment "${id}"`)) continue;
    const m = /^\[(\d+):\d+\]/.exec(line);
    if (m) return Number(m[1]);
  }
  return -1;
}

export interface RequestOptions {
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Per-request timeout, ms (default 3000). */
  timeoutMs?: number;
  /** Response size, bytes (GET /bytes?n=). Default 100. */
  bytes?: number;
}

export interface RequestFlow {
  /** Client-side source port (the flow's client tuple is client-ip:sport -> VIP). */
  sport: number;
  /** Wall-clock start, ms since the epoch. */
  startMs: number;
  /** TCP handshake time (about one RTT), ms; -1 if it never connected. */
  connectMs: number;
  totalMs: number;
  ok: boolean;
  status?: number;
  error?: string;
}

export interface Quantiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface RequestResult {
  url: string;
  requests: number;
  ok: number;
  failed: number;
  /** Failures by error code (ECONNRESET, ETIMEDOUT, HTTP_502, ...). */
  errors: Record<string, number>;
  elapsedMs: number;
  connectMs: Quantiles | null;
  totalMs: Quantiles | null;
  flows: RequestFlow[];
}

/** Runs `n` short HTTP requests from the client pod to the VIP, each on a new connection. */
export async function runRequests(n: number, opts: RequestOptions = {}): Promise<RequestResult> {
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new LabError('HOP_LAB_BAD_ARGUMENT', `request count must be an integer in [1, 1000000], not ${n}`);
  const state = requireState();
  const client = state.pods.client;
  if (!client) throw new LabError('HOP_LAB_NOT_UP', 'the lab has no client pod');
  const timeoutMs = opts.timeoutMs ?? 3000;
  const args = [
    join(workloadDir, 'client.js'),
    '--url',
    `http://${VIP.ip}:${VIP.port}/bytes?n=${opts.bytes ?? 100}`,
    '--count',
    String(n),
    '--concurrency',
    String(opts.concurrency ?? 8),
    '--timeout-ms',
    String(timeoutMs),
  ];
  // Generous: n requests that all time out one after another, divided over the workers.
  const budget = 30_000 + Math.ceil(n / (opts.concurrency ?? 8)) * (timeoutMs + 1000);
  const r = await nsRun(client.netns, process.execPath, args, { timeoutMs: budget });
  try {
    return JSON.parse(r.stdout) as RequestResult;
  } catch (err) {
    throw new LabError('HOP_LAB_COMMAND', `client output is not JSON: ${r.stdout.slice(0, 200)} ${r.stderr.slice(0, 200)}`, { cause: err });
  }
}
