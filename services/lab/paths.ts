/** Where the lab keeps its files: `<repo>/var/lab` (state, logs) and the workload scripts. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest ancestor with package.json (works from services/ and from dist/). */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hoptrace lab: cannot find the repository root (package.json)');
    dir = up;
  }
}

export const repoRoot = findRoot();
export const labDir = join(repoRoot, 'var', 'lab');
export const statePath = join(labDir, 'state.json');
export const logDir = join(labDir, 'logs');
/** Workloads run from the sources (plain JS and Python), so the lab works without a build. */
export const workloadDir = join(repoRoot, 'services', 'lab', 'workload');

/**
 * The Python for the raw-socket workloads (standard library only). The system one first:
 * a version manager's shim on PATH may not run under `ip netns exec` as root.
 */
export function python(): string {
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}
