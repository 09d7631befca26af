/**
 * koffi bindings to libbpf.so.1 (Debian libbpf1, API 1.1) and the few libc calls
 * live capture needs (mmap of the ring buffer, clock_gettime).
 *
 * Only setup and control paths cross the FFI: the ring buffer is read through a
 * mapping (ring.ts), so a batch of records costs no FFI call at all.
 *
 * libbpf's messages are routed through a registered print callback into a
 * bounded in-memory log (formatted with libc vsnprintf), so a verifier refusal
 * becomes part of the error, not noise on stderr.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { LiveError } from './errors.js';

export type Ptr = unknown; // an opaque koffi pointer (External), never dereferenced in JS

export interface Libbpf {
  bpf_object__open_file(path: string, opts: null): Ptr | null;
  bpf_object__load(obj: Ptr): number;
  bpf_object__close(obj: Ptr): void;
  bpf_object__next_program(obj: Ptr, prev: Ptr | null): Ptr | null;
  bpf_object__next_map(obj: Ptr, prev: Ptr | null): Ptr | null;
  bpf_object__find_map_by_name(obj: Ptr, name: string): Ptr | null;
  bpf_object__btf(obj: Ptr): Ptr | null;
  bpf_program__name(prog: Ptr): string;
  bpf_program__section_name(prog: Ptr): string;
  bpf_program__set_autoload(prog: Ptr, autoload: boolean): number;
  bpf_program__attach(prog: Ptr): Ptr | null;
  bpf_program__fd(prog: Ptr): number;
  bpf_link__destroy(link: Ptr): number;
  bpf_map__name(map: Ptr): string;
  bpf_map__fd(map: Ptr): number;
  bpf_map__type(map: Ptr): number;
  bpf_map__key_size(map: Ptr): number;
  bpf_map__value_size(map: Ptr): number;
  bpf_map__max_entries(map: Ptr): number;
  bpf_map__set_max_entries(map: Ptr, n: number): number;
  bpf_map__reuse_fd(map: Ptr, fd: number): number;
  bpf_map__initial_value(map: Ptr, size: [number]): Ptr | null;
  bpf_map_create(type: number, name: string | null, keySize: number, valueSize: number, max: number, opts: null): number;
  bpf_map_update_elem(fd: number, key: Uint8Array, value: Uint8Array, flags: bigint): number;
  bpf_map_lookup_elem(fd: number, key: Uint8Array, value: Uint8Array): number;
  bpf_map_delete_elem(fd: number, key: Uint8Array): number;
  bpf_map_get_next_key(fd: number, key: Uint8Array | null, next: Uint8Array): number;
  btf__load_vmlinux_btf(): Ptr | null;
  btf__free(btf: Ptr): void;
  btf__find_by_name_kind(btf: Ptr, name: string, kind: number): number;
  btf__type_by_id(btf: Ptr, id: number): Ptr | null;
  btf__name_by_offset(btf: Ptr, off: number): string | null;
  libbpf_num_possible_cpus(): number;
  /** BPF_LINK_CREATE; here for tcx links, target = ifindex in the calling thread's namespace. */
  bpf_link_create(progFd: number, target: number, attachType: number, opts: null): number;
  /** BPF_PROG_TEST_RUN; `opts` is a struct bpf_test_run_opts (testRunOnCpu builds one). */
  bpf_prog_test_run_opts(progFd: number, opts: Uint8Array): number;
}

export interface Libc {
  mmap(addr: null, len: number, prot: number, flags: number, fd: number, off: number): Ptr | null;
  munmap(addr: Ptr, len: number): number;
  close(fd: number): number;
  clock_gettime(clock: number, ts: Uint8Array): number;
  getpagesize(): number;
  /** Moves the calling thread into the namespace of fd (nstype CLONE_NEWNET). */
  setns(fd: number, nstype: number): number;
  /** struct if_nameindex[] of the calling thread's network namespace, ended by {0, NULL}. */
  if_nameindex(): Ptr | null;
  if_freenameindex(p: Ptr): void;
}

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_FAILED = -1n;
export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;

export const BPF_MAP_TYPE_ARRAY = 2;
/** enum bpf_attach_type (include/uapi/linux/bpf.h, kernel >= 6.6). */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
export const CLONE_NEWNET = 0x40000000;
export const BPF_ANY = 0n;

/** BTF kinds used here (include/uapi/linux/btf.h). */
export const BTF_KIND_STRUCT = 4;
export const BTF_KIND_ENUM = 6;
export const BTF_KIND_TYPEDEF = 8;
export const BTF_KIND_DATASEC = 15;
export const BTF_KIND_ENUM64 = 19;

