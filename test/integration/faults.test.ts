// Faults on the real services: a correlator killed with SIGKILL mid-stream, ClickHouse
// unreachable at start and mid-run, Kafka unreachable at start and paused mid-run.
// Each must end with every event stored exactly once.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { generateRecording } from '../../services/agent/generate.js';
import { startCorrelator } from '../../services/correlator/main.js';
import { loadConfig, type Config } from '../../services/shared/config.js';
import { createKafka, ensureTopic } from '../../services/shared/kafka.js';
import { countEvents, dropDatabase, isolatedConfig, replayFiles, waitFor } from './env.js';

const root = join(__dirname, '../..');
const cli = join(root, 'dist/services/cli/main.js');

function envOf(cfg: Config): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HOPTRACE_HOPS_TOPIC: cfg.hopsTopic,
    HOPTRACE_CLICKHOUSE_DB: cfg.clickhouseDatabase,
    HOPTRACE_GROUP_ID: cfg.groupId,
    HOPTRACE_CLICKHOUSE_URL: cfg.clickhouseUrl,
    HOPTRACE_KAFKA_BROKERS: cfg.kafkaBrokers.join(','),
    HOPTRACE_INSERT_ROWS: String(cfg.insertRows),
    HOPTRACE_RETRY_MAX_MS: String(cfg.retryMaxMs),
  };
}

function spawnCorrelator(cfg: Config): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, [cli, 'correlator'], { env: envOf(cfg), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return Object.assign(child, { output: () => out });
}

/** A TCP forwarder to ClickHouse that a test can cut and restore. */
async function cuttableProxy(target: URL): Promise<{ url: string; cut(): void; restore(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((c) => {
        const up = connect(Number(target.port), target.hostname);
        sockets.add(c).add(up);
        c.pipe(up).pipe(c);
        const end = () => (c.destroy(), up.destroy());
        c.on('error', end).on('close', end);
        up.on('error', end).on('close', end);
      });
      server.listen(port, '127.0.0.1', () => {
        port = (server!.address() as { port: number }).port;
        resolve();
      });
    });
  await listen();
  const cut = () => {
    server?.close();
    server = undefined;
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  return { url: `http://127.0.0.1:${port}`, cut, restore: listen, close: async () => cut() };
}

function capturingLog() {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  return { log, text: () => lines.join('') };
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

describe('faults', () => {
  it('SIGKILL of the correlator mid-stream, then restart: nothing lost, nothing duplicated', async () => {
    const cfg = isolatedConfig({ insertRows: 5_000 });
    cleanups.push(() => dropDatabase(cfg));
    const gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopkill-')), events: 200_000, seed: 21 });
    const first = spawnCorrelator(cfg);
    cleanups.push(async () => first.kill('SIGKILL'));
    // Paced (3 x 10,000 events/s, ~7 s in all): unpaced, a quiet machine stored all
    // 200,000 before the kill below (CI on a clean clone), and nothing was tested.
    const agents = await replayFiles(cfg, gen.files, undefined, 10_000);
    // Kill once part of the stream is stored, not all of it.
    const partial = await waitFor(async () => {
      const c = await countEvents(cfg);
      return c.distinct > 20_000 ? c : undefined;
    }, 90_000);
    expect(partial, first.output()).toBeDefined();
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    const atKill = await countEvents(cfg);
    expect(atKill.distinct).toBeLessThan(200_000);
    await Promise.all(agents.map((a) => a.done));
    const second = spawnCorrelator(cfg);
    cleanups.push(async () => second.kill('SIGTERM'));
    const done = await waitFor(async () => {
      const c = await countEvents(cfg);
      return c.distinct === 200_000 ? c : undefined;
    }, 120_000);
    expect(done, second.output()).toEqual({ rows: 200_000, distinct: 200_000 });
  });

  it('ClickHouse unreachable at start and mid-run: clear error naming it, retries, no loss', async () => {
    const base = isolatedConfig();
    const proxy = await cuttableProxy(new URL(base.clickhouseUrl));
    cleanups.push(() => proxy.close());
    const cfg = loadConfig({ ...base, clickhouseUrl: proxy.url, retryMaxMs: 500, insertRows: 2_000 });
    cleanups.push(() => dropDatabase(base));
    proxy.cut();
    const child = spawnCorrelator(cfg);
    cleanups.push(async () => child.kill('SIGKILL'));
    const sawError = await waitFor(async () => /ClickHouse at http:\/\/127\.0\.0\.1:\d+.*retrying/.test(child.output()), 20_000);
    expect(sawError, child.output()).toBe(true);
    await proxy.restore();
    const gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopch-')), events: 60_000, seed: 5 });
    // Paced (3 x 4,000 events/s, ~5 s in all): unpaced, all 60,000 were stored once before the
    // cut below, which then found no insert to fail.
    const agents = await replayFiles(base, gen.files, undefined, 4_000);
    await waitFor(async () => (await countEvents(base)).distinct > 5_000 || undefined, 60_000);
    proxy.cut();
    const sawInsertError = await waitFor(async () => /insert into ClickHouse at .* failed/.test(child.output()), 30_000);
    expect(sawInsertError, child.output()).toBe(true);
    await proxy.restore();
    await Promise.all(agents.map((a) => a.done));
    const done = await waitFor(async () => {
      const c = await countEvents(base);
      return c.distinct === 60_000 ? c : undefined;
    }, 90_000);
    expect(done, child.output()).toEqual({ rows: 60_000, distinct: 60_000 });
  });

  it('Kafka unreachable at start: the agent names Kafka and the address, and retries', async () => {
    const cfg = isolatedConfig({ kafkaBrokers: ['127.0.0.1:9'], retryMaxMs: 200 });
    const { log, text } = capturingLog();
    const abort = new AbortController();
    const pending = ensureTopic(cfg, createKafka(cfg, 'test', log), log, abort.signal);
    const said = await waitFor(async () => (text().match(/Kafka at 127\.0\.0\.1:9 unreachable.*retrying/g)?.length ?? 0) >= 2, 20_000);
    abort.abort();
    await pending.catch(() => undefined);
    expect(said, text()).toBe(true);
  });

  it('Kafka paused mid-run: agents and correlator retry, nothing lost', async () => {
    const pid = Number(readFileSync(join(root, 'var/run/kafka.pid'), 'utf8').trim());
    const cfg = isolatedConfig({ retryMaxMs: 1_000 });
    cleanups.push(() => dropDatabase(cfg));
    const correlator = await startCorrelator(cfg);
    cleanups.push(() => correlator.close());
    const gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopkafka-')), events: 100_000, seed: 8 });
    const agents = await replayFiles(cfg, gen.files);
    await waitFor(async () => (await countEvents(cfg)).distinct > 5_000 || undefined, 60_000);
    process.kill(pid, 'SIGSTOP');
    cleanups.push(async () => process.kill(pid, 'SIGCONT'));
    await new Promise((r) => setTimeout(r, 8_000));
    process.kill(pid, 'SIGCONT');
    await Promise.all(agents.map((a) => a.done));
    const done = await waitFor(async () => {
      const c = await countEvents(cfg);
      return c.distinct === 100_000 ? c : undefined;
    }, 120_000);
    expect(done).toEqual({ rows: 100_000, distinct: 100_000 });
  });
});
