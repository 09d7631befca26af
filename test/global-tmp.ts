/**
 * vitest globalSetup: every test file's temporary files (generated recordings of up to
 * ~120 MB, ABI probes...) go under one directory per run, removed when the run ends.
 * os.tmpdir() reads TMPDIR, which the test workers and the processes they spawn inherit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'hoptrace-test-'));
  const before = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return () => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    rmSync(dir, { recursive: true, force: true });
  };
}
