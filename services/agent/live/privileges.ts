/**
 * Can this process load and attach tracing programs? Checked before anything
 * is loaded so that the agent says which permission is missing instead of
 * failing deep inside libbpf with EPERM.
 */
import { readFileSync } from 'node:fs';
import { bindings, lastErrno, BPF_MAP_TYPE_ARRAY } from './libbpf.js';
import { LiveError } from './errors.js';

export const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;

/** Effective capability set of this process (/proc/self/status CapEff). */
export function effectiveCaps(): bigint {
  const m = readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\s*([0-9a-f]+)$/m);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

function has(caps: bigint, cap: number): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n;
}

/**
 * Tracing programs need CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN, which implies
 * both on older kernels). Throws HOP_LIVE_NOT_ROOT or HOP_LIVE_MISSING_CAPABILITY.
 */
export function checkCapabilities(caps = effectiveCaps(), euid = process.geteuid?.() ?? 0): void {
  const ok = has(caps, CAP.SYS_ADMIN) || (has(caps, CAP.BPF) && has(caps, CAP.PERFMON));
  if (ok) return;
  const missing = ['CAP_BPF', 'CAP_PERFMON'].filter((_, i) => !has(caps, i === 0 ? CAP.BPF : CAP.PERFMON));
  if (euid !== 0) {
    throw new LiveError(
      'HOP_LIVE_NOT_ROOT',
      `live capture needs root, or ${missing.join(' and ')} (e.g. setcap cap_bpf,cap_perfmon+ep on node); recordings still work`,
    );
  }
  throw new LiveError(
    'HOP_LIVE_MISSING_CAPABILITY',
    `running as root but without ${missing.join(' and ')} (restricted container?): live capture cannot load programs; recordings still work`,
  );
}

/** Creates and closes a one-entry array map: proves bpf() is allowed at all. */
export function probeBpfSyscall(): void {
  const { bpf, libc } = bindings();
  const fd = bpf.bpf_map_create(BPF_MAP_TYPE_ARRAY, 'hop_probe', 4, 4, 1, null);
  if (fd < 0) {
    const e = -fd || lastErrno();
    throw new LiveError(
      'HOP_LIVE_BPF_DENIED',
      `the bpf() system call was refused (errno ${e}${e === 1 ? ', EPERM: seccomp, an LSM or kernel.unprivileged_bpf_disabled' : ''})`,
    );
  }
  libc.close(fd);
}