/** struct bpf_test_run_opts (libbpf 1.1): sz at 0, retval at 56, flags at 68, cpu at 72; 80 bytes. */
const TEST_RUN_OPTS_SIZE = 80;
const BPF_F_TEST_RUN_ON_CPU = 1;

/**
 * Runs a raw_tp program once on `cpu`, without context (the kernel runs it there by
 * IPI, or in place on the calling CPU). Returns its return value, or -errno.
 */
export function testRunOnCpu(progFd: number, cpu: number): number {
  const { bpf } = bindings();
  const opts = Buffer.alloc(TEST_RUN_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(TEST_RUN_OPTS_SIZE), 0);
  opts.writeUInt32LE(BPF_F_TEST_RUN_ON_CPU, 68);
  opts.writeUInt32LE(cpu, 72);
  const err = bpf.bpf_prog_test_run_opts(progFd, opts);
  return err < 0 ? err : opts.readUInt32LE(56);
}

const LOG_LINES = 400;

interface Bindings {
  bpf: Libbpf;
  libc: Libc;
  /** libbpf messages (warnings and info) since the last drainLog(). */
  drainLog(): string[];
}

let cached: Bindings | null = null;

/** Loads libbpf.so.1 and libc once per process. Throws HOP_LIVE_NO_LIBBPF. */
export function bindings(): Bindings {
  if (cached) return cached;
  let lib: LibraryHandle;
  let c: LibraryHandle;
  try {
    lib = koffi.load('libbpf.so.1');
    c = koffi.load('libc.so.6');
  } catch (err) {
    throw new LiveError('HOP_LIVE_NO_LIBBPF', `cannot load libbpf.so.1 (Debian package libbpf1): ${String(err)}`, false, {
      cause: err,
    });
  }
  // Named opaque types, used by name (as 'T *') in the prototypes below.
  for (const name of ['bpf_object', 'bpf_program', 'bpf_map', 'bpf_link', 'btf']) koffi.opaque(name);

  const bpf: Libbpf = {
    bpf_object__open_file: lib.func('bpf_object *bpf_object__open_file(const char *path, void *opts)'),
    bpf_object__load: lib.func('int bpf_object__load(bpf_object *obj)'),
    bpf_object__close: lib.func('void bpf_object__close(bpf_object *obj)'),
    bpf_object__next_program: lib.func('bpf_program *bpf_object__next_program(bpf_object *obj, bpf_program *prev)'),
    bpf_object__next_map: lib.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *prev)'),
    bpf_object__find_map_by_name: lib.func('bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)'),
    bpf_object__btf: lib.func('btf *bpf_object__btf(bpf_object *obj)'),
    bpf_program__name: lib.func('const char *bpf_program__name(bpf_program *prog)'),
    bpf_program__section_name: lib.func('const char *bpf_program__section_name(bpf_program *prog)'),
    bpf_program__set_autoload: lib.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
    bpf_program__attach: lib.func('bpf_link *bpf_program__attach(bpf_program *prog)'),
    bpf_program__fd: lib.func('int bpf_program__fd(bpf_program *prog)'),
    bpf_link__destroy: lib.func('int bpf_link__destroy(bpf_link *link)'),
    bpf_map__name: lib.func('const char *bpf_map__name(bpf_map *map)'),
    bpf_map__fd: lib.func('int bpf_map__fd(bpf_map *map)'),
    bpf_map__type: lib.func('int bpf_map__type(bpf_map *map)'),
    bpf_map__key_size: lib.func('uint32_t bpf_map__key_size(bpf_map *map)'),
    bpf_map__value_size: lib.func('uint32_t bpf_map__value_size(bpf_map *map)'),
    bpf_map__max_entries: lib.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
    bpf_map__set_max_entries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t n)'),
    bpf_map__reuse_fd: lib.func('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
    bpf_map__initial_value: lib.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
    bpf_map_create: lib.func(
      'int bpf_map_create(int type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, void *opts)',
    ),
    bpf_map_update_elem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    bpf_map_lookup_elem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_delete_elem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    btf__load_vmlinux_btf: lib.func('btf *btf__load_vmlinux_btf(void)'),
    btf__free: lib.func('void btf__free(btf *btf)'),
    btf__find_by_name_kind: lib.func('int btf__find_by_name_kind(btf *btf, const char *name, uint32_t kind)'),
    btf__type_by_id: lib.func('const void *btf__type_by_id(btf *btf, uint32_t id)'),
    btf__name_by_offset: lib.func('const char *btf__name_by_offset(btf *btf, uint32_t off)'),
    libbpf_num_possible_cpus: lib.func('int libbpf_num_possible_cpus(void)'),
    bpf_link_create: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)'),
    bpf_prog_test_run_opts: lib.func('int bpf_prog_test_run_opts(int prog_fd, void *opts)'),
  };

  const libc: Libc = {
    mmap: c.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
    munmap: c.func('int munmap(void *addr, size_t len)'),
    close: c.func('int close(int fd)'),
    clock_gettime: c.func('int clock_gettime(int clk, void *ts)'),
    getpagesize: c.func('int getpagesize(void)'),
    setns: c.func('int setns(int fd, int nstype)'),
    if_nameindex: c.func('void *if_nameindex(void)'),
    if_freenameindex: c.func('void if_freenameindex(void *p)'),
  };

  // libbpf_print_fn_t: int (*)(enum libbpf_print_level, const char *fmt, va_list ap).
  // On x86-64 and arm64 Linux a va_list argument is passed as a pointer, so the
  // callback can hand it straight to vsnprintf.
  const vsnprintf = c.func('int vsnprintf(char *buf, size_t n, const char *fmt, void *ap)');
  const printProto = koffi.proto('int hop_libbpf_print(int level, const char *fmt, void *ap)');
  const setPrint = lib.func('void *libbpf_set_print(void *fn)');
  const log: string[] = [];
  const scratch = Buffer.alloc(4096);
  const cb = koffi.register((level: number, fmt: string, ap: unknown) => {
    if (level > 1) return 0; // LIBBPF_DEBUG: far too chatty
    const n = vsnprintf(scratch, scratch.length, fmt, ap) as number;
    const text = scratch.toString('utf8', 0, Math.max(0, Math.min(n, scratch.length - 1))).trimEnd();
    if (log.length >= LOG_LINES) log.shift();
    log.push(text);
    return 0;
  }, koffi.pointer(printProto));
  setPrint(cb);

  cached = {
    bpf,
    libc,
    drainLog: () => log.splice(0, log.length),
  };
  return cached;
}

