// The profile of bench:kernel-ab --ablate edits the device program's text: this test fails when
// bpf/packet.bpf.c changes under an edit, at npm test rather than at the next profile.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ablate, ablation, ABLATIONS } from '../../bench/live/ablations.js';

const source = join(__dirname, '../../bpf/packet.bpf.c');
const dir = mkdtempSync(join(tmpdir(), 'hoptrace-ablations-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('device program ablations', () => {
  it.each(ABLATIONS.map((a) => [a.part, a] as const))('%s still applies to packet.bpf.c and changes it', (part, a) => {
    const file = join(dir, `${part}.bpf.c`);
    copyFileSync(source, file);
    ablate(file, a);
    const edited = readFileSync(file, 'utf8');
    expect(edited).not.toBe(readFileSync(source, 'utf8'));
    for (const [, to] of a.edits) expect(edited).toContain(to);
  });

  it('refuses an edit whose text has left the program', () => {
    const file = join(dir, 'changed.bpf.c');
    copyFileSync(source, file);
    const clock = ablation('clock');
    ablate(file, clock); // the clock read is gone now
    expect(() => ablate(file, clock)).toThrow(/is no longer in .*update bench\/live\/ablations.ts/);
  });

  it('names the parts when asked for one that does not exist', () => {
    expect(() => ablation('nope')).toThrow(/no part "nope" \(all, everything, /);
  });
});
