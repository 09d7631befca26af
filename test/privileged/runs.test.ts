/**
 * Runs on the real kernel (bpf/emit.bpf.h): each CPU gathers its records and writes
 * them to the ring buffer together. Two live sources capture the same traffic at once,
 * one writing runs and one writing every record on its own, and must report the same
 * records; a run that never fills reaches the agent by its timer, and by stop().
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Kind, type HopRecord } from '../../services/shared/record.js';
import { describePrivileged } from './preflight.js';
import { Lab, TCP_CLIENT, TCP_ECHO_SERVER, waitLine, type Link, type Ns } from './netns.js';
import { packetFields, startCapture, type Capture } from './capture.js';

const UDP_SEND = `
const s = require('dgram').createSocket('udp4');
const [host, port, count] = process.argv.slice(1);
let n = 0;
const next = () => s.send('x', Number(port), host, () => (++n < Number(count) ? setTimeout(next, 10) : s.close()));
next();
`;

describePrivileged('records reach the ring buffer in runs', () => {
  const lab = new Lab();
  let cli: Ns;
  let srv: Ns;
  let link: Link;
  let runs: Capture;
  let single: Capture;

  beforeAll(() => {
    cli = lab.ns('cli');
    srv = lab.ns('srv');
    link = lab.link(cli, srv);
    runs = startCapture({ netns: [cli.name, srv.name], node: 'runs', runRecords: 31, runFlushMs: 10 });
    single = startCapture({ netns: [cli.name, srv.name], node: 'single', runRecords: 1 });
  });

  afterAll(async () => {
    await runs?.stop();
    await single?.stop();
    lab.cleanup();
  });

  /** Echoes `msgs` over one connection each; returns the client ports. */
  async function echo(port: number, msgs: string[]): Promise<number[]> {
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, '0.0.0.0', String(port)]);
    await waitLine(server, /listening/);
    try {
      return msgs.map((m) => {
        const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, String(port), m]).trim()) as { local: number; got: string };
        expect(res.got).toBe(m);
        return res.local;
      });
    } finally {
      server.kill();
    }
  }

  const of = (ports: number[]) => (r: HopRecord) => r.kind === Kind.PACKET && (ports.includes(r.tuple.sport) || ports.includes(r.tuple.dport));
  const fields = (c: Capture, ports: number[]) => c.records.filter(of(ports)).map(packetFields).sort();

  it('reports the same records as a capture writing each on its own, the last of them by the run timer', async () => {
    // The client has exchanged its last packet when it exits. ~20 records: no run fills, so
    // with no stop and no further traffic they reach the agent only through the flush timers.
    const ports = await echo(18290, ['a run that never fills']);
    await single.settle(100); // flush period + drain period, with margin
    expect(fields(single, ports).length).toBeGreaterThanOrEqual(16);
    expect(fields(runs, ports)).toEqual(fields(single, ports));
  });

  it('writes many records per ring record under load, and each on its own with runs of 1', async () => {
    const before = { runs: runs.source.stats(), single: single.source.stats() };
    const ports = await echo(18291, Array.from({ length: 12 }, (_, i) => `${i}`.repeat(20_000)));
    await runs.settle(200);
    const delta = (c: Capture, was: Record<string, number>) => {
      const now = c.source.stats();
      return { records: now.records! - was.records!, runs: now.runs! - was.runs! };
    };
    const r = delta(runs, before.runs);
    const s = delta(single, before.single);
    expect(s.records).toBeGreaterThanOrEqual(12 * 16);
    expect(s.runs).toBe(s.records);
    expect(r.runs * 3).toBeLessThanOrEqual(r.records);
    // The same records of the test's connections. Not the totals: a record of the links' own
    // traffic written just before `before` can still be in the runs capture's open kernel run
    // (up to 10 ms) when its count is read, so it counts in that capture's delta and not in the
    // other's (once 588 against 582).
    expect(fields(single, ports).length).toBeGreaterThanOrEqual(12 * 16);
    expect(fields(runs, ports)).toEqual(fields(single, ports));
    expect(runs.source.kernelCounters().ringbuf_full).toBe(0);
  });

  it('hands over a run still open when stopped', async () => {
    // a flush period far longer than the test (from a run's first record, which may be
    // an IPv6 neighbour discovery packet of the links' start): only stop() brings the run out
    const slow = startCapture({ netns: [cli.name, srv.name], node: 'slow', runRecords: 31, runFlushMs: 5000 });
    try {
      // 3 datagrams (and the port-unreachable answers): far fewer records than a run holds
      cli.run('node', ['-e', UDP_SEND, link.addrB, '18293', '3']);
      await single.settle(100);
      const datagrams = (c: Capture) => c.records.filter((r) => r.kind === Kind.PACKET && r.tuple.dport === 18293).map(packetFields).sort();
      expect(datagrams(single)).toHaveLength(6); // cli egress, srv ingress
      expect(slow.records).toHaveLength(0);
      await slow.stop();
      expect(datagrams(slow)).toEqual(datagrams(single));
    } finally {
      await slow.stop();
    }
  });
});
