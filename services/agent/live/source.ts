/**
 * The live RecordSource: BPF programs on the running kernel feed one ring
 * buffer, drained in batches into chunks of packed, validated records.
 *
 * Draining is driven by a timer (drainIntervalMs) and by the ring buffer fd
 * becoming readable, which the kernel signals only once the ring is
 * `wakeupFraction` full (filter.bpf.h), so a busy ring costs few wakeups and a
 * quiet one adds at most one timer period of latency. The consumer applies no
 * backpressure to the kernel: if it stops pulling, at most maxQueuedChunks full
 * chunks' worth of records (maxQueuedChunks x chunkRecords) are held and further
 * records are dropped and counted (queue_full). The bound is in records, not
 * chunks: at low rates each timer drain yields a small chunk, and a count of
 * chunks overflowed after a pause of a few drains while holding almost nothing.
 */
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import koffi from 'koffi';
import { checkRecord, RECORD_SIZE, type CorruptReason } from '../../shared/record.js';
import { sleep } from '../../shared/retry.js';
import { rejectedStats, type RecordChunk, type RecordSource } from '../source.js';
import { bindings, BPF_TCX_INGRESS, clockOffsetNs, stableClockOffset, testRunOnCpu } from './libbpf.js';
import { openKernelBtf } from './btf.js';
import { loadObjects, type AttachedProgram, type KernelObjects } from './objects.js';
import { createFilterWriter, u32Key } from './filters.js';
import { KERNEL_COUNTERS, SharedMap, type KernelCounter } from './kernel-abi.js';
import { namedNetns, netnsPaths, resolveNetns, resolveNetnsPresent } from './netns.js';
import { createDeviceLinks, type DeviceLinks } from './tcx.js';
import { deviceHooksOf, filtersOf, netnsEnterable, parseLiveFilters, type DeviceHooks, type LiveFilters, type LiveFiltersInput, type LiveOptions } from './options.js';
import { checkCapabilities, probeBpfSyscall } from './privileges.js';
import { RecordArena } from './arena.js';
import { nextDrainPeriod, RingReader } from './ring.js';
import { Tally } from './tally.js';
import { LiveError, type ProgramProblem } from './errors.js';

export interface LiveStatus {
  attached: readonly AttachedProgram[];
  /** Programs not capturing, why, and what is lost. */
  problems: readonly ProgramProblem[];
  filters: LiveFilters;
  /** Owned namespace inodes; null = all. */
  netns: readonly number[] | null;
  /** Device hooks: tracepoints, or tcx links on this many devices. */
  devices?: { hooks: DeviceHooks; linked: number; failed: readonly string[] };
  /** Size of the kernel ring buffer's data area. */
  ringBytes?: number;
  /** Programs linked only while they have work (options.ts queueIdleMs), and whether linked now. */
  onDemand?: readonly { tracepoint: string; linked: boolean }[];
}

export interface LiveSource extends RecordSource {
  /** Validates and applies new filters (netns, interfaces, addrs, ports, protocols, sampleN) without reloading. */
  setFilters(plain: LiveFiltersInput): void;
  status(): LiveStatus;
  /** Per-record tallies for metrics (metrics.ts). */
  tally(): Tally;
  /** Kernel-side counters summed over CPUs. */
  kernelCounters(): Record<KernelCounter, number>;
  /**
   * Runs and run time of each attached program since it was loaded. The kernel
   * keeps them only while kernel.bpf_stats_enabled is 1 (else both stay 0).
   */
  programStats(): ProgramStats[];
  /** Longest time without a drain since the last call, ms (then starts over): for a scrape window. */
  undrainedMax(): number;
}

export interface ProgramStats {
  program: string;
  tracepoint: string;
  runs: number;
  runNs: number;
}

/** run_cnt and run_time_ns of a program fd, from /proc/self/fdinfo (0 when stats are off or the fd is gone). */
export function readProgramStats(fd: number): { runs: number; runNs: number } {
  let text = '';
  try {
    text = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    return { runs: 0, runNs: 0 };
  }
  const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return { runs: field('run_cnt'), runNs: field('run_time_ns') };
}

/** How often namespace names are re-read (chunk names, owned-by-name re-resolution). */
const NETNS_NAMES_REFRESH_MS = 2000;
/** The program linked only while packets leave an owned device through a queue (options.ts queueIdleMs). */
const XMIT = 'net_dev_start_xmit';
/** How often the queued-egress count is read, at most; and how long after the start a queue has to show. */
const XMIT_CHECK_MS = 100;
const XMIT_START_GRACE_MS = 1000;
const QUEUED_EGRESS = KERNEL_COUNTERS.indexOf('queued_egress');

