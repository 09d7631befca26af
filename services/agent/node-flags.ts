/**
 * Node flags every agent process runs with (bin/hoptrace adds the same for `agent`;
 * a unit test holds them equal).
 *
 * - A 4 MiB young-generation semi-space instead of V8's 16 MiB: the agent's per-event
 *   path allocates little, and the larger young space only raised its peak RSS (~20-35
 *   MiB less at full rate, per-core rate unchanged within noise: npm run bench:live).
 * - The old generation may grow to 3x its live size before a major GC, instead of V8's
 *   own choice: V8 judged the agent's small heap (~22 MiB live) cheap to mark and kept
 *   it within ~2 MiB of its limit, so at full capture it ran a major GC every ~0.6 s
 *   (~45 in 28 s, a quarter of the agent's CPU samples in marking and sweeping threads,
 *   CPU taken from the traffic on a busy node). With 200 it ran 5-7 in the same run, and
 *   peak RSS did not move (~225 MiB in both). The agent's nodejs_gc_duration_seconds
 *   counts them; npm run bench:live -- --sections lab shows major GCs per second.
 * - No memory reducer: V8 runs it once an isolate's allocation rate drops, to shrink the heap
 *   with full GCs, so a quiet agent (every flow sampled out over the lab, a few hundred records a
 *   second) ran a major GC every ~5 s, marking on helper threads: ~16 ms of CPU a second and ~28
 *   context switches, against ~7 ms and ~12 without it (perf stat --per-thread, 10 s). A busy agent
 *   allocates too fast for it to run. The heap then keeps the size a burst grew it to instead of
 *   shrinking back; the RSS peak, which the burst sets, does not move.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=200', '--no-memory-reducer'];
