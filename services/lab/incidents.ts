/**
 * The seed incident of ARCHITECTURE.md, reproduced in the lab: one out-of-window TCP
 * segment on an established client -> VIP -> server connection escapes the server pod's
 * sidecar REDIRECT and is answered with a RST by the application's listener.
 *
 * The segment is sent from the client pod with the connection's own 4-tuple, so it
 * crosses every hop like the flow's other packets: node-a, node-lb (whose conntrack is
 * liberal by default and so DNATs/SNATs it like any other), node-c, and the server pod,
 * whose conntrack (be_liberal=0) finds it beyond the window and marks it INVALID. NAT
 * skips INVALID packets, so the REDIRECT to the proxy never happens; the packet reaches
 * the app's LISTEN socket on pod-ip:8080, which answers with a RST (tcp_send_reset,
 * state TCP_LISTEN, reason TCP_FLAGS). The RST travels back, node-lb un-NATs it as a
 * reply of the connection, and the client's socket is reset (ECONNRESET).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LabError } from './errors.js';
import { conntrackList, conntrackStat, snmpCounter, type CtEntry } from './netns.js';
import { python, workloadDir } from './paths.js';
import { requireState } from './state.js';
import { SIDECAR } from './topology.js';

export interface OowPacket {
  t: number;
  dir: 'in' | 'out';
  src: string;
  dst: string;
  flags: string;
  seq: number;
  ack: number;
  len: number;
  ipId: number;
}

export interface OowResult {
  /** True when the client's connection was reset (ECONNRESET). */
  reset: boolean;
  /** What the client's socket did after the injection: ECONNRESET, STILL_OPEN (nothing within the wait), EOF, ... */
  clientOutcome: string;
  outcomeAfterMs: number;
  /** The connection, as the client sees it. */
  client: { src: string; sport: number; dst: string; dport: number };
  /** How the client learnt snd_nxt/rcv_nxt (TCP_REPAIR or the capture). */
  seqSource: string;
  injected: { src: string; dst: string; seq: number; ack: number; flags: string; len: number; ipId: number; t: number };
  /** The backend pod the connection went to, and the tuple it arrives with there (after node-lb's NAT). */
  backend: { pod: string; ip: string; tupleAtPod: string } | null;
  /** node-lb's conntrack entry for the connection (DNAT, and SNAT in snat mode). */
  lbConntrack: CtEntry | null;
  /** The backend pod's conntrack entry for it: original to pod:8080, reply from the proxy port (the REDIRECT). */
  podConntrack: CtEntry | null;
  /** Counter deltas across the injection. */
  counters: {
    /** Tcp OutRsts in the backend pod: RSTs its stack sent. */
    podOutRsts: number;
    /**
     * conntrack `invalid` in the backend pod: the injected segment (out of window) and the
     * listener's RST (it matches no entry, and a RST cannot start one), so 2 per injection.
     */
    podConntrackInvalid: number;
    /** conntrack `invalid` in node-lb (0 when it is liberal). */
    lbConntrackInvalid: number;
  };
  /** The client pod's view of the wire around the injection (AF_PACKET). */
  packets: OowPacket[];
  /** tcp:tcp_send_reset / tcp:tcp_receive_reset lines for the lab's addresses from a private tracefs instance, or null when tracefs is unavailable. */
  kernelTrace: string[] | null;
}

interface Ready {
  event: 'ready';
  src: string;
  sport: number;
  dst: string;
  dport: number;
  sndNxt: number;
  rcvNxt: number;
  seqSource: string;
}

interface Done {
  event: 'result';
  injected: OowResult['injected'];
  clientOutcome: string;
  outcomeAfterMs: number;
  packets: OowPacket[];
}

export interface OowOptions {
  /** Bytes past snd_nxt for the injected sequence number (default 2^30: beyond any window). */
  gap?: number;
  /** Record tcp reset tracepoints through a private tracefs instance (default true). */
  trace?: boolean;
  /** How long the client waits for its connection's fate after the injection, ms (default 3000). */
  waitMs?: number;
}

