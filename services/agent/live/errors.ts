/**
 * Typed errors of live capture. `code` is stable (logs, alerts and tests match
 * on it); `retriable` says whether trying again unchanged can succeed.
 */

export type LiveErrorCode =
  /** A live option is malformed; the message names the field. */
  | 'HOP_LIVE_BAD_OPTION'
  /** Not running as root and lacking the capabilities that would stand in for it. */
  | 'HOP_LIVE_NOT_ROOT'
  /** Root, but without CAP_BPF / CAP_PERFMON (e.g. a restricted container). */
  | 'HOP_LIVE_MISSING_CAPABILITY'
  /** bpf() itself was refused (seccomp, LSM, sysctl). */
  | 'HOP_LIVE_BPF_DENIED'
  /** No kernel BTF at /sys/kernel/btf/vmlinux: CO-RE programs cannot load. */
  | 'HOP_LIVE_NO_BTF'
  /** libbpf.so.1 or libc could not be loaded. */
  | 'HOP_LIVE_NO_LIBBPF'
  /** bpf/.output/*.bpf.o missing: the BPF objects were not built. */
  | 'HOP_LIVE_NO_OBJECTS'
  /** A tracepoint a program needs is absent on this kernel. */
  | 'HOP_LIVE_TRACEPOINT_ABSENT'
  /** The verifier or libbpf refused an object. */
  | 'HOP_LIVE_LOAD_FAILED'
  /** A program loaded but could not be attached. */
  | 'HOP_LIVE_ATTACH_FAILED'
  /** Every program failed: nothing would be captured. */
  | 'HOP_LIVE_NOTHING_ATTACHED'
  /** An owned namespace name or path does not exist. */
  | 'HOP_LIVE_NETNS_NOT_FOUND'
  /** A kernel map operation failed at run time. */
  | 'HOP_LIVE_MAP_FAILED';

export class LiveError extends Error {
  override readonly name = 'LiveError';
  constructor(
    readonly code: LiveErrorCode,
    message: string,
    readonly retriable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A program that is not capturing, and what that costs. Not fatal. */
export interface ProgramProblem {
  program: string;
  code: LiveErrorCode;
  message: string;
  /** What the agent will not see because of it. */
  lost: string;
}