export function createLiveSource(opts: LiveOptions): LiveSource {
  checkCapabilities();
  probeBpfSyscall();
  const { bpf, libc } = bindings();
  const btf = openKernelBtf();
  let deviceHooks: DeviceHooks;
  try {
    deviceHooks = deviceHooksOf(opts, btf.enumNames('bpf_attach_type')?.get(BPF_TCX_INGRESS) === 'BPF_TCX_INGRESS');
  } catch (err) {
    btf.close();
    throw err;
  }
  let filters = filtersOf(opts);
  let owned = filters.netns ? resolveNetns(filters.netns) : null;

  const wakeupBytes = Math.max(RECORD_SIZE, Math.floor(opts.ringBytes * opts.wakeupFraction));
  let kernel: KernelObjects;
  try {
    kernel = loadObjects({
      objDir: opts.objDir,
      btf,
      ringBytes: opts.ringBytes,
      wakeupBytes,
      runRecords: opts.runRecords,
      runFlushNs: opts.runFlushMs * 1e6,
      conntrackInPlace: opts.conntrackInPlace,
      objects: opts.objects,
      deviceHooks,
    });
  } finally {
    btf.close();
  }
  let ring: RingReader;
  let devices: DeviceLinks | null = null;
  const filterWriter = createFilterWriter(kernel.maps);
  const local = {
    records: 0,
    runs: 0,
    chunks: 0,
    queue_full: 0,
    bad_size: 0,
    drains: 0,
    /** Times draining paused because the queue had no room for a chunk (backpressure: records wait in the ring). */
    pauses: 0,
    /** Longest time between the starts of two drains, ms: the ring must hold what arrives meanwhile. */
    undrained_max_ms: 0,
    netns_changes: 0,
    netns_refresh_failed: 0,
    tcx_links_failed: 0,
    /** net_dev_start_xmit linked and unlinked as owned devices' queues came and went; links that failed. */
    xmit_links: 0,
    xmit_unlinks: 0,
    xmit_link_failed: 0,
  };
  /** Devices the last sync could not link, and why (retried on every refresh). */
  let tcxFailed: readonly string[] = [];
  /** Links (and unlinks) the owned namespaces' devices, with device hooks 'tc'. */
  const syncDevices = (): void => {
    if (!devices || !filters.netns) return;
    const r = devices.sync(netnsPaths(filters.netns));
    local.tcx_links_failed += r.failed.length;
    tcxFailed = r.failed;
  };
  try {
    filterWriter.apply(filters, owned);
    kernel.attach();
    if (kernel.tcx) {
      devices = createDeviceLinks(kernel.tcx);
      syncDevices();
    }
    ring = new RingReader(kernel.maps.get(SharedMap.EVENTS)!, opts.ringBytes);
  } catch (err) {
    devices?.close();
    kernel.close();
    throw err;
  }

  const ncpu = bpf.libbpf_num_possible_cpus();
  const counterValue = Buffer.alloc(8 * ncpu);
  /** A kernel counter (kernel-abi.ts KERNEL_COUNTERS), summed over CPUs; 0 once stopped. */
  const counterSum = (i: number): number => {
    const fd = kernel.maps.get(SharedMap.COUNTERS);
    let sum = 0;
    if (fd !== undefined && !stopped && bpf.bpf_map_lookup_elem(fd, u32Key(i), counterValue) === 0) {
      for (let c = 0; c < ncpu; c++) sum += Number(counterValue.readBigUInt64LE(8 * c));
    }
    return sum;
  };
  const boot = randomInt(1, 2 ** 47);
  const tally = new Tally();
  const corrupt: Partial<Record<CorruptReason, number>> = {};
  // Own ArrayBuffer (never a pool slice): the ring reader copies into it as 32-bit words.
  const staging = Buffer.from(new ArrayBuffer(opts.chunkRecords * RECORD_SIZE));
  const tsScratch = new Uint8Array(16);
  const clockReference = stableClockOffset(() => clockOffsetNs(libc, tsScratch));
  const queue: RecordChunk[] = [];
  const maxQueuedRecords = opts.maxQueuedChunks * opts.chunkRecords;
  // Chunks live in one area, given back as the consumer pulls the next: room for the
  // queue's bound, the chunk in the consumer's hands, and the space a wrap skips.
  const arena = new RecordArena(maxQueuedRecords + 2 * opts.chunkRecords);
  let queuedRecords = 0;
  let waiter: (() => void) | null = null;
  let seq = 0;
  let stopped = false;
  let stopping: Promise<void> | undefined;
  /** Draining paused for lack of room in the queue (see pause()); closing: stop() has begun. */
  let paused = false;
  let closing = false;
  let netnsNames = namedNetns();
  let namesAt = Date.now();
  let drainedAt = Date.now();
  /** undrained_max_ms within the window that the last undrainedMax() call started at windowFrom. */
  let undrainedWindowMs = 0;
  let windowFrom = 0;

  /**
   * net_dev_start_xmit runs for every packet of every device, and records only packets
   * that left an owned device through a queueing qdisc, which the egress hook counts
   * (queued_egress, bpf/packet.bpf.c). So it is linked while that count moves and
   * unlinked once it has not moved for queueIdleMs (after a grace at the start).
   */
  const xmitOnDemand = opts.queueIdleMs > 0 && kernel.attached.some((a) => a.tracepoint === XMIT);
  let queuedCount = 0;
  let queuedAt = Date.now() - opts.queueIdleMs + Math.min(opts.queueIdleMs, XMIT_START_GRACE_MS);
  let xmitCheckedAt = 0;
  const checkXmit = (now: number): void => {
    if (!xmitOnDemand || closing || now - xmitCheckedAt < XMIT_CHECK_MS) return;
    xmitCheckedAt = now;
    const n = counterSum(QUEUED_EGRESS);
    if (n !== queuedCount) {
      queuedCount = n;
      queuedAt = now;
    }
    const want = now - queuedAt < opts.queueIdleMs;
    if (want === kernel.linked(XMIT)) return;
    if (kernel.link(XMIT, want)) local[want ? 'xmit_links' : 'xmit_unlinks']++;
    else local.xmit_link_failed++;
  };

  /**
   * Namespaces owned by name or path are re-resolved periodically: a pod's
   * namespace that is deleted and created again under the same name gets a new
   * inode, which the kernel filter must follow.
   */
  const refreshNetns = (): void => {
    netnsNames = namedNetns();
    namesAt = Date.now();
    syncDevices();
    if (!filters.netns || !owned || filters.netns.every((r) => r.kind === 'inode')) return;
    const now = resolveNetnsPresent(filters.netns);
    if (now.size === owned.size && [...now].every((i) => owned!.has(i))) return;
    try {
      filterWriter.applyNetns(now);
      owned = now;
      local.netns_changes++;
    } catch {
      local.netns_refresh_failed++;
    }
  };

  const wake = (): void => {
    const w = waiter;
    waiter = null;
    w?.();
  };

  /**
   * Drains the ring into chunks; returns the number of records read. While the queue
   * has no room for a whole chunk the source pauses instead (see pause()), unless
   * `force` (the final drain at stop): then what does not fit is read and counted as
   * dropped (queue_full).
   */
  const drain = (force = false): number => {
    if (stopped || paused) return 0;
    let total = 0;
    local.drains++;
    const since = drainedAt; // what this drain finds reached the ring after the last one
    drainedAt = Date.now();
    const gap = drainedAt - since;
    if (gap > local.undrained_max_ms) local.undrained_max_ms = gap;
    undrainedWindowMs = Math.max(undrainedWindowMs, drainedAt - Math.max(since, windowFrom));
    if (drainedAt - namesAt > NETNS_NAMES_REFRESH_MS) refreshNetns();
    checkXmit(drainedAt);
    // Bounded: one call never holds the event loop for more than a few chunks.
    for (let round = 0; round < 16; round++) {
      // Straight into the arena (one copy of each record, not two: copies were ~1/5 of a
      // full-capture agent's CPU); at stop, what finds no room goes through staging.
      const direct = hasRoom() ? arena.alloc(opts.chunkRecords) : null;
      if (!direct && !force) {
        pause();
        break;
      }
      const out = direct ?? staging;
      const { count, runs, badSize, full } = ring.drain(out);
      local.bad_size += badSize;
      local.runs += runs;
      total += count;
      let kept = 0;
      for (let i = 0; i < count; i++) {
        const off = i * RECORD_SIZE;
        const why = checkRecord(out, off);
        if (why) {
          corrupt[why] = (corrupt[why] ?? 0) + 1;
          continue;
        }
        if (kept !== i) out.copyWithin(kept * RECORD_SIZE, off, off + RECORD_SIZE);
        tally.add(out, kept * RECORD_SIZE);
        kept++;
      }
      if (!kept) {
        if (direct) arena.trimLast(0);
        if (!count) break;
        continue;
      }
      const buf = direct ? arena.trimLast(kept) : queuedRecords + kept <= maxQueuedRecords ? arena.alloc(kept) : null;
      local.records += kept;
      const firstSeq = seq;
      seq += kept;
      if (!buf) {
        local.queue_full += kept; // the seq gap marks the loss downstream
        continue;
      }
      if (!direct) staging.copy(buf, 0, 0, kept * RECORD_SIZE);
      queue.push({ buf, count: kept, firstSeq, clockOffsetNs: clockReference(Date.now()), netnsNames, since });
      queuedRecords += kept;
      local.chunks++;
      // Not `count < chunkRecords`: a chunk ends before the first run that does not fit
      // whole, so it is rarely exactly full, and that test read one chunk per drain
      // while a backlog overflowed the ring (a fresh agent's first seconds on a busy node).
      if (!full) break;
    }
    if (queue.length) wake();
    return total;
  };

  // The kernel signals the ring fd only once wakeupBytes are waiting
  // (BPF_RB_NO_WAKEUP below that), so quiet periods are drained by the timer.
  // Under load the fd stays readable (level-triggered) and draining follows the
  // event loop; batches grow with the load. A timer-only or alarm-only scheme
  // measured worse: bursts overflowed the ring between ticks.
  // The timer's period scales, between drainIntervalMs and drainIdleMs, so that a
  // drain finds about DRAIN_TARGET_RECORDS (ring.ts; it doubles while drains find none): a
  // quiet agent wakes 4 times a second instead of a hundred, one at 400k records/s every ~40 ms,
  // and a rate that jumps is caught by the fd. Each chunk says when the drain before
  // it was, and the agent's linger runs from there, so a quiet agent's one wake-up
  // drains, seals and sends together.
  const onReadable = (): void => void drain();
  const poll = koffi.node.poll(kernel.maps.get(SharedMap.EVENTS)!, { readable: true }, onReadable);
  let period = opts.drainIntervalMs;
  const onTimer = (): void => {
    const found = drain();
    if (paused) return;
    period = nextDrainPeriod(period, found, opts.drainIntervalMs, opts.drainIdleMs);
    timer = setTimeout(onTimer, period);
  };
  let timer = setTimeout(onTimer, period);

  /**
   * Backpressure. When the consumer falls behind and the queue has no room for another
   * chunk, the source stops draining: records wait in the ring (16 MiB by default, twice
   * the queue), and only a full ring loses them, counted by the kernel (ringbuf_full).
   * Draining on, only to drop what the queue cannot take, spent the agent's CPU on
   * records it then lost, when it was already behind. The ring fd is level-triggered,
   * so its poll is stopped too (it would wake the loop again and again); the time
   * paused counts in undrained_max_ms. The consumer's next pull resumes it.
   */
  function hasRoom(): boolean {
    return queuedRecords + opts.chunkRecords <= maxQueuedRecords;
  }
  function pause(): void {
    paused = true;
    local.pauses++;
    poll.stop();
    clearTimeout(timer);
  }
  function resume(): void {
    if (!paused || closing || !hasRoom()) return;
    paused = false;
    poll.start({ readable: true }, onReadable);
    timer = setTimeout(onTimer, 0);
  }

  /**
   * Has each CPU write its open run of records now (hop_flush_run), rather than at
   * its timer. A CPU whose run an interrupted append holds is asked again; one that
   * cannot be reached (offline) has no run, or its timer will not fire either.
   */
  const flushRuns = async (): Promise<void> => {
    if (opts.runRecords <= 1 || kernel.flushFd < 0) return;
    const ncpu = bpf.libbpf_num_possible_cpus();
    for (let cpu = 0; cpu < ncpu; cpu++) {
      for (let attempt = 0; attempt < 10 && testRunOnCpu(kernel.flushFd, cpu) === 1; attempt++) await sleep(1);
    }
  };

  const kernelCounters = (): Record<KernelCounter, number> => {
    const out = {} as Record<KernelCounter, number>;
    KERNEL_COUNTERS.forEach((name, i) => (out[name] = counterSum(i)));
    return out;
  };
  let finalKernel: Record<KernelCounter, number> | null = null;

  const source: LiveSource = {
    node: opts.node,
    boot,

    async *chunks(): AsyncGenerator<RecordChunk> {
      for (;;) {
        const c = queue.shift();
        if (c) {
          queuedRecords -= c.count;
          resume();
          yield c;
          arena.release(); // the consumer is done with c once it pulls the next
          continue;
        }
        if (stopped) return;
        await new Promise<void>((r) => (waiter = r));
      }
    },

    stop(): Promise<void> {
      stopping ??= (async () => {
        closing = true;
        paused = false; // the final drain below reads everything
        clearTimeout(timer);
        poll.close();
        devices?.close();
        kernel.detach(); // no new events...
        await flushRuns(); // ...each CPU's open run into the ring...
        drain(true); // ...then take what is already in the ring
        finalKernel = kernelCounters();
        stopped = true;
        ring.close();
        kernel.close();
        wake();
      })();
      return stopping;
    },

    stats(): Record<string, number> {
      const out: Record<string, number> = { ...local, queued_chunks: queue.length, ...rejectedStats(corrupt) };
      for (const [k, v] of Object.entries(finalKernel ?? kernelCounters())) out[`kernel_${k}`] = v;
      out.programs_attached = kernel.attached.length;
      out.tcx_devices = devices?.devices() ?? 0;
      out.programs_failed = kernel.problems.length;
      return out;
    },

    setFilters(plain: LiveFiltersInput): void {
      const next = parseLiveFilters(plain);
      const nextOwned = next.netns ? resolveNetns(next.netns) : null;
      if (devices && !netnsEnterable(next.netns)) {
        throw new LiveError('HOP_LIVE_BAD_OPTION', 'live option netns: with device hooks tc every owned namespace must be named by name or path (restart with deviceHooks tracepoint to own all or by inode)');
      }
      if (stopped) return;
      filterWriter.apply(next, nextOwned);
      filters = next;
      owned = nextOwned;
      syncDevices();
      netnsNames = namedNetns();
      namesAt = Date.now();
    },

    status: () => ({
      attached: kernel.attached,
      problems: kernel.problems,
      filters,
      netns: owned ? [...owned] : null,
      devices: { hooks: deviceHooks, linked: devices?.devices() ?? 0, failed: tcxFailed },
      ringBytes: opts.ringBytes,
      onDemand: xmitOnDemand ? [{ tracepoint: XMIT, linked: kernel.linked(XMIT) }] : [],
    }),

    rejected: () => corrupt,
    tally: () => tally,
    kernelCounters: () => finalKernel ?? kernelCounters(),
    programStats: () => (stopped ? [] : kernel.attached.map((a) => ({ program: a.program, tracepoint: a.tracepoint, ...readProgramStats(a.fd) }))),
    undrainedMax: () => {
      // a drain that is overdue now counts too
      const now = Date.now();
      const m = Math.max(undrainedWindowMs, stopped ? 0 : now - Math.max(drainedAt, windowFrom));
      undrainedWindowMs = 0;
      windowFrom = now;
      return m;
    },
  };
  return source;
}

/** One line for logs: what is captured, and what is not and why. */
export function describeLiveStatus(s: LiveStatus): string {
  const demand = new Set(s.onDemand?.map((d) => d.tracepoint));
  const on = s.attached.map((a) => (demand.has(a.tracepoint) ? `${a.tracepoint} (while an owned device queues)` : a.tracepoint)).join(', ');
  const off = s.problems.map((p) => `${p.lost} (${p.program}: ${p.code})`).join('; ');
  const scope = s.netns ? `${s.netns.length} owned namespace(s)` : 'all namespaces';
  const d = s.devices;
  const linked = d?.hooks === 'tc' ? ` (tcx on ${d.linked} device(s)${d.failed.length ? `; NOT linked: ${d.failed.join('; ')}` : ''})` : '';
  const ring = !s.ringBytes ? '' : s.ringBytes < 2 ** 20 ? `, ring ${s.ringBytes / 1024} KiB` : `, ring ${s.ringBytes / 2 ** 20} MiB`;
  return `live capture on ${scope}${ring}: attached ${on || 'nothing'}${linked}${off ? `; NOT capturing ${off}` : ''}`;
}
