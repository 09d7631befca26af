/**
 * The agent pipeline: source -> batcher -> Kafka. Holds at most `bufferBytes` of
 * records; beyond that it stops pulling from the source (a recording waits, the
 * kernel ring buffer fills and the live source counts its losses). Sends are
 * retried with backoff while Kafka is away; nothing is dropped except what is
 * still unsent when a shutdown's flush deadline passes, and that is counted.
 */
import { encodeBatch, type RecordCodecName } from '../shared/batch.js';
import type { Config } from '../shared/config.js';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { Kind, RECORD_SIZE } from '../shared/record.js';
import { retry } from '../shared/retry.js';
import { createBatcher, type ReadyBatch } from './batcher.js';
import { createConnTracker, type AnnotatedChunk } from './connections.js';
import type { AgentMetrics } from './metrics.js';
import type { KernelNames, RecordSource } from './source.js';

export interface OutMessage {
  partition: number;
  key: string;
  value: Buffer;
  records: number;
}

/** Where batches go: Kafka in production, an array in unit tests. */
export interface BatchSink {
  send(messages: OutMessage[]): Promise<void>;
  /** Human-readable destination for errors: "Kafka at 127.0.0.1:19092 topic hoptrace.hops.v1". */
  readonly where: string;
}

export interface AgentDeps {
  cfg: Config;
  source: RecordSource;
  sink: BatchSink;
  partitions: number;
  log: Logger;
  metrics: AgentMetrics;
  /** Agent name for EventIds; defaults to the source's node. */
  agent?: string;
  /** How long a graceful stop may spend flushing, ms. */
  flushTimeoutMs?: number;
}

export interface AgentStats {
  read: number;
  sent: number;
  batches: number;
  dropped: number;
}

export interface Agent {
  /** Runs until the source ends or stop() is called, then flushes. */
  run(): Promise<void>;
  stop(): Promise<void>;
  /** Running totals, for logs and the progress display (/metrics has the same by label). */
  stats(): AgentStats;
}

/** Most messages in one producer request: kafkajs groups them per broker. */
const MESSAGES_PER_SEND = 16;

/**
 * Names for the drop/reset reasons and drop locations in a batch: of the records at
 * `at` when the batch knows where they are, else of any record. (A scan of every record
 * touched each one's cache line again, ~3.5% of the agent's CPU at full capture, where
 * most batches carry a drop or two.)
 */
export function kernelNames(names: KernelNames, records: Buffer, count: number, at?: readonly number[]) {
  const dropReasonNames = new Map<number, string>();
  const resetReasonNames = new Map<number, string>();
  const symbols = new Map<bigint, string>();
  for (let k = 0, n = at ? at.length : count; k < n; k++) {
    const off = (at ? at[k]! : k) * RECORD_SIZE;
    const kind = records[off + 25];
    if (kind !== Kind.DROP && kind !== Kind.RST_SENT) continue;
    const reason = records.readUInt16LE(off + 40);
    if (kind === Kind.DROP) {
      const n = names.dropReason(reason);
      if (n) dropReasonNames.set(reason, n);
      const addr = (BigInt(records.readUInt32LE(off + 120)) << 32n) | BigInt(records.readUInt32LE(off + 116));
      const sym = addr ? names.symbol(addr) : undefined;
      if (sym) symbols.set(addr, sym);
    } else if (kind === Kind.RST_SENT) {
      const n = names.resetReason(reason);
      if (n) resetReasonNames.set(reason, n);
    }
  }
  return { dropReasonNames, resetReasonNames, symbols };
}

