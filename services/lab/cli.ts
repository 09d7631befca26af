/** `hoptrace lab ...`: the lab's commands. Human-readable output by default, `--json` for scripts. */
import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { injectOow, type OowResult } from './incidents.js';
import { applyFix, dropClear, dropRule, FIXES, netem, parseDurationMs, parsePercent, setClockOffset, targetOf, type DropHook, type Fix } from './knobs.js';
import { labDown, labStatus, labUp, runRequests, type LabStatus, type RequestResult } from './lab.js';
import { agentsStatus, labAgentPlans, startAgents, stopAgents } from './agents.js';
import { runCheck } from './check.js';
import { createClickHouse } from '../shared/clickhouse.js';
import { loadConfig } from '../shared/config.js';
import { requireState } from './state.js';
import { LabError } from './errors.js';
import { statePath } from './paths.js';
import type { LabState } from './state.js';
import { isNodeName, type NodeName } from './topology.js';

function int(min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in [${min}, ${max}]`);
    return n;
  };
}

function clockOffset(v: string, prev: Partial<Record<NodeName, number>> = {}): Partial<Record<NodeName, number>> {
  const m = /^([a-z0-9-]+)=(-?\d+(?:\.\d+)?)$/.exec(v);
  if (!m || !isNodeName(m[1]!)) throw new InvalidArgumentError('expected <node>=<ms>, e.g. node-c=50');
  return { ...prev, [m[1]!]: Number(m[2]) };
}

const out = (s: string) => void process.stdout.write(`${s}\n`);
const json = (v: unknown) => out(JSON.stringify(v, null, 2));

function describeState(s: LabState): string {
  const lines = [`lab up (${s.mode}, ${s.backends.length} backend${s.backends.length > 1 ? 's' : ''}); state: ${statePath}`];
  lines.push(`VIP ${s.vip.ip}:${s.vip.port}/${s.vip.protocol} -> ${s.backends.map((b) => `${b.pod} ${b.ip}:${b.port}`).join(', ')} (${s.balance})`);
  for (const [name, n] of Object.entries(s.nodes)) {
    lines.push(`${name} (${n.role}, clock offset ${n.clockOffsetMs} ms): ${n.namespaces.join(', ')}`);
    for (const ns of n.namespaces) {
      const info = s.namespaces[ns];
      for (const i of info?.interfaces ?? []) lines.push(`  ${ns} ${i.name} #${i.ifindex} ${i.address}${i.peerAddress ? ` peer ${i.peerAddress}` : `/${i.prefix}`} <-> ${i.peer.netns} ${i.peer.name}`);
    }
  }
  const netems = Object.entries(s.links).filter(([, l]) => l.netem);
  for (const [id, l] of netems) lines.push(`netem ${id}: delay ${l.netem!.delayMs} ms jitter ${l.netem!.jitterMs} ms loss ${l.netem!.lossPct}%`);
  for (const d of s.drops) lines.push(`drop ${d.id}: ${d.netns} ${d.hook} ${d.match.join(' ')} -j ${targetOf(d).join(' ')}`);
  if (s.fixes.length) lines.push(`fixes in backend pods: ${s.fixes.join(', ')}`);
  return lines.join('\n');
}

function describeStatus(st: LabStatus): string {
  if (!st.state) return st.namespaces.present.length ? `lab down, but namespaces remain: ${st.namespaces.present.join(', ')} (run \`hoptrace lab down\`)` : 'lab down';
  const lines = [describeState(st.state), st.up ? 'healthy: every namespace and workload is there' : 'DEGRADED'];
  if (st.namespaces.missing.length) lines.push(`missing namespaces: ${st.namespaces.missing.join(', ')}`);
  for (const p of st.processes) lines.push(`process ${p.name} pid ${p.pid}: ${p.alive ? 'running' : 'GONE'}`);
  for (const [pod, b] of Object.entries(st.backends)) {
    const peers = b.proxy ? Object.entries(b.proxy.byPeer).map(([k, v]) => `${k}=${v}`).join(' ') : '';
    lines.push(`${pod}: proxy ${b.proxy ? `accepted ${b.proxy.accepted} active ${b.proxy.active} by peer ${peers || '-'}` : 'unreachable'}; app ${b.app ? `requests ${b.app.requests} (via proxy ${b.app.viaLoopback}, direct ${b.app.direct})` : 'unreachable'}`);
  }
  for (const [id, q] of Object.entries(st.netem)) lines.push(`netem ${id}: ${q}`);
  for (const [id, n] of Object.entries(st.dropped)) lines.push(`${id}: ${n} packets dropped`);
  return lines.join('\n');
}