/** errno of the last failed libbpf/libc call, as libbpf 1.x sets it. */
export function lastErrno(): number {
  return koffi.errno();
}

/** CLOCK_REALTIME - CLOCK_MONOTONIC in ns: maps bpf_ktime_get_ns() to wall time. */
export function clockOffsetNs(libc: Libc, ts: Uint8Array = new Uint8Array(16)): bigint {
  const v = new DataView(ts.buffer, ts.byteOffset, 16);
  const read = (clock: number) => {
    libc.clock_gettime(clock, ts);
    return v.getBigInt64(0, true) * 1_000_000_000n + v.getBigInt64(8, true);
  };
  // realtime is read between two monotonic reads and compared with their midpoint; a
  // pause between the calls (scheduling, GC) skews that by up to half the gap, so keep
  // the tightest of a few tries (seen on the lab: single tries off by 60 us).
  let best = 0n;
  let bestGap = -1n;
  for (let i = 0; i < 5; i++) {
    const mono1 = read(CLOCK_MONOTONIC);
    const real = read(CLOCK_REALTIME);
    const mono2 = read(CLOCK_MONOTONIC);
    const gap = mono2 - mono1;
    if (bestGap < 0n || gap < bestGap) {
      bestGap = gap;
      best = real - (mono1 + mono2) / 2n;
    }
  }
  return best;
}

/**
 * The clock reference a live source stamps on its chunks. CLOCK_REALTIME - CLOCK_MONOTONIC
 * moves only when the wall clock is stepped: NTP's frequency and offset slewing adjust both
 * clocks alike. A fresh measurement per chunk differed from the last by the measurement's
 * own jitter (tens of ns), and the batcher starts a new batch on every change, so each
 * drain's chunk became a Kafka message of its own (~550 records at 55k events/s instead of
 * a full batch). So the offset is measured every `everyMs` and the reference follows it only when it
 * moved by more than `toleranceNs`: a step shows within `everyMs`, jitter never does.
 */
export function stableClockOffset(measure: () => bigint, everyMs = 100, toleranceNs = 10_000n): (nowMs: number) => bigint {
  let current = measure();
  let at = -Infinity;
  return (nowMs) => {
    if (nowMs - at < everyMs) return current;
    at = nowMs;
    const now = measure();
    const moved = now - current;
    if (moved > toleranceNs || moved < -toleranceNs) current = now;
    return current;
  };
}

/** Reads a 32-bit little-endian word at ptr+off from native memory. */
export function readU32(ptr: Ptr, off: number): number {
  return koffi.decode(ptr, off, 'uint32') as number;
}

export function readI32(ptr: Ptr, off: number): number {
  return koffi.decode(ptr, off, 'int32') as number;
}

/** A view of native memory (mmap'd ring buffer pages, libbpf-owned data). */
export function view(ptr: Ptr, len: number): ArrayBuffer {
  return koffi.view(ptr, len);
}

export function address(ptr: Ptr): bigint {
  return koffi.address(ptr);
}