export function createAgent(d: AgentDeps): Agent {
  const { cfg, source, sink, log, metrics } = d;
  const agentName = d.agent || cfg.agentName || source.node;
  const tracker = createConnTracker();
  // A batch not yet full waits longer for records than a full one for company: see HOPTRACE_PARTIAL_LINGER_MS.
  const batcher = createBatcher(d.partitions, cfg.batchRecords, cfg.partialLingerMs || 4 * cfg.lingerMs);
  /** Encoded batches waiting for a request, each with when its first record came in. */
  const queue: (OutMessage & { since: number })[] = [];
  let queuedBytes = 0;
  let inFlight = 0;
  let inFlightBytes = 0;
  let stopping = false;
  /** Set once the run ends: whatever is queued goes out at once. */
  let flushing = false;
  const totals: AgentStats = { read: 0, sent: 0, batches: 0, dropped: 0 };
  /** Latest netns inode -> name map the source gave (owned namespaces: a handful). */
  let netnsNames: ReadonlyMap<number, string> | undefined;
  const abort = new AbortController();
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const waitChange = () => new Promise<void>((r) => (wake = r));

  function enqueue(batches: ReadyBatch[]) {
    for (const b of batches) {
      const meta = {
        agent: agentName,
        node: source.node,
        boot: source.boot,
        clockOffsetNs: b.clockOffsetNs,
        netnsNames,
        codec: cfg.recordCompression as RecordCodecName,
        ...(source.names && b.named?.length !== 0 ? kernelNames(source.names, b.records, b.count, b.named ?? undefined) : {}),
      };
      const value = encodeBatch(meta, b.records, b.seqs, b.count, b.conn); // copies the records
      batcher.recycle(b);
      queue.push({ partition: b.partition, key: `${agentName}/${b.partition}`, value, records: b.count, since: b.since });
      queuedBytes += b.count * RECORD_SIZE;
    }
    pump();
  }

  /**
   * Sends queued batches, several per produce request: each request costs the agent
   * about as much CPU as a 256 KiB message does (npm run bench:live -- --sections lab),
   * so a full batch waits for sendBatches - 1 more, unless its first record has already
   * waited lingerMs. Fewer than sendBatches go out only while nothing is in flight, as
   * Nagle's algorithm sends a small segment: otherwise they join the next request, sent
   * when one completes. (Behind, every batch has lingered: a fresh agent on a busy node
   * sent each alone, 8 at a time, each taking Kafka ~0.3 s, and dropped most records of
   * its first seconds.) The linger stays the bound on what the agent adds to latency,
   * plus at most one request's round trip.
   */
  function pump() {
    while (queue.length > 0 && inFlight < cfg.maxInFlight) {
      const lingered = Date.now() - queue[0]!.since >= cfg.lingerMs;
      if (queue.length < cfg.sendBatches && !flushing && (!lingered || inFlight > 0)) return;
      const msgs: OutMessage[] = queue.splice(0, MESSAGES_PER_SEND);
      const bytes = msgs.reduce((s, m) => s + m.records * RECORD_SIZE, 0);
      queuedBytes -= bytes;
      inFlight++;
      inFlightBytes += bytes;
      void sendWithRetry(msgs).finally(() => {
        inFlight--;
        inFlightBytes -= bytes;
        pump();
        notify();
      });
    }
  }

  async function sendWithRetry(msgs: OutMessage[]) {
    const records = msgs.reduce((s, m) => s + m.records, 0);
    try {
      await retry(
        async () => {
          const t0 = process.hrtime.bigint();
          try {
            await sink.send(msgs);
          } catch (err) {
            metrics.produceErrors.inc({ code: (err as { type?: string; code?: string }).type ?? (err as { code?: string }).code ?? 'unknown' });
            throw err;
          }
          metrics.produceLatency.observe(Number(process.hrtime.bigint() - t0) / 1e9);
        },
        { what: `send ${records} records to ${sink.where}`, log, maxDelayMs: cfg.retryMaxMs, signal: abort.signal },
      );
      metrics.recordsSent.inc(records);
      metrics.batchesSent.inc(msgs.length);
      totals.sent += records;
      totals.batches += msgs.length;
    } catch (err) {
      // Only reached when a stop's flush deadline aborted the retries.
      metrics.recordsDropped.inc({ reason: 'unsent_at_shutdown' }, records);
      totals.dropped += records;
      log.error({ records }, `dropped ${records} records unsent at shutdown: ${describeError(err)}`);
    }
  }

  const held = () => queuedBytes + inFlightBytes + (batcher.pending + tracker.held) * RECORD_SIZE;

  /** Batches the chunks; a chunk whose records waited in the ring may close a batch that is due already. */
  function add(chunks: AnnotatedChunk[]) {
    const now = Date.now();
    for (const c of chunks) enqueue(batcher.add(c, now));
    enqueue(batcher.due(now));
  }

  /**
   * Waits until the agent holds at most limitBytes. Not until a send slot is free as
   * well: batches sealed while all maxInFlight sends are out wait in the queue and
   * share the next request. (Waiting for a slot kept one batch per request exactly
   * when Kafka was slow: a fresh agent on a busy node sent 8 single-batch requests at a
   * time and dropped most of its first seconds' records from a full source queue.)
   * `whileRunning`: gives up once stop() is called.
   */
  async function drainTo(limitBytes: number, whileRunning = false) {
    while (held() > limitBytes && !(whileRunning && stopping)) await waitChange();
  }

  /** What the source rejected as malformed, counted as dropped once. Runs per chunk, so it reads
   * only the source's own tallies (its stats() also reads the kernel's counters). */
  const lastRejected = new Map<string, number>();
  function syncSourceCounters() {
    for (const [k, v] of Object.entries(source.rejected())) {
      const delta = v - (lastRejected.get(k) ?? 0);
      if (delta <= 0) continue;
      metrics.recordsDropped.inc({ reason: `corrupt_${k}` }, delta);
      totals.dropped += delta;
      lastRejected.set(k, v);
    }
  }

  let stopped: Promise<void> | undefined;

  return {
    async run() {
      // Batches linger, sealed ones wait to share a request, and handshake records wait
      // for their SYN-ACK. A timer wakes the agent when the first of them is due, and
      // only then: each wake-up costs a quiet agent ~0.5 ms of CPU, taken from the node's
      // traffic (the drain timer, ring.ts), so it does not poll.
      const holdTickMs = Math.max(5, Math.floor(cfg.lingerMs / 2));
      let ticker: NodeJS.Timeout | undefined;
      let tickerAt = Infinity;
      let running = true;
      const arm = () => {
        if (!running) return;
        const now = Date.now();
        const at = Math.min(batcher.dueAt(), queue.length > 0 ? queue[0]!.since + cfg.lingerMs : Infinity, tracker.held > 0 ? now + holdTickMs : Infinity);
        if (at === Infinity || (ticker && tickerAt <= at)) return;
        clearTimeout(ticker);
        tickerAt = at;
        ticker = setTimeout(tick, Math.max(1, at - now));
      };
      const tick = () => {
        ticker = undefined;
        tickerAt = Infinity;
        add(tracker.expire(Date.now()));
        arm();
      };
      try {
        for await (const chunk of source.chunks()) {
          if (chunk.netnsNames) netnsNames = chunk.netnsNames;
          metrics.recordsRead.inc(chunk.count);
          totals.read += chunk.count;
          add(tracker.process(chunk, Date.now()));
          arm();
          syncSourceCounters();
          // Once stopping, the source ends as soon as it has handed over what it still
          // holds (its final drain too); that is pulled without waiting for room in the
          // buffer, since the flush below is bounded by its deadline. (It used to stop
          // pulling here, and lost, uncounted, every chunk the source held but one.)
          await drainTo(cfg.bufferBytes, true);
        }
      } finally {
        running = false;
        flushing = true;
        clearTimeout(ticker);
        syncSourceCounters();
        add(tracker.expire(Date.now(), true));
        enqueue(batcher.due(Date.now(), true));
        const deadline = setTimeout(() => abort.abort(), d.flushTimeoutMs ?? 15_000);
        await drainTo(0);
        clearTimeout(deadline);
        log.info(totals, 'agent flushed');
      }
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        await source.stop();
        notify();
      })();
      return stopped;
    },
    stats: () => ({ ...totals }),
  };
}
