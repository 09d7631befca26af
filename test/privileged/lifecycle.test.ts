/**
 * The live source's life on the real kernel: clean detach, partial failure that
 * keeps the rest working, run-time filters and sampling, counted losses, and
 * Prometheus metrics.
 */
import { sleep } from '../../services/shared/retry.js';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { Kind } from '../../services/shared/record.js';
import { createLiveSource, describeLiveStatus, parseLiveFilters, parseLiveOptions, registerLiveMetrics, LiveError, type LiveOptionsInput, type LiveSource } from '../../services/agent/live/index.js';
import { loadObjects } from '../../services/agent/live/objects.js';
import { openKernelBtf } from '../../services/agent/live/btf.js';
import { netnsHome } from '../../services/agent/live/filters.js';
import { NETNS_SLOTS } from '../../services/agent/live/kernel-abi.js';
import { describePrivileged, OBJ_DIR } from './preflight.js';
import { bpftool, Lab, TCP_CLIENT, TCP_ECHO_SERVER, waitLine, type BpfObj, type Link, type Ns } from './netns.js';
import { eventually, startCapture } from './capture.js';

const hopProgs = (): BpfObj[] => bpftool('prog', 'show').filter((p) => p.name?.startsWith('hop_'));


describePrivileged('live capture: lifecycle, filters and counters', () => {
  const lab = new Lab();
  let cli: Ns;
  let srv: Ns;
  let link: Link;

  beforeAll(() => {
    cli = lab.ns('cli');
    srv = lab.ns('srv');
    link = lab.link(cli, srv);
  });
  afterAll(() => lab.cleanup());

  async function exchange(port: number, msg = 'ping'): Promise<number> {
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(port)]);
    await waitLine(server, /listening/);
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, String(port), msg]).trim()) as { local: number };
    server.kill();
    return res.local;
  }

  const COMMON = ['hop_inet_sock_set_state', 'hop_kfree_skb', 'hop_net_dev_start_xmit', 'hop_tcp_receive_reset', 'hop_tcp_retransmit_skb', 'hop_tcp_send_reset'];
  it.each([
    { deviceHooks: 'tracepoint' as const, device: ['hop_net_dev_queue', 'hop_netif_receive_skb'] },
    { deviceHooks: 'tc' as const, device: ['hop_tc_egress', 'hop_tc_ingress'] },
  ])('leaves no programs, links, maps or TC filters behind after stop() (device hooks $deviceHooks)', async ({ deviceHooks, device }) => {
    const before = new Set(hopProgs().map((p) => p.id));
    // net_dev_start_xmit stays linked (not unlinked for lack of queues): every link is counted
    const cap = startCapture({ netns: [cli.name, srv.name], deviceHooks, queueIdleMs: 0 });
    const ours = hopProgs().filter((p) => !before.has(p.id));
    // and hop_flush_run, loaded once and never linked: stop() runs it on each CPU (bpf/emit.bpf.h)
    expect(ours.map((p) => p.name).sort()).toEqual([...COMMON, 'hop_flush_run', ...device].sort());
    const progIds = new Set(ours.map((p) => p.id));
    const mapIds = new Set(ours.flatMap((p) => p.map_ids ?? []));
    // one link per tracepoint program; with tc, one per program and device instead for the two device programs
    const devices = cap.source.stats().tcx_devices!;
    expect(devices).toBe(deviceHooks === 'tc' ? 4 : 0); // lo and the veth end in each namespace
    expect(bpftool('link', 'show').filter((l) => progIds.has(l.prog_id!))).toHaveLength(COMMON.length + (deviceHooks === 'tc' ? 2 * devices : device.length));
    await exchange(16001);
    await cap.waitFor((r) => r.kind === Kind.PACKET, { what: 'packets' });
    await cap.stop();

    expect(await eventually(() => !bpftool('prog', 'show').some((p) => progIds.has(p.id)))).toBe(true);
    expect(bpftool('link', 'show').filter((l) => progIds.has(l.prog_id!))).toEqual([]);
    expect(await eventually(() => !bpftool('map', 'show').some((m) => mapIds.has(m.id)))).toBe(true);
    // Links only (tracepoints, tcx): no qdisc or filter is ever added to the devices.
    for (const [ns, dev] of [[cli, link.a], [srv, link.b]] as const) {
      for (const dir of ['ingress', 'egress']) expect(ns.run('tc', ['filter', 'show', 'dev', dev, dir]).trim()).toBe('');
      expect(ns.run('tc', ['qdisc', 'show', 'dev', dev])).not.toContain('clsact');
    }
  });

  it('keeps the other programs when a tracepoint is absent, and says what is lost', () => {
    const real = openKernelBtf();
    const btf = { ...real, hasTracepoint: (n: string) => n !== 'tcp_send_reset' && real.hasTracepoint(n) };
    const k = loadObjects({ objDir: OBJ_DIR, btf, ringBytes: 1 << 16, wakeupBytes: 1 << 14, runRecords: 31, runFlushNs: 10e6 });
    try {
      k.attach();
      expect(k.attached.map((a) => a.tracepoint)).not.toContain('tcp_send_reset');
      expect(k.attached).toHaveLength(7);
      expect(k.problems).toEqual([
        expect.objectContaining({ program: 'hop_tcp_send_reset', code: 'HOP_LIVE_TRACEPOINT_ABSENT', lost: 'resets sent' }),
      ]);
      const line = describeLiveStatus({ attached: k.attached, problems: k.problems, filters: parseLiveFilters({}), netns: null });
      expect(line).toContain('attached netif_receive_skb, net_dev_queue, net_dev_start_xmit, kfree_skb');
      expect(line).toContain('NOT capturing resets sent (hop_tcp_send_reset: HOP_LIVE_TRACEPOINT_ABSENT)');
    } finally {
      k.close();
      real.close();
    }
  });

  it('fails with stable codes naming the problem', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(LiveError);
        return (e as LiveError).code;
      }
      return undefined;
    };
    expect(code(() => createLiveSource(parseLiveOptions({ netns: ['hopt-does-not-exist'] })))).toBe('HOP_LIVE_NETNS_NOT_FOUND');
    expect(code(() => createLiveSource(parseLiveOptions({ objDir: '/nonexistent' })))).toBe('HOP_LIVE_NO_OBJECTS');
    expect(code(() => parseLiveOptions({ ringBytes: 100000 }))).toBe('HOP_LIVE_BAD_OPTION');
    expect(() => parseLiveOptions({ ports: [70000] })).toThrow(/ports\[0\]/);
  });

  it('changes filters at run time without reloading, and counts what they drop', async () => {
    const cap = startCapture({ netns: [cli.name, srv.name], ports: [16010] });
    try {
      const ids = new Set(hopProgs().map((p) => p.id));
      const p1 = await exchange(16011); // filtered out by port
      const p2 = await exchange(16010);
      await cap.waitFor((r) => r.tuple.sport === p2 || r.tuple.dport === p2, { what: 'port 16010 records' });
      await cap.settle();
      expect(cap.records.some((r) => r.tuple.sport === p1 || r.tuple.dport === p1)).toBe(false);
      expect(cap.source.kernelCounters().port_filtered).toBeGreaterThan(0);

      // Now only the server's namespace, any port, and only 1 flow in 1000000 of packets.
      cap.source.setFilters({ netns: [srv.name], sampleN: 1_000_000 });
      const n = cap.records.length;
      const sampledBefore = cap.source.kernelCounters().sampled_out;
      await exchange(16012);
      await sleep(100);
      expect(cap.source.kernelCounters().sampled_out).toBeGreaterThan(sampledBefore);
      const later = cap.records.slice(n);
      // Socket events are never sampled; packets of this flow were (with near certainty).
      expect(later.filter((r) => r.kind === Kind.PACKET && r.tuple.sport === 16012)).toEqual([]);
      expect(later.every((r) => r.netnsIno === srv.inode)).toBe(true);
      expect(later.some((r) => r.kind === Kind.SOCK_STATE)).toBe(true);
      // The same programs all along.
      expect(new Set(hopProgs().map((p) => p.id))).toEqual(ids);
      expect(cap.source.status().filters.sampleN).toBe(1_000_000);
    } finally {
      await cap.stop();
    }
  });

  it('admits an owned namespace the table holds past its home slot', async () => {
    // An inode that is no namespace takes srv's home slot first, so srv sits one slot on:
    // the kernel must probe as the agent placed it (filters.ts netnsLayout).
    const home = (ino: number) => netnsHome(ino) & (NETNS_SLOTS - 1);
    let decoy = srv.inode + 1;
    while (home(decoy) !== home(srv.inode)) decoy++;
    const cap = startCapture({ netns: [String(decoy), srv.name] });
    try {
      const port = await exchange(16020);
      await cap.waitFor((r) => r.kind === Kind.PACKET && r.netnsIno === srv.inode && (r.tuple.sport === port || r.tuple.dport === port), { what: 'packets in srv' });
      await cap.settle();
      expect(cap.records.every((r) => r.netnsIno === srv.inode)).toBe(true);
      expect(cap.source.kernelCounters().netns_filtered).toBeGreaterThan(0); // cli's packets
    } finally {
      await cap.stop();
    }
  });

  it('filters by interface and by address in the kernel', async () => {
    const cap = startCapture({ netns: [cli.name, srv.name], interfaces: [link.b], addrs: [`${link.addrA}/32`] });
    try {
      const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, '::', '16030']);
      await waitLine(server, /listening/);
      const p4 = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, '16030', 'v4']).trim()) as { local: number };
      const p6 = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addr6B, '16030', 'v6']).trim()) as { local: number };
      server.kill();
      await cap.waitFor((r) => r.kind === Kind.PACKET && r.tuple.sport === p4.local, { what: 'IPv4 packets on the server device' });
      await cap.settle();
      const packets = cap.records.filter((r) => r.kind === Kind.PACKET);
      expect(packets.every((r) => r.ifname === link.b)).toBe(true);
      expect(packets.some((r) => r.tuple.sport === p6.local || r.tuple.dport === p6.local)).toBe(false);
      const k = cap.source.kernelCounters();
      expect(k.ifname_filtered).toBeGreaterThan(0);
      expect(k.addr_filtered).toBeGreaterThan(0);
    } finally {
      await cap.stop();
    }
  });

  it('follows a namespace owned by name when it is deleted and created again', async () => {
    const re = lab.ns('re');
    const cap = startCapture({ netns: [re.name] });
    const rstIn = async (ino: number) => {
      const port = 16040 + Math.floor(Math.random() * 100);
      re.run('node', ['-e', TCP_CLIENT, '127.0.0.1', String(port), 'x']);
      await cap.waitFor((r) => r.kind === Kind.RST_SENT && r.netnsIno === ino && r.tuple.sport === port, { what: `reset in netns ${ino}`, timeoutMs: 6000 });
    };
    try {
      await rstIn(re.inode);
      execFileSync('ip', ['netns', 'del', re.name]);
      execFileSync('ip', ['netns', 'add', re.name]);
      execFileSync('ip', ['-n', re.name, 'link', 'set', 'lo', 'up']);
      const ino = Number(execFileSync('stat', ['-L', '-c', '%i', `/var/run/netns/${re.name}`], { encoding: 'utf8' }).trim());
      expect(ino).not.toBe(re.inode);
      // Within one refresh period the agent owns the new namespace, with no call from us.
      expect(await eventually(() => cap.source.status().netns?.includes(ino) === true, 5000)).toBe(true);
      expect(cap.source.stats().netns_changes).toBeGreaterThan(0);
      await rstIn(ino);
    } finally {
      await cap.stop();
    }
  });

  /**
   * A live source over the link, consumed and exposing metrics, while a client makes a
   * burst of many small writes, no Nagle (one packet each way per write): `perTick`
   * writes every 1 ms, `ticks` times. `check` runs `waitMs` after the burst, before the
   * source stops.
   */
  async function afterBurst(input: LiveOptionsInput, port: number, burst: { perTick: number; ticks: number; waitMs: number }, check: (source: LiveSource, metrics: string) => void) {
    const source = createLiveSource(parseLiveOptions({ netns: [cli.name, srv.name], ...input }));
    const registry = new Registry();
    registerLiveMetrics(registry, source);
    const consumer = (async () => {
      for await (const c of source.chunks()) void c;
    })();
    try {
      const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(port)]);
      await waitLine(server, /listening/);
      cli.run('node', ['-e', `
        const s = require('net').connect(${port}, '${link.addrB}', () => {
          s.setNoDelay(true);
          let i = 0; const t = setInterval(() => { for (let k = 0; k < ${burst.perTick}; k++) s.write('x'); if (++i === ${burst.ticks}) { clearInterval(t); s.end(); } }, 1);
        });
        s.on('data', () => {}); s.on('close', () => process.exit(0));`]);
      server.kill();
      await sleep(burst.waitMs);
      check(source, await registry.metrics());
    } finally {
      await source.stop();
      await consumer;
    }
  }

  it('counts ring buffer overflow in the kernel and exposes it as a metric', async () => {
    // A 64 KiB ring drained once a second cannot hold a burst of a few thousand packets.
    await afterBurst({ ringBytes: 1 << 16, drainIntervalMs: 1000, wakeupFraction: 1 }, 16020, { perTick: 50, ticks: 40, waitMs: 1200 }, (source, text) => {
      const lost = source.kernelCounters().ringbuf_full;
      expect(lost).toBeGreaterThan(0);
      const metric = (name: string) => Number(text.match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1]);
      expect(metric('hoptrace_live_ringbuf_lost_total')).toBe(lost);
      expect(text).toMatch(/hoptrace_live_events_total\{kind="packet"\} \d+/);
      expect(text).toMatch(/hoptrace_live_kernel_events_total\{outcome="ringbuf_full"\} \d+/);
      expect(text).toMatch(/hoptrace_live_programs\{state="attached"\} 8/);
    });
  });

  it('reads a backlog of many chunks in one drain, and reports how long the ring went undrained', async () => {
    // Drained once a second, no early wake-up: the burst waits in the ring as a backlog. A chunk
    // ends before the first run that does not fit whole, so it is rarely exactly full; one drain
    // must still go on to the next chunk (it once stopped there, one chunk per drain).
    const input = { drainIntervalMs: 1000, drainIdleMs: 1000, wakeupFraction: 1, chunkRecords: 64, maxQueuedChunks: 64 };
    await afterBurst(input, 16025, { perTick: 10, ticks: 20, waitMs: 2200 }, (source, text) => {
      const st = source.stats();
      expect(st.records).toBeGreaterThan(4 * 64);
      expect(st.queue_full).toBe(0);
      expect(st.chunks).toBeGreaterThan(st.drains);
      expect(Number(text.match(/^hoptrace_live_ring_undrained_max_seconds (\S+)$/m)?.[1])).toBeGreaterThanOrEqual(0.9);
    });
  });

  it('reads every record intact across many wraps of a small ring (records straddling its end)', async () => {
    // 64 KiB holds ~480 records of 136 bytes; 136 does not divide 65536, so each wrap splits a record.
    const source = createLiveSource(parseLiveOptions({ netns: [cli.name, srv.name], ringBytes: 1 << 16, drainIntervalMs: 2, drainIdleMs: 2 }));
    let drained = 0;
    const consumer = (async () => {
      for await (const c of source.chunks()) drained += c.count;
    })();
    try {
      const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, '16021']);
      await waitLine(server, /listening/);
      // Spawned, not run: this process must keep draining while the client sends.
      const client = cli.spawn('node', ['-e', `
        const s = require('net').connect(16021, '${link.addrB}', () => {
          s.setNoDelay(true);
          let i = 0; const t = setInterval(() => { for (let k = 0; k < 5; k++) s.write('x'); if (++i === 400) { clearInterval(t); s.end(); } }, 1);
        });
        s.on('data', () => {}); s.on('close', () => process.exit(0));`]);
      await new Promise((r) => client.once('exit', r));
      server.kill();
    } finally {
      await source.stop();
      await consumer;
    }
    const st = source.stats();
    expect(drained).toBeGreaterThan(4 * 480);
    // Everything the kernel wrote was read back whole: none corrupt, none of a wrong size.
    expect(drained).toBe(st.kernel_emitted);
    expect(Object.entries(st).filter(([k, v]) => (k.startsWith('corrupt_') || k === 'bad_size') && v > 0)).toEqual([]);
  });

  it('holds up to maxQueuedChunks full chunks of records while not pulled, however small the chunks, then leaves the rest in the ring', async () => {
    // 2 x 1024 records at most; drains every 2 ms make chunks of a few records each.
    const source = createLiveSource(parseLiveOptions({ netns: [cli.name, srv.name], maxQueuedChunks: 2, chunkRecords: 1024, drainIntervalMs: 2, drainIdleMs: 2 }));
    const send = async (port: number, writes: number) => {
      const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(port)]);
      await waitLine(server, /listening/);
      const client = cli.spawn('node', ['-e', `
        const s = require('net').connect(${port}, '${link.addrB}', () => {
          s.setNoDelay(true);
          let i = 0; const t = setInterval(() => { s.write('x'); if (++i === ${writes}) { clearInterval(t); s.end(); } }, 2);
        });
        s.on('data', () => {}); s.on('close', () => process.exit(0));`]);
      await new Promise((r) => client.once('exit', r));
      server.kill();
      await sleep(50);
    };
    let drained = 0;
    const pull = async () => {
      for await (const c of source.chunks()) {
        drained += c.count;
        if (source.stats().queued_chunks === 0) break;
      }
    };
    try {
      // ~100 writes over ~200 ms: many small chunks, far fewer than 2,048 records. Nothing is pulled meanwhile.
      await send(16023, 100);
      const st = source.stats();
      expect(st.chunks).toBeGreaterThan(2);
      expect(st.queue_full).toBe(0);
      await pull();
      expect(drained).toBe(st.records);
      // Past 1,024 queued (no room for another chunk), the source stops draining: the rest
      // waits in the ring, nothing is dropped, and a pull resumes the drains.
      await send(16024, 1200);
      const paused = source.stats();
      expect(paused.pauses).toBeGreaterThan(0);
      expect(paused.records).toBeLessThanOrEqual(drained + 2048);
      expect(paused.queue_full).toBe(0);
      const all = (async () => {
        for await (const c of source.chunks()) drained += c.count;
      })();
      await sleep(200);
      await source.stop();
      await all;
      const end = source.stats();
      expect(end.kernel_ringbuf_full).toBe(0);
      expect(end.queue_full).toBe(0);
      expect(drained).toBe(end.kernel_emitted);
      expect(end.records).toBeGreaterThan(paused.records + 1000);
    } finally {
      await source.stop();
    }
  });

  it('reports each program\'s runs and run time while kernel.bpf_stats_enabled is on', async () => {
    const STATS = '/proc/sys/kernel/bpf_stats_enabled';
    const was = readFileSync(STATS, 'utf8').trim();
    writeFileSync(STATS, '1');
    const cap = startCapture({ netns: [cli.name, srv.name] });
    try {
      await exchange(16022);
      // device hooks are tcx links here (netns by name): one program's runs over all its devices
      const dev = cap.source.programStats().find((p) => p.tracepoint === 'tcx/ingress');
      expect(dev?.runs).toBeGreaterThan(0);
      expect(dev?.runNs).toBeGreaterThan(0);
      const registry = new Registry();
      registerLiveMetrics(registry, cap.source);
      const text = await registry.metrics();
      expect(Number(text.match(/^hoptrace_live_program_runs_total\{tracepoint="tcx\/ingress"\} (\d+)$/m)?.[1])).toBeGreaterThanOrEqual(dev!.runs);
      expect(text).toMatch(/^hoptrace_live_program_run_seconds_total\{tracepoint="tcx\/egress"\} [0-9.e-]+$/m);
    } finally {
      writeFileSync(STATS, was);
      await cap.stop();
    }
  });

  it('exposes drops by kernel reason and resets by reason and state as metrics', async () => {
    const cap = startCapture({ netns: [cli.name, srv.name] });
    const registry = new Registry();
    registerLiveMetrics(registry, cap.source);
    try {
      cli.run('node', ['-e', TCP_CLIENT, link.addrB, '16099', 'x']);
      await cap.waitFor((r) => r.kind === Kind.RST_SENT, { what: 'reset' });
      await cap.waitFor((r) => r.kind === Kind.DROP, { what: 'drop' });
      const text = await registry.metrics();
      expect(text).toMatch(/hoptrace_live_resets_total\{direction="sent",reason="NO_SOCKET",state="UNKNOWN"\} [1-9]/);
      expect(text).toMatch(/hoptrace_live_resets_total\{direction="received",reason="",state="SYN_SENT"\} [1-9]/);
      expect(text).toMatch(/hoptrace_live_drops_total\{reason="NO_SOCKET"\} [1-9]/);
    } finally {
      await cap.stop();
    }
  });

  it('hoptrace agent --live --ring-mib sizes the kernel ring buffer and says so; a size not a power of two is refused', async () => {
    const cliJs = join(__dirname, '../../dist/services/cli/main.js');
    const args = ['agent', '--live', '--node', 'ring-mib', '--netns', `${cli.name},${srv.name}`];
    const bad = spawnSync(process.execPath, [cliJs, ...args, '--ring-mib', '3'], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--ring-mib <n>.*expected a power of two in \[1, 1024\]/);
    const rings = () => bpftool('map', 'show').filter((m) => m.type === 'ringbuf' && m.name === 'hop_events').map((m) => m.max_entries);
    expect(rings()).not.toContain(2 << 20);
    // Kafka is not needed to attach: the status line (logs go to stderr) comes before the producer connects
    const agent = spawn(process.execPath, [cliJs, ...args, '--ring-mib', '2'], { env: { ...process.env, HOPTRACE_KAFKA_BROKERS: '127.0.0.1:1', HOPTRACE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    agent.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      expect(await eventually(() => log.includes('live capture on'), 15_000)).toBe(true);
      expect(log).toMatch(/live capture on 2 owned namespace\(s\), ring 2 MiB:/);
      expect(rings()).toContain(2 << 20);
    } finally {
      agent.kill('SIGKILL');
    }
    expect(await eventually(() => !rings().includes(2 << 20))).toBe(true);
  });

  it('names the cause when a profiler\'s signals interrupt the verifier (node --cpu-prof)', () => {
    const cliJs = join(__dirname, '../../dist/services/cli/main.js');
    const dir = mkdtempSync(join(tmpdir(), 'hoptrace-cpuprof-'));
    try {
      // SIGPROF every 100 us: every one of libbpf's load attempts finds a signal pending
      const r = spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', dir, cliJs, 'agent', '--live', '--node', 'cpuprof', '--netns', srv.name], {
        encoding: 'utf8',
        env: { ...process.env, HOPTRACE_KAFKA_BROKERS: '127.0.0.1:1' },
        timeout: 60_000,
      });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/failed to load \(errno 11\) \(EAGAIN: the verifier was interrupted by signals.*--perf-basic-prof/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
