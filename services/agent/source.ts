/**
 * Where an agent's records come from: a recording on disk, or the live kernel
 * (services/agent/live). Both hand the agent chunks of packed records in the
 * kernel ABI (bpf/events.h), so the rest of the agent cannot tell them apart.
 */

/** A run of records captured by one agent boot. */
export interface RecordChunk {
  /**
   * `count` records of RECORD_SIZE bytes, packed, each already validated by
   * checkRecord. Once yielded, the buffer is the consumer's (it compacts records
   * in place) until it pulls the next chunk.
   */
  buf: Buffer;
  count: number;
  /** EventId.seq of the first record; the others follow without gaps unless `seqs` is set. */
  firstSeq: number;
  /** Per-record seq when records were skipped inside the chunk (corrupt records in a recording). */
  seqs?: number[];
  /** Wall clock minus kernel CLOCK_MONOTONIC on the capturing node, ns, when sampled. */
  clockOffsetNs: bigint;
  /** netns inode -> name, for namespaces the source knows by name. */
  netnsNames?: ReadonlyMap<number, string>;
  /**
   * Wall-clock ms after which its records reached the source (a live source: its
   * previous drain of the ring). A batch's linger runs from here, so the time records
   * wait in the ring counts against it. Absent: when the consumer got the chunk.
   */
  since?: number;
}

/** Names the capturing kernel gives to numbers in records; absent for recordings. */
export interface KernelNames {
  dropReason(n: number): string | undefined;
  resetReason(n: number): string | undefined;
  /** Kernel function containing a text address. */
  symbol(addr: bigint): string | undefined;
}

export interface RecordSource {
  /** Names for drop/reset reasons and kernel addresses, when the source knows its kernel. */
  readonly names?: KernelNames;
  /** Node the records were captured on. */
  readonly node: string;
  /** Identity of the capturing boot (random per live start; fixed per recording). Below 2^53. */
  readonly boot: number;
  /**
   * Yields chunks until the source ends (a recording) or stop() is called (live).
   * The consumer applies backpressure by not pulling: a recording waits, a live
   * source keeps draining and counts what it must drop.
   */
  chunks(): AsyncIterable<RecordChunk>;
  /** Ends chunks() after what is already drained has been yielded; releases kernel objects. */
  stop(): Promise<void>;
  /** Counters by name (records read, dropped by reason, ...), for logs and /metrics. */
  stats(): Record<string, number>;
  /**
   * Records read but rejected as malformed, by reason: the subset of stats() the agent
   * counts as dropped after every chunk, so it must not cost a kernel call.
   */
  rejected(): Readonly<Record<string, number>>;
}

/** rejected() tallies as stats() reports them: corrupt_<reason>. */
export const rejectedStats = (rejected: Readonly<Record<string, number>>): Record<string, number> =>
  Object.fromEntries(Object.entries(rejected).map(([k, v]) => [`corrupt_${k}`, v]));
