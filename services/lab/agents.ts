/**
 * One live agent per lab node, each scoped to that node's namespaces, with its own
 * node name and the node's clock offset from the lab state (the unsynchronised-clock
 * knob). A link's wire namespace, where the lab makes delay and loss, is watched by
 * the agent of the node upstream of it (client -> server order): the delay then
 * shows up inside that node, between the wire's ingress and egress, much like a
 * qdisc on its egress device.
 *
 * Agents run as background processes of `hoptrace agent --live` with pid files in
 * var/run and logs in var/log; stop only signals processes whose command line is an
 * agent for that node.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js';
import type { DeviceHooks } from '../agent/live/options.js';
import { sleep } from '../shared/retry.js';
import { LabError } from './errors.js';
import { repoRoot } from './paths.js';
import { requireState, type LabState } from './state.js';

const ORDER = ['node-a', 'node-lb', 'node-c'];
const runDir = join(repoRoot, 'var', 'run');
const logDir = join(repoRoot, 'var', 'log');
const cli = join(repoRoot, 'dist', 'services', 'cli', 'main.js');

export interface AgentPlan {
  node: string;
  netns: string[];
  clockSkewMs: number;
  /** Prometheus /metrics on 127.0.0.1:metricsPort. */
  metricsPort: number;
  /** Keep 1 flow in N (agent --sample); all when absent. */
  sampleN?: number;
  /** agent --device-hooks; the agent's default (auto: tc, the lab names its namespaces) when absent. */
  deviceHooks?: DeviceHooks;
  /** agent --run-records; the agent's default when absent. */
  runRecords?: number;
  /** --queue-idle-ms (0: net_dev_start_xmit always linked). */
  queueIdleMs?: number;
  /**
   * Start the agent in the caller's session instead of a new one: one CFS autogroup, so one
   * CPU weight, with whatever else that session runs (a bench's traffic). A new session, the
   * default, gives it a weight of its own, as a DaemonSet's cgroup would.
   */
  sameSession?: boolean;
}

/** Agents' /metrics ports: node-a, node-lb, node-c in order from here. */
const METRICS_BASE_PORT = 9464;

export function agentPlans(state: LabState, except: readonly string[] = []): AgentPlan[] {
  return Object.entries(state.nodes)
    .filter(([node]) => !except.includes(node))
    .map(([node, n]) => {
      const wires = Object.values(state.links)
        .filter((l) => l.wire && state.namespaces[l.from.netns]?.node === node && ORDER.indexOf(node) < ORDER.indexOf(state.namespaces[l.to.netns]?.node ?? ''))
        .map((l) => l.wire!.netns);
      return { node, netns: [...n.namespaces, ...new Set(wires)], clockSkewMs: n.clockOffsetMs, metricsPort: METRICS_BASE_PORT + Math.max(0, ORDER.indexOf(node)) };
    });
}

const pidFile = (node: string) => join(runDir, `agent-${node}.pid`);

function alive(node: string): number | null {
  if (!existsSync(pidFile(node))) return null;
  const pid = Number(readFileSync(pidFile(node), 'utf8').trim());
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    if (cmd.includes('main.js agent') && cmd.includes(`--node ${node}`)) return pid;
  } catch {
    // gone
  }
  rmSync(pidFile(node), { force: true });
  return null;
}

/** Starts the agents that are not running; resolves once each has attached (its log says so) or fails naming the log. */
export async function startAgents(plans: readonly AgentPlan[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 20_000): Promise<{ node: string; pid: number; log: string; metrics: string }[]> {
  if (!existsSync(cli)) throw new LabError('HOP_LAB_BAD_ARGUMENT', `agents need the build: run npm run build first (${cli} is missing)`);
  mkdirSync(runDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const out: { node: string; pid: number; log: string; metrics: string }[] = [];
  for (const p of plans) {
    const log = join(logDir, `agent-${p.node}.log`);
    const running = alive(p.node);
    if (running) {
      out.push({ node: p.node, pid: running, log, metrics: `http://127.0.0.1:${p.metricsPort}/metrics` });
      continue;
    }
    writeFileSync(log, '');
    const fd = openSync(log, 'a');
    const child = spawn(process.execPath, ['--enable-source-maps', ...AGENT_NODE_FLAGS, cli, 'agent', '--live', '--node', p.node, '--netns', p.netns.join(','), '--clock-skew-ms', String(p.clockSkewMs), ...(p.sampleN ? ['--sample', String(p.sampleN)] : []), ...(p.deviceHooks ? ['--device-hooks', p.deviceHooks] : []), ...(p.runRecords ? ['--run-records', String(p.runRecords)] : []), ...(p.queueIdleMs !== undefined ? ['--queue-idle-ms', String(p.queueIdleMs)] : [])], {
      detached: !p.sameSession,
      stdio: ['ignore', fd, fd],
      env: { ...env, HOPTRACE_AGENT_NAME: p.node, HOPTRACE_METRICS_PORT: String(p.metricsPort) },
    });
    child.unref();
    writeFileSync(pidFile(p.node), String(child.pid));
    out.push({ node: p.node, pid: child.pid!, log, metrics: `http://127.0.0.1:${p.metricsPort}/metrics` });
  }
  // Ready once the agent has attached its programs and its producer is up.
  const deadline = Date.now() + timeoutMs;
  for (const a of out) {
    for (;;) {
      const text = readFileSync(a.log, 'utf8');
      if (/live capture on/.test(text) && /agent producing/.test(text)) break;
      if (!alive(a.node)) throw new LabError('HOP_LAB_COMMAND', `agent for ${a.node} exited; see ${a.log}:\n${text.slice(-2000)}`);
      if (Date.now() > deadline) throw new LabError('HOP_LAB_COMMAND', `agent for ${a.node} not ready after ${timeoutMs} ms; see ${a.log}`);
      await sleep(100);
    }
  }
  return out;
}

export async function stopAgents(nodes: readonly string[] = ORDER): Promise<string[]> {
  const stopped: string[] = [];
  for (const node of nodes) {
    const pid = alive(node);
    if (!pid) continue;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 200 && alive(node); i++) await sleep(50);
    if (alive(node)) process.kill(pid, 'SIGKILL');
    rmSync(pidFile(node), { force: true });
    stopped.push(node);
  }
  return stopped;
}

export function agentsStatus(): { node: string; pid: number | null }[] {
  return ORDER.map((node) => ({ node, pid: alive(node) }));
}

export function labAgentPlans(except: readonly string[] = []): AgentPlan[] {
  return agentPlans(requireState(), except);
}
