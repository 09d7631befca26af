/**
 * Preflight of the privileged suite: can this machine run eBPF programs in
 * network namespaces? Every missing feature is named. A suite wrapped in
 * describePrivileged() FAILS when something is missing, unless the run sets
 * HOPTRACE_ALLOW_SKIP_PRIVILEGED=1: then it skips, and prints why. It never
 * skips silently.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'vitest';
import { processEnv } from '../../services/shared/config.js';
import { checkCapabilities, probeBpfSyscall } from '../../services/agent/live/privileges.js';
import { openKernelBtf, VMLINUX_BTF } from '../../services/agent/live/btf.js';
import { OBJECTS } from '../../services/agent/live/kernel-abi.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OBJ_DIR = join(REPO, 'bpf', '.output');

/** Tracepoints the programs attach to (tp_btf/<name>). */
export const TRACEPOINTS = [
  'netif_receive_skb',
  'net_dev_queue',
  'kfree_skb',
  'tcp_send_reset',
  'tcp_receive_reset',
  'tcp_retransmit_skb',
  'inet_sock_set_state',
] as const;

const TOOLS = ['ip', 'iptables', 'conntrack', 'bpftool', 'tc'] as const;

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

function why(err: unknown): string {
  const e = err as { stderr?: Buffer; message?: string };
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
}

/** Builds the BPF objects when they are missing or older than their sources. */
function ensureObjects(): string | null {
  const stale = OBJECTS.some((o) => {
    const obj = join(OBJ_DIR, `${o}.bpf.o`);
    const src = join(REPO, 'bpf', `${o}.bpf.c`);
    return !existsSync(obj) || statSync(obj).mtimeMs < statSync(src).mtimeMs;
  });
  if (!stale) return null;
  try {
    run('make', ['-s', '-C', join(REPO, 'bpf')]);
    return null;
  } catch (err) {
    return `BPF objects (make -C bpf: needs clang, bpftool, libbpf-dev): ${why(err)}`;
  }
}

let cached: string[] | null = null;

/** Names of the missing features; empty when the suite can run. */
export function preflight(): string[] {
  if (cached) return cached;
  const missing: string[] = [];
  for (const t of TOOLS) {
    try {
      run('sh', ['-c', `command -v ${t}`]);
    } catch {
      missing.push(`tool ${t} (not on PATH)`);
    }
  }
  try {
    checkCapabilities();
  } catch (err) {
    missing.push(`privileges: ${(err as Error).message}`);
  }
  if (!existsSync(VMLINUX_BTF)) missing.push(`kernel BTF (${VMLINUX_BTF}; CONFIG_DEBUG_INFO_BTF)`);
  try {
    probeBpfSyscall();
  } catch (err) {
    missing.push(`bpf() system call: ${(err as Error).message}`);
  }
  if (existsSync(VMLINUX_BTF)) {
    try {
      const btf = openKernelBtf();
      for (const t of TRACEPOINTS) if (!btf.hasTracepoint(t)) missing.push(`tracepoint ${t} (no btf_trace_${t} in kernel BTF)`);
      btf.close();
    } catch (err) {
      missing.push(`kernel BTF readable by libbpf: ${(err as Error).message}`);
    }
  }
  const probe = `hopt-pre-${randomBytes(3).toString('hex')}`;
  try {
    run('ip', ['netns', 'add', probe]);
    run('ip', ['netns', 'del', probe]);
  } catch (err) {
    missing.push(`network namespace creation (ip netns add): ${why(err)}`);
  }
  const build = ensureObjects();
  if (build) missing.push(build);
  cached = missing;
  return missing;
}

/**
 * describe() gated on what a preflight found missing: runs when nothing is; otherwise
 * fails loudly naming each gap, or skips (saying why, in the log and the suite's name)
 * only with the explicit permission HOPTRACE_ALLOW_SKIP_PRIVILEGED=1.
 */
export function describeGated(name: string, fn: () => void, missing: readonly string[]): void {
  if (!missing.length) {
    describe(name, fn);
    return;
  }
  const msg = `privileged suite "${name}" cannot run on this machine; missing:\n  - ${missing.join('\n  - ')}`;
  // The explicit permission to skip, read by the config module.
  if (processEnv.allowSkipPrivileged) {
    console.warn(`${msg}\nSKIPPED because HOPTRACE_ALLOW_SKIP_PRIVILEGED=1`);
    describe.skip(`${name} [skipped: missing ${missing.join('; ')}]`, fn);
    return;
  }
  describe(name, () => {
    it('preflight', () => {
      throw new Error(`${msg}\n(set HOPTRACE_ALLOW_SKIP_PRIVILEGED=1 to skip instead of failing)`);
    });
  });
}

/** describe() for suites that need root, eBPF and namespaces (see describeGated). */
export const describePrivileged = (name: string, fn: () => void): void => describeGated(name, fn, preflight());
