import { describe, expect, it } from 'vitest';
import { createLiveHealth } from '../../services/agent/live-health.js';

function fake() {
  const state = { stats: { xmit_link_failed: 0, xmit_links: 0 } as Record<string, number>, failed: [] as string[] };
  const lines: { level: 'warn' | 'info'; msg: string }[] = [];
  const log = {
    warn: (_o: unknown, msg?: string) => void lines.push({ level: 'warn', msg: msg ?? String(_o) }),
    info: (_o: unknown, msg?: string) => void lines.push({ level: 'info', msg: msg ?? String(_o) }),
  };
  const check = createLiveHealth({ stats: () => ({ ...state.stats }), status: () => ({ devices: { failed: state.failed } }) }, log as never);
  return { state, lines, check };
}

describe('live health lines', () => {
  it('says once when start_xmit starts failing to link, and when it links again', () => {
    const { state, lines, check } = fake();
    check();
    expect(lines).toEqual([]);
    state.stats.xmit_link_failed = 3;
    check();
    state.stats.xmit_link_failed = 50; // still failing: nothing new to say
    check();
    expect(lines).toEqual([{ level: 'warn', msg: expect.stringMatching(/net_dev_start_xmit cannot be linked.*queue times are missing/) }]);
    state.stats.xmit_links = 1;
    check();
    expect(lines[1]).toEqual({ level: 'info', msg: expect.stringMatching(/linked again/) });
    check();
    expect(lines).toHaveLength(2);
  });

  it('warns again after a failing streak that ended without a link (demand gone)', () => {
    const { state, lines, check } = fake();
    state.stats.xmit_link_failed = 1;
    check();
    check(); // no new failure: the streak is over, silently
    state.stats.xmit_link_failed = 2;
    check();
    expect(lines.map((l) => l.level)).toEqual(['warn', 'warn']);
  });

  it('names devices that could not be linked as the set changes, not every period', () => {
    const { state, lines, check } = fake();
    state.failed = ['ns1/eth0: EPERM'];
    check();
    check();
    expect(lines).toEqual([{ level: 'warn', msg: 'tcx NOT linked on 1 device(s) of owned namespaces, their packets are not captured: ns1/eth0: EPERM' }]);
    state.failed = [];
    check();
    expect(lines[1]).toEqual({ level: 'info', msg: 'tcx linked on every device of the owned namespaces again' });
  });

  it('leaves failures present at the start to the status line', () => {
    const state = { failed: ['ns1/eth0: EPERM'] };
    const lines: string[] = [];
    const check = createLiveHealth({ stats: () => ({}), status: () => ({ devices: { failed: state.failed } }) }, { warn: (_o: unknown, m?: string) => void lines.push(m!), info: () => {} } as never);
    check();
    expect(lines).toEqual([]);
  });
});
