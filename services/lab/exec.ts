/**
 * Running the lab's external tools. Every command is an argv array given to spawn
 * (never a shell string), so names and addresses cannot inject anything.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { LabError } from './errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface RunOptions {
  /** Written to the command's stdin. */
  input?: string;
  /** Resolve with the exit code instead of throwing when it is not 0. */
  allowFail?: boolean;
  /** Kill the command after this long, ms. */
  timeoutMs?: number;
}

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => reject(new LabError('HOP_LAB_COMMAND', `cannot run ${cmd}`, { cause: err })));
    child.on('close', (code, signal) => {
      const rc = code ?? 128;
      if (rc !== 0 && !opts.allowFail) {
        const why = signal ? `killed by ${signal}` : `exited ${rc}`;
        reject(new LabError('HOP_LAB_COMMAND', `${[cmd, ...args].join(' ')} ${why}: ${stderr.trim() || stdout.trim()}`));
      } else resolve({ stdout, stderr, code: rc });
    });
    child.stdin.on('error', () => undefined); // a command that exits early closes its stdin
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs a command inside a network namespace (`ip netns exec`). */
export function nsRun(netns: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], opts);
}

/**
 * Starts a long-running process inside a namespace, detached from this process (it
 * outlives a CLI invocation), output appended to `logFile`. `ip netns exec` execs the
 * command, so the returned pid is the workload's own.
 */
export function spawnInNs(netns: string, cmd: string, args: readonly string[], logFile: string): number {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], { detached: true, stdio: ['ignore', fd, fd] });
    // A failure to start shows up as the workload never becoming ready, which the caller checks.
    child.on('error', () => undefined);
    if (child.pid === undefined) throw new LabError('HOP_LAB_COMMAND', `cannot start ${cmd} in ${netns}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export { sleep } from '../shared/retry.js';
