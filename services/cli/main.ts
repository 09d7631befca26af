/**
 * The `hoptrace` command: start each service, replay and generate recordings, and
 * query flows and timelines from the terminal. Options come from the environment
 * (see `hoptrace options`); flags here are per command.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { runLiveAgent, runRecordingAgent } from '../agent/main.js';
import { generateRecording } from '../agent/generate.js';
import { startApi } from '../api/server.js';
import { runCorrelator } from '../correlator/main.js';
import { loadConfig, optionsTable, type Config } from '../shared/config.js';
import { describeError, HopError } from '../shared/errors.js';
import { createKafka, lagReader, waitForNoLag } from '../shared/kafka.js';
import { createLogger } from '../shared/log.js';
import { registerLabCommands } from '../lab/cli.js';
import { registerForensicsCommands } from './forensics.js';
import { registerPathCommands } from './path.js';
import { registerReportCommand } from './report.js';
import { registerQueryCommands } from './query.js';
import { replay } from './replay.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

function intArg(min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in [${min}, ${max}]`);
    return n;
  };
}

/** A power of two in [min, max]. */
function powerOfTwoArg(min: number, max: number) {
  const within = intArg(min, max);
  return (v: string) => {
    const n = within(v);
    if ((n & (n - 1)) !== 0) throw new InvalidArgumentError(`expected a power of two in [${min}, ${max}]`);
    return n;
  };
}

let cfg: Config | undefined;
const config = () => (cfg ??= loadConfig());

const program = new Command('hoptrace').description('Follow TCP flows across a cluster at the level of individual kernel packets.').showHelpAfterError();

program
  .command('agent')
  .description('run an agent: live capture from this kernel (--live), or replay of one node recording')
  .option('--live', 'capture from the running kernel with eBPF (root)')
  .option('--recording <file>', 'replay this recording file (.hoprec) instead')
  .option('--rate <events/s>', 'replay rate, 0 = as fast as possible', intArg(0, 100_000_000), 0)
  .option('--retime', 'replay: stamp each record with the time it is replayed, not the recorded time (latency benchmark)')
  .option('--node <name>', 'live: node name of the records (default: host name)')
  .option('--netns <list>', 'live: owned namespaces: names under /var/run/netns, paths or inodes, comma-separated; "all"')
  .option('--interfaces <list>', 'live: device names to capture at device hooks; "all"')
  .option('--addrs <list>', 'live: addresses or CIDRs to keep; "all"')
  .option('--ports <list>', 'live: ports to keep; "all"')
  .option('--protocols <list>', 'live: tcp, udp, icmp... to keep; "all"')
  .option('--sample <n>', 'live: keep packets of 1 flow in N', intArg(1, 1 << 20))
  .option('--device-hooks <how>', 'live: auto | tc | tracepoint (tc: tcx links on the owned namespaces\' devices; auto: tc when --netns names them)')
  .option('--run-records <n>', 'live: records each CPU gathers in the kernel before writing them to the ring together (1-31; 1 = one by one)', intArg(1, 31))
  .option('--run-flush-ms <ms>', 'live: longest a run\'s first record waits in the kernel for the rest', intArg(1, 10_000))
  .option('--queue-idle-ms <ms>', 'live: unlink net_dev_start_xmit (queue time) this long after the last packet that left an owned device through a queueing qdisc (default 10000; 0: always linked)', intArg(0, 3_600_000))
  .option('--ring-mib <n>', 'live: kernel ring buffer size in MiB, a power of two (default 16); the agent maps it, so its pages count in the agent\'s RSS', powerOfTwoArg(1, 1024))
  .option('--clock-skew-ms <ms>', "pretend this node's wall clock is off by this much (lab knob)", Number, 0)
  .action(async (o: { live?: boolean; recording?: string; rate: number; retime?: boolean; node?: string; netns?: string; interfaces?: string; addrs?: string; ports?: string; protocols?: string; sample?: number; deviceHooks?: string; runRecords?: number; runFlushMs?: number; queueIdleMs?: number; ringMib?: number; clockSkewMs: number }) => {
    if (!o.live === !o.recording) throw new HopError('HOP_CONFIG_INVALID', 'give exactly one of --live or --recording FILE');
    if (!Number.isFinite(o.clockSkewMs)) throw new HopError('HOP_CONFIG_INVALID', '--clock-skew-ms must be a number');
    if (o.recording) return runRecordingAgent(config(), o.recording, o.rate, o.retime === true);
    return runLiveAgent(config(), { node: o.node, netns: o.netns, interfaces: o.interfaces, addrs: o.addrs, ports: o.ports, protocols: o.protocols, sampleN: o.sample, deviceHooks: o.deviceHooks, runRecords: o.runRecords, runFlushMs: o.runFlushMs, queueIdleMs: o.queueIdleMs, ringBytes: o.ringMib === undefined ? undefined : o.ringMib * 2 ** 20 }, o.clockSkewMs);
  });