export async function injectOow(opts: OowOptions = {}): Promise<OowResult> {
  const state = requireState();
  const client = state.pods.client;
  const lb = state.nodes['node-lb'].netns;
  if (!client) throw new LabError('HOP_LAB_NOT_UP', 'the lab has no client pod');
  const backends = state.backends.map((b) => ({ ...b, netns: state.pods[b.pod]!.netns }));

  const trace = opts.trace === false ? null : TraceInstance.open();
  const args = [join(workloadDir, 'oow.py'), '--dst', state.vip.ip, '--dport', String(state.vip.port), '--iface', client.ifname];
  if (opts.gap !== undefined) args.push('--gap', String(opts.gap));
  if (opts.waitMs !== undefined) args.push('--wait', String(opts.waitMs / 1000));
  const child = spawn('ip', ['netns', 'exec', client.netns, python(), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 128)));
  const lines = createInterface({ input: child.stdout });
  const next = lineReader(lines, 30_000);

  try {
    const ready = JSON.parse(await next()) as Ready | { event: 'error'; error: string };
    if (ready.event !== 'ready') throw new LabError('HOP_LAB_COMMAND', `oow.py: ${'error' in ready ? ready.error : JSON.stringify(ready)}`);

    // Which backend got the connection, and the tuple it arrives with there.
    const lbEntry = (await conntrackList(lb)).find((e) => e.orig.src === ready.src && e.orig.sport === ready.sport && e.orig.dst === ready.dst && e.orig.dport === ready.dport) ?? null;
    const target = backends.find((b) => b.ip === lbEntry?.reply.src) ?? (backends.length === 1 ? backends[0]! : undefined);
    // At the pod the original tuple is node-lb's reply tuple reversed: (reply.dst:dport -> reply.src:sport).
    const podEntry = target && lbEntry ? ((await conntrackList(target.netns)).find((e) => e.orig.src === lbEntry.reply.dst && e.orig.sport === lbEntry.reply.dport && e.orig.dport === SIDECAR.appPort) ?? null) : null;
    const podNetns = target?.netns ?? backends[0]!.netns;
    const before = await counters(podNetns, lb);
    trace?.start();
    child.stdin.write('go\n');
    const done = JSON.parse(await next()) as Done;
    await exited;
    trace?.stop();
    const after = await counters(podNetns, lb);
    const watch = [client.ip, ...backends.map((b) => b.ip), state.vip.ip];
    return {
      reset: done.clientOutcome === 'ECONNRESET',
      clientOutcome: done.clientOutcome,
      outcomeAfterMs: done.outcomeAfterMs,
      client: { src: ready.src, sport: ready.sport, dst: ready.dst, dport: ready.dport },
      seqSource: ready.seqSource,
      injected: done.injected,
      backend: target && lbEntry ? { pod: target.pod, ip: target.ip, tupleAtPod: `${lbEntry.reply.dst}:${lbEntry.reply.dport} -> ${lbEntry.reply.src}:${lbEntry.reply.sport}` } : null,
      lbConntrack: lbEntry,
      podConntrack: podEntry,
      counters: {
        podOutRsts: after.outRsts - before.outRsts,
        podConntrackInvalid: after.podInvalid - before.podInvalid,
        lbConntrackInvalid: after.lbInvalid - before.lbInvalid,
      },
      packets: done.packets,
      kernelTrace: trace ? trace.lines().filter((l) => watch.some((ip) => l.includes(`${ip}:`) || l.includes(`=${ip} `)) || listenerReset(l)) : null,
    };
  } catch (err) {
    child.kill('SIGKILL');
    throw err instanceof LabError ? err : new LabError('HOP_LAB_COMMAND', `inject-oow failed; oow.py said: ${stderr.trim().slice(-500)}`, { cause: err });
  } finally {
    trace?.close();
    lines.close();
  }
}

/**
 * tcp_send_reset prints the socket's addresses when there is a socket: for a listener
 * bound to 0.0.0.0 that is `src=0.0.0.0:8080 dest=0.0.0.0:0`, so match it by port and state.
 */
function listenerReset(line: string): boolean {
  return line.includes('tcp_send_reset:') && line.includes(`src=0.0.0.0:${SIDECAR.appPort} `) && line.includes('state=TCP_LISTEN');
}

async function counters(podNetns: string, lbNetns: string) {
  return {
    outRsts: await snmpCounter(podNetns, 'snmp', 'Tcp', 'OutRsts'),
    podInvalid: await conntrackStat(podNetns, 'invalid'),
    lbInvalid: await conntrackStat(lbNetns, 'invalid'),
  };
}

/** Successive lines of a stream; rejects after `timeoutMs` without one, or at its end. */
function lineReader(rl: ReturnType<typeof createInterface>, timeoutMs: number): () => Promise<string> {
  const queue: string[] = [];
  const waiting: ((l: string | null) => void)[] = [];
  let ended = false;
  rl.on('line', (l) => {
    const w = waiting.shift();
    if (w) w(l);
    else queue.push(l);
  });
  rl.on('close', () => {
    ended = true;
    for (const w of waiting.splice(0)) w(null);
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const q = queue.shift();
      if (q !== undefined) return resolve(q);
      if (ended) return reject(new Error('oow.py ended early'));
      const timer = setTimeout(() => reject(new Error(`no answer from oow.py in ${timeoutMs} ms`)), timeoutMs);
      waiting.push((l) => {
        clearTimeout(timer);
        if (l === null) reject(new Error('oow.py ended early'));
        else resolve(l);
      });
    });
}

/**
 * A private tracefs instance with the TCP reset tracepoints: kernel evidence of which
 * socket state sent the RST, without bpftrace and without touching the global trace buffer.
 */
class TraceInstance {
  private constructor(private readonly dir: string) {}

  static open(): TraceInstance | null {
    for (const base of ['/sys/kernel/tracing', '/sys/kernel/debug/tracing']) {
      if (!existsSync(join(base, 'instances'))) continue;
      const dir = join(base, 'instances', `hopt-lab-oow-${process.pid}`);
      try {
        mkdirSync(dir);
        return new TraceInstance(dir);
      } catch {
        return null;
      }
    }
    return null;
  }

  private set(value: string): void {
    for (const ev of ['tcp_send_reset', 'tcp_receive_reset']) {
      try {
        writeFileSync(join(this.dir, 'events', 'tcp', ev, 'enable'), value);
      } catch {
        // an older kernel without the event: the rest of the evidence stands
      }
    }
  }

  start(): void {
    this.set('1');
  }

  stop(): void {
    this.set('0');
  }

  lines(): string[] {
    try {
      return readFileSync(join(this.dir, 'trace'), 'utf8')
        .split('\n')
        .filter((l) => l.trim() && !l.startsWith('#'))
        .map((l) => l.trim());
    } catch {
      return [];
    }
  }

  close(): void {
    this.stop();
    try {
      rmdirSync(this.dir);
    } catch {
      // busy or gone; nothing else uses this instance
    }
  }
}