function describeRequests(r: RequestResult): string {
  const q = (x: RequestResult['connectMs']) => (x ? `p50 ${x.p50} p90 ${x.p90} p99 ${x.p99} max ${x.max} ms` : '-');
  const errs = Object.entries(r.errors).map(([k, v]) => `${k}=${v}`).join(' ');
  return [`${r.ok}/${r.requests} ok, ${r.failed} failed${errs ? ` (${errs})` : ''} in ${r.elapsedMs} ms`, `connect ${q(r.connectMs)}`, `total   ${q(r.totalMs)}`].join('\n');
}

function describeOow(r: OowResult): string {
  const lines = [
    `client connection ${r.client.src}:${r.client.sport} -> ${r.client.dst}:${r.client.dport}` + (r.backend ? `, at pod ${r.backend.pod}: ${r.backend.tupleAtPod}` : ''),
    `injected ${r.injected.flags} seq ${r.injected.seq} ack ${r.injected.ack} len ${r.injected.len} (sequence numbers from ${r.seqSource})`,
    `client socket: ${r.clientOutcome} after ${r.outcomeAfterMs} ms${r.reset ? ' (reset)' : ''}`,
    `counters: pod OutRsts +${r.counters.podOutRsts}, pod conntrack invalid +${r.counters.podConntrackInvalid}, node-lb conntrack invalid +${r.counters.lbConntrackInvalid}`,
  ];
  if (r.lbConntrack) lines.push(`node-lb conntrack: ${r.lbConntrack.line}`);
  if (r.podConntrack) lines.push(`pod conntrack:     ${r.podConntrack.line}`);
  for (const p of r.packets.filter((x) => x.flags.includes('R') || x.ipId === r.injected.ipId)) lines.push(`wire (client pod): ${p.dir} ${p.src} -> ${p.dst} ${p.flags} seq ${p.seq} ack ${p.ack} len ${p.len}`);
  for (const l of r.kernelTrace ?? []) lines.push(`kernel: ${l}`);
  return lines.join('\n');
}