program
  .command('correlator')
  .description('run a correlator (Kafka consumer group member writing to ClickHouse)')
  .action(async () => runCorrelator(config()));

program
  .command('api')
  .description('run the query API')
  .action(async () => {
    await startApi(config());
  });

program
  .command('replay')
  .description('replay recordings (one agent per file, i.e. per node) into Kafka, with progress')
  .argument('<files...>', 'recording files')
  .option('--rate <events/s>', 'per-file replay rate, 0 = as fast as possible', intArg(0, 100_000_000), 0)
  .option('--no-progress', 'no progress bars (log lines instead)')
  .option('--json', 'print the summary as JSON')
  .action(async (files: string[], o: { rate: number; progress: boolean; json?: boolean }) => {
    const summary = await replay(config(), files, { rate: o.rate, progress: o.progress && process.stderr.isTTY === true });
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      return;
    }
    for (const s of summary) {
      process.stdout.write(`${s.node}: ${s.sent}/${s.records} records sent, ${s.dropped} dropped (${s.corrupt.length} corrupt)\n`);
      for (const c of s.corrupt) process.stdout.write(`  corrupt record: ${c.file} offset ${c.offset}: ${c.reason}\n`);
    }
  });

program
  .command('generate')
  .description('write a synthetic multi-node recording (deterministic for a seed)')
  .requiredOption('--out <dir>', 'output directory (one .hoprec per node)')
  .option('--events <n>', 'exact number of events across all nodes', intArg(1, 1_000_000_000), 100_000)
  .option('--seed <n>', 'random seed', intArg(0, 2 ** 31), 1)
  .option('--corrupt <n>', 'records to corrupt in node-b, to exercise error handling', intArg(0, 1_000_000), 0)
  .action(async (o: { out: string; events: number; seed: number; corrupt: number }) => {
    const r = await generateRecording({ outDir: o.out, events: o.events, seed: o.seed, corrupt: o.corrupt });
    process.stdout.write(`${r.events} events in ${r.flows} flows: ${r.files.join(' ')}\n`);
  });

program
  .command('infra')
  .description('start, stop or inspect the local Kafka and ClickHouse (deploy/local/infra.sh)')
  .argument('<action>', 'up | down | status | wait | logs')
  .action((action: string) => {
    const r = spawnSync('bash', [join(root, 'deploy/local/infra.sh'), action], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  });

program
  .command('lag')
  .description("how far the correlator group is behind on the hops topic, in Kafka messages (each up to HOPTRACE_BATCH_RECORDS events)")
  .option('--wait <s>', 'wait up to this many seconds for it to catch up (lag 0); exit 1 if it has not', intArg(0, 86_400))
  .action(async (o: { wait?: number }) => {
    const cfg = config();
    const kafka = createKafka(cfg, 'cli-lag', createLogger('cli', cfg.logLevel));
    const where = `correlator group ${cfg.groupId} on ${cfg.hopsTopic}`;
    let said = 0;
    const lag = lagReader(cfg, kafka);
    const n = await waitForNoLag(lag.read, (o.wait ?? 0) * 1000, (m) => {
      if (Date.now() - said < 5000) return;
      said = Date.now();
      process.stderr.write(`${where}: ${m} message(s) behind, waiting\n`);
    }).finally(lag.close);
    process.stdout.write(`${where}: ${n} message(s) behind\n`);
    if (o.wait !== undefined && n > 0) {
      process.stderr.write(`hoptrace: the correlator has not caught up after ${o.wait} s (is it running? its log says what it is doing)\n`);
      process.exitCode = 1;
    }
  });

program
  .command('options')
  .description('print every option (environment variable), its default and meaning, as a Markdown table')
  .action(() => void process.stdout.write(`${optionsTable()}\n`));

registerQueryCommands(program, config);
registerPathCommands(program, config);
registerForensicsCommands(program, config);
registerReportCommand(program, config);
registerLabCommands(program);

program.parseAsync().catch((err: unknown) => {
  const code = err instanceof HopError ? err.code : 'HOP_ERROR';
  process.stderr.write(`hoptrace: ${code}: ${describeError(err)}\n`);
  process.exit(1);
});
