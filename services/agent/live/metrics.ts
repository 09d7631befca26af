/**
 * Prometheus metrics of live capture, registered on a given prom-client
 * Registry. Values are read from the source when the registry is scraped
 * (collect callbacks), so the hot path never touches prom-client.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { Kind } from '../../shared/record.js';
import { dropReasonName, resetReasonName, tcpStateName } from './reasons.js';
import { Tally } from './tally.js';
import type { LiveSource } from './source.js';

const KIND_NAMES = new Map<number, string>(Object.entries(Kind).map(([k, v]) => [v, k.toLowerCase()]));

/**
 * Counters fed from monotonic totals: each scrape adds the growth since the
 * last one, so prom-client's counter semantics (never decreasing) hold.
 */
function totals(counter: Counter<string>): (labels: Record<string, string>, total: number) => void {
  const last = new Map<string, number>();
  return (labels, total) => {
    const key = JSON.stringify(labels);
    const d = total - (last.get(key) ?? 0);
    if (d > 0) counter.inc(labels, d);
    last.set(key, total);
  };
}

export function registerLiveMetrics(registry: Registry, source: LiveSource): void {
  const events = new Counter({
    name: 'hoptrace_live_events_total',
    help: 'Records drained from the kernel, by kind.',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const t = source.tally();
      t.byKind.forEach((n, k) => n && setEvents({ kind: KIND_NAMES.get(k) ?? String(k) }, n));
    },
  });
  const setEvents = totals(events);

  const drops = new Counter({
    name: 'hoptrace_live_drops_total',
    help: 'Packets dropped by the kernel (skb:kfree_skb) in owned namespaces, by kernel drop reason.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      for (const [r, n] of source.tally().drops) setDrops({ reason: dropReasonName(r) }, n);
    },
  });
  const setDrops = totals(drops);

  const resets = new Counter({
    name: 'hoptrace_live_resets_total',
    help: 'TCP resets in owned namespaces: sent (by kernel reset reason and socket state) and received (by socket state).',
    labelNames: ['direction', 'reason', 'state'],
    registers: [registry],
    collect() {
      const t = source.tally();
      for (const [key, n] of t.resetsSent) {
        const { reason, state } = Tally.splitReset(key);
        setResets({ direction: 'sent', reason: resetReasonName(reason), state: tcpStateName(state) }, n);
      }
      for (const [state, n] of t.resetsRecv) setResets({ direction: 'received', reason: '', state: tcpStateName(state) }, n);
    },
  });
  const setResets = totals(resets);

  const retrans = new Counter({
    name: 'hoptrace_live_retransmissions_total',
    help: 'TCP retransmissions (tcp:tcp_retransmit_skb) in owned namespaces.',
    registers: [registry],
    collect() {
      setRetrans({}, source.tally().byKind[Kind.RETRANS]!);
    },
  });
  const setRetrans = totals(retrans);

  const kernelLost = new Counter({
    name: 'hoptrace_live_ringbuf_lost_total',
    help: 'Records lost in the kernel because the ring buffer was full.',
    registers: [registry],
    collect() {
      setKernelLost({}, source.kernelCounters().ringbuf_full);
    },
  });
  const setKernelLost = totals(kernelLost);

  const kernel = new Counter({
    name: 'hoptrace_live_kernel_events_total',
    help: 'Kernel-side outcomes of would-be records (emitted, filtered by reason, sampled out, ...); queued_egress counts packets that left an owned device through a queueing qdisc (net_dev_start_xmit is linked while it moves).',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      for (const [k, n] of Object.entries(source.kernelCounters())) setKernel({ outcome: k }, n);
    },
  });
  const setKernel = totals(kernel);

  const ringRuns = new Counter({
    name: 'hoptrace_live_ring_runs_total',
    help: 'Ring buffer records read: each a run of records one CPU wrote together (--run-records); hoptrace_agent_records_read_total over this is the mean run.',
    registers: [registry],
    collect() {
      setRingRuns({}, source.stats().runs ?? 0);
    },
  });
  const setRingRuns = totals(ringRuns);

  const pauses = new Counter({
    name: 'hoptrace_live_drain_pauses_total',
    help: 'Times the live source stopped draining the ring because the agent had not pulled its queued chunks (backpressure): records wait in the ring meanwhile, and only a full ring loses them (hoptrace_live_ringbuf_lost_total).',
    registers: [registry],
    collect() {
      setPauses({}, source.stats().pauses ?? 0);
    },
  });
  const setPauses = totals(pauses);

  const xmitLinks = new Counter({
    name: 'hoptrace_live_xmit_links_total',
    help: 'net_dev_start_xmit linked (event=linked) and unlinked (event=unlinked) as packets through a queueing qdisc of an owned device came and went, and links that failed (event=failed; tried again every 100 ms, meanwhile no queue time is recorded).',
    labelNames: ['event'],
    registers: [registry],
    collect() {
      const s = source.stats();
      setXmitLinks({ event: 'linked' }, s.xmit_links ?? 0);
      setXmitLinks({ event: 'unlinked' }, s.xmit_unlinks ?? 0);
      setXmitLinks({ event: 'failed' }, s.xmit_link_failed ?? 0);
    },
  });
  const setXmitLinks = totals(xmitLinks);

  const agentDropped = new Counter({
    name: 'hoptrace_live_agent_dropped_total',
    help: 'Records drained but not delivered: queue_full (read at stop with the queue full), corrupt_*, bad_size.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      for (const [k, n] of Object.entries(source.stats())) {
        if (k === 'queue_full' || k === 'bad_size' || k.startsWith('corrupt_')) setAgentDropped({ reason: k }, n);
      }
    },
  });
  const setAgentDropped = totals(agentDropped);

  // The kernel counts these only while kernel.bpf_stats_enabled=1 (a small cost per run): the capture's own CPU in the packet path.
  const runs = new Counter({
    name: 'hoptrace_live_program_runs_total',
    help: 'Runs of each attached BPF program (counted only while sysctl kernel.bpf_stats_enabled=1).',
    labelNames: ['tracepoint'],
    registers: [registry],
    collect() {
      for (const p of source.programStats()) {
        setRuns({ tracepoint: p.tracepoint }, p.runs);
        setRunTime({ tracepoint: p.tracepoint }, p.runNs / 1e9);
      }
    },
  });
  const setRuns = totals(runs);
  const runTime = new Counter({
    name: 'hoptrace_live_program_run_seconds_total',
    help: 'CPU time spent in each attached BPF program, in the kernel paths it hooks (counted only while sysctl kernel.bpf_stats_enabled=1).',
    labelNames: ['tracepoint'],
    registers: [registry],
  });
  const setRunTime = totals(runTime);

  new Gauge({
    name: 'hoptrace_live_ring_undrained_max_seconds',
    help: 'Longest time the ring buffer went without a drain since the previous scrape. The ring must hold what arrives meanwhile: when it approaches ring bytes / (hoptrace_live_events_total rate x 136), expect hoptrace_live_ringbuf_lost_total to grow. At low rates it is the drain timer\'s period (up to drainIdleMs); above, an event loop that was busy elsewhere.',
    registers: [registry],
    collect() {
      this.set(source.undrainedMax() / 1000);
    },
  });

  new Gauge({
    name: 'hoptrace_live_programs',
    help: 'BPF programs attached (state=attached; of these, state=unlinked: linked only while they have work, and without any now: net_dev_start_xmit while no owned device queues) and not capturing (state=failed).',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const s = source.status();
      this.set({ state: 'attached' }, s.attached.length);
      this.set({ state: 'unlinked' }, s.onDemand?.filter((d) => !d.linked).length ?? 0);
      this.set({ state: 'failed' }, s.problems.length);
    },
  });

  new Gauge({
    name: 'hoptrace_live_tcx_devices',
    help: 'With device hooks tc: devices of the owned namespaces with tcx links (state=linked), and those the last refresh could not link (state=failed; tried again every refresh).',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const d = source.status().devices;
      this.set({ state: 'linked' }, d?.linked ?? 0);
      this.set({ state: 'failed' }, d?.failed.length ?? 0);
    },
  });
}
