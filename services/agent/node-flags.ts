/**
 * Node flags every agent process runs with (bin/hoptrace adds the same for `agent`;
 * a unit test holds them equal). A 4 MiB young-generation semi-space instead of V8's
 * 16 MiB: the agent's per-event path allocates little, and the larger young space
 * only raised its peak RSS (~20-35 MiB less at full rate, per-core rate unchanged
 * within noise: npm run bench:live).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