export function registerLabCommands(program: Command): void {
  const lab = program.command('lab').description('a small cluster of network namespaces on this machine (needs root): nodes a, lb, c; client and server pods; a VIP with kube-proxy-style NAT; a sidecar REDIRECT');

  lab
    .command('up')
    .description('build the lab (removing any previous one) and start its workloads')
    .option('--snat', 'masquerade VIP traffic on node-lb (backends see node-lb, not the client)', false)
    .addOption(new Option('--backends <n>', 'backend pods behind the VIP').choices(['1', '2']).default('1'))
    .option('--lb-strict', "keep node-lb's conntrack strict (be_liberal=0); inject-oow's segment then stops being NATed at node-lb", false)
    .option('--clock-offset <node=ms>', 'clock offset to record for a node agent (repeatable)', clockOffset, {})
    .option('--json', 'print the state as JSON')
    .action(async (o: { snat: boolean; backends: string; lbStrict: boolean; clockOffset: Partial<Record<NodeName, number>>; json?: boolean }) => {
      const s = await labUp({ snat: o.snat, backends: o.backends === '2' ? 2 : 1, lbLiberal: !o.lbStrict, clockOffsetsMs: o.clockOffset });
      if (o.json) json(s);
      else out(describeState(s));
    });

  lab
    .command('down')
    .description('remove every lab namespace and workload (idempotent)')
    .action(async () => {
      const r = await labDown();
      out(r.removedNamespaces.length ? `removed ${r.removedNamespaces.join(', ')}; stopped ${r.killedPids.length} processes` : 'nothing to remove');
    });

  lab
    .command('status')
    .description('namespaces, workloads, sidecar counters, netem and drop rules')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const st = await labStatus();
      if (o.json) json(st);
      else out(describeStatus(st));
      if (st.state && !st.up) process.exitCode = 1;
    });

  lab
    .command('requests')
    .description('N short HTTP requests from the client pod to the VIP, a new connection each')
    .argument('<n>', 'number of requests', int(1, 1_000_000))
    .option('--concurrency <n>', 'requests in flight', int(1, 1000), 8)
    .option('--timeout-ms <ms>', 'per-request timeout', int(1, 600_000), 3000)
    .option('--bytes <n>', 'response size', int(0, 16 << 20), 100)
    .option('--json', 'print the result, with every flow, as JSON')
    .action(async (n: number, o: { concurrency: number; timeoutMs: number; bytes: number; json?: boolean }) => {
      const r = await runRequests(n, o);
      if (o.json) json(r);
      else out(describeRequests(r));
      if (r.failed > 0) process.exitCode = 1;
    });

  lab
    .command('netem')
    .description('delay/loss on one direction of a link, e.g. lb-c (node-lb -> node-c); see `lab status` for link ids')
    .argument('<link>', 'link id <from>-<to>: a-lb, lb-a, lb-c, c-lb, client-a, a-client, server-c, c-server, ...')
    .option('--delay <time>', 'added delay, e.g. 20ms', '0ms')
    .option('--jitter <time>', 'delay jitter, e.g. 1ms', '0ms')
    .option('--loss <pct>', 'random loss, e.g. 1%', '0%')
    .option('--clear', 'remove netem from the link')
    .action(async (link: string, o: { delay: string; jitter: string; loss: string; clear?: boolean }) => {
      const s = await netem(link, o.clear ? null : { delayMs: parseDurationMs(o.delay), jitterMs: parseDurationMs(o.jitter), lossPct: parsePercent(o.loss) });
      const n = s.links[link]!.netem;
      out(n ? `${link}: delay ${n.delayMs} ms jitter ${n.jitterMs} ms loss ${n.lossPct}%` : `${link}: netem cleared`);
    });

  lab
    .command('inject-oow')
    .description('the seed incident: an out-of-window segment on an established client->VIP->server connection bypasses the sidecar REDIRECT and is reset by the app listener')
    .option('--no-trace', 'do not record tcp reset tracepoints in a private tracefs instance')
    .option('--json', 'print the evidence as JSON')
    .action(async (o: { trace: boolean; json?: boolean }) => {
      const r = await injectOow({ trace: o.trace });
      if (o.json) json(r);
      else out(describeOow(r));
      if (!r.reset) process.exitCode = 1;
    });

  lab
    .command('drop')
    .description('add an iptables DROP rule in a lab namespace (default on a node: FORWARD of the VIP backend traffic), or remove rules with --clear/--id')
    .argument('<where>', 'node (node-lb), pod (server) or lab namespace')
    .addOption(new Option('--hook <chain>', 'built-in chain').choices(['FORWARD', 'INPUT', 'OUTPUT']))
    .addOption(new Option('--proto <p>', 'protocol').choices(['tcp', 'udp', 'icmp']))
    .option('--src <cidr>', 'source address/CIDR (comma-separated list allowed)')
    .option('--dst <cidr>', 'destination address/CIDR (comma-separated list allowed)')
    .option('--sport <port>', 'source port', int(1, 65535))
    .option('--dport <port>', 'destination port', int(1, 65535))
    .option('--probability <p>', 'drop only this fraction of matching packets', (v: string) => Number(v))
    .option('--reject', 'answer instead of dropping, as a firewall REJECT does: a TCP reset (tcp), ICMP port unreachable (others)')
    .option('--clear', 'remove every drop rule in <where>')
    .option('--id <id>', 'remove one drop rule by id')
    .action(async (where: string, o: { hook?: DropHook; proto?: 'tcp' | 'udp' | 'icmp'; src?: string; dst?: string; sport?: number; dport?: number; probability?: number; reject?: boolean; clear?: boolean; id?: string }) => {
      if (o.clear || o.id) {
        const gone = await dropClear(o.id ? { id: o.id } : { where });
        out(gone.length ? `removed ${gone.map((d) => d.id).join(', ')}` : 'no drop rules there');
        return;
      }
      const d = await dropRule(where, o);
      out(`${d.id}: ${d.netns} ${d.hook} ${d.match.join(' ')} -j ${targetOf(d).join(' ')}`);
    });

  lab
    .command('fix')
    .description("apply (or --undo) a fix of the seed incident in every backend pod; inject-oow then no longer resets the client")
    .addArgument(new Argument('<fix>', 'be-liberal: nf_conntrack_tcp_be_liberal=1 in the pod; drop-invalid: drop ctstate INVALID in mangle PREROUTING').choices(FIXES))
    .option('--undo', 'remove the fix')
    .action(async (fix: Fix, o: { undo?: boolean }) => {
      const s = await applyFix(fix, o.undo === true);
      out(`fixes in effect: ${s.fixes.join(', ') || 'none'}`);
    });

  lab
    .command('clock')
    .description("record nodes' clock offsets for their agents (the lab changes no clock)")
    .argument('<node=ms...>', 'e.g. node-c=50 or node-a=-20 (ms, may be negative)')
    .action((pairs: string[]) => {
      const offsets = pairs.reduce<Partial<Record<NodeName, number>>>((acc, p) => {
        try {
          return clockOffset(p, acc);
        } catch (err) {
          throw new LabError('HOP_LAB_BAD_ARGUMENT', `${JSON.stringify(p)}: ${(err as Error).message}`);
        }
      }, {});
      for (const [node, ms] of Object.entries(offsets)) {
        setClockOffset(node, ms);
        out(`${node}: clock offset ${ms} ms`);
      }
    });

  lab
    .command('agents')
    .description("start, stop or list one live agent per lab node, scoped to the node's namespaces (needs npm run build)")
    .argument('<action>', 'start | stop | status')
    .option('--except <nodes>', 'start no agent on these nodes (comma-separated), e.g. node-lb')
    .action(async (action: string, o: { except?: string }) => {
      if (action === 'start') {
        for (const a of await startAgents(labAgentPlans(o.except?.split(',') ?? []))) out(`${a.node}: agent pid ${a.pid}, log ${a.log}, metrics ${a.metrics}`);
      } else if (action === 'stop') {
        out(`stopped: ${(await stopAgents()).join(', ') || 'none running'}`);
      } else if (action === 'status') {
        for (const a of agentsStatus()) out(`${a.node}: ${a.pid ? `running (pid ${a.pid})` : 'stopped'}`);
      } else {
        throw new LabError('HOP_LAB_BAD_ARGUMENT', `agents: unknown action ${JSON.stringify(action)} (start | stop | status)`);
      }
    });

  lab
    .command('check')
    .description('run requests through the VIP with agents and correlator running, then count join mistakes against node-lb\'s conntrack table')
    .argument('[n]', 'requests', '2000')
    .option('--no-lb-agent', 'the load balancer node runs no agent: expect the path without it')
    .option('--json', 'print the report as JSON')
    .action(async (n: string, o: { lbAgent: boolean; json?: boolean }) => {
      const cfg = loadConfig();
      const ch = createClickHouse(cfg);
      try {
        const { requests: result, report: r } = await runCheck(cfg, ch, Number(n), { lbAgent: o.lbAgent });
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(`${result.ok}/${result.requests} requests ok; ${r.requests} connections in node-lb's conntrack events, ${r.found} found in hoptrace`);
        out(`join precision ${(r.precision * 100).toFixed(3)}%, recall ${(r.recall * 100).toFixed(3)}% (${r.events.correct} of ${r.events.belonging} events on the right flow, ${r.events.assigned} assigned)`);
        out(`paths with a wrong hop order or NAT: ${r.pathMistakes}`);
        if (r.pathUnverified) out(`paths ending on a tuple the conntrack truth never saw (not checked): ${r.pathUnverified}`);
        for (const m of r.mistakes) out(`  ${m}`);
        out('slowest segments (p50):');
        for (const s of [...r.latency.segments].sort((a, b) => b.p50Us - a.p50Us).slice(0, 5)) out(`  ${s.direction} ${s.from} -> ${s.to}: p50 ${(s.p50Us / 1000).toFixed(3)} ms, p99 ${(s.p99Us / 1000).toFixed(3)} ms (${s.samples})`);
        for (const c of r.latency.clock.filter((x) => x.from)) out(`clock offset ${c.node}: ${(c.offsetUs / 1000).toFixed(3)} ms (vs ${c.from!.peer})`);
      } finally {
        await ch.close();
      }
    });
}
