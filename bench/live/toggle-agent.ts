/**
 * The agent process of bench/lab-toggle.ts: a live agent with the source, batching and
 * Kafka sink of `hoptrace agent --live`, whose owned namespaces the bench switches while
 * the traffic runs. Started with the agent's node flags, in a session of its own, as the
 * lab starts agents. Commands are JSON lines on stdin, each answered by one on stdout:
 *
 *   {"own": ["ns", ...]}   own these namespaces now (tcx links follow at once)
 *   {}                     nothing; answers with the counters
 *   {"stop": true}         flush and exit
 *
 * Answers: {"ready": true} once producing, then {"stats": {...}}: running totals of
 * AgentStats, the live source's counters, and its programs' runs and run time
 * (programRuns, programRunNs; the time only while kernel.bpf_stats_enabled is on).
 *
 * Run by the bench: node <AGENT_NODE_FLAGS> dist/bench/live/toggle-agent.js NS[,NS...] [SAMPLE_N]
 * (1 connection in SAMPLE_N kept, default 1: every one).
 */
import { createInterface } from 'node:readline';
import { liveRecordSource, startAgent } from '../../services/agent/main.js';
import { createLiveSource, loadKernelSymbols, parseLiveOptions } from '../../services/agent/live/index.js';
import { loadConfig } from '../../services/shared/config.js';
import { createLogger } from '../../services/shared/log.js';

const own = (process.argv[2] ?? '').split(',').filter(Boolean);
const sampleN = Number(process.argv[3] ?? 1);
if (!own.length) throw new Error('usage: toggle-agent.js NS[,NS...] [SAMPLE_N]');
const log = createLogger('agent', 'warn');
loadKernelSymbols();
const live = createLiveSource(parseLiveOptions({ netns: own, node: 'bench-toggle', sampleN }));
const running = await startAgent(loadConfig(), liveRecordSource(live), log, { metrics: false });
const answer = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
answer({ ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { own?: string[]; stop?: boolean };
  if (cmd.stop) break;
  if (cmd.own) live.setFilters({ netns: cmd.own, sampleN });
  const programs = live.programStats().reduce((t, p) => ({ runs: t.runs + p.runs, runNs: t.runNs + p.runNs }), { runs: 0, runNs: 0 });
  answer({ stats: { ...running.agent.stats(), ...live.stats(), programRuns: programs.runs, programRunNs: programs.runNs } });
}
await running.stop();
