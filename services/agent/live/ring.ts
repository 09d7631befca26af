/**
 * Reads a BPF ring buffer map directly through mmap, as libbpf's
 * ringbuf_process_ring does, but from JavaScript: a drain of any number of
 * records costs no FFI call. Chosen over ring_buffer__consume with a koffi
 * callback because that crosses the FFI once per ring record (~1 µs each).
 *
 * A ring record holds a run of hop records (bpf/emit.bpf.h): its length is a
 * multiple of RECORD_SIZE, and the run is copied out with one memcpy. (One hop
 * record per ring record, copied word by word in JavaScript, cost ~70 ns a record.)
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (rw); page 1 holds
 * producer_pos (ro); the data area follows. The kernel lets a reader map it
 * twice back to back so that a record that wraps is contiguous; this reader maps
 * it once and wraps its word index instead, because every mapped page counts
 * in the process's RSS (a 16 MiB ring would count 32 MiB). Each record has an 8-byte header:
 * u32 len | BUSY (bit 31) | DISCARD (bit 30), u32 page offset; records are
 * 8-byte aligned. x86-64 and arm64 loads of aligned words are single-copy
 * atomic; Atomics.load/store give the ordering the kernel's
 * smp_load_acquire/smp_store_release pair expects.
 */
import { bindings, lastErrno, address, view, MAP_SHARED, PROT_READ, PROT_WRITE, type Ptr } from './libbpf.js';
import { LiveError } from './errors.js';
import { RECORD_SIZE } from '../../shared/record.js';

const BUSY = 0x80000000;
const DISCARD = 0x40000000;
const HDR = 8;
const MAP_FAILED = 0xffffffffffffffffn;

export interface RingDrain {
  /** Records copied into `out` (packed RECORD_SIZE each). */
  count: number;
  /** Ring records they came in (runs, bpf/emit.bpf.h). */
  runs: number;
  /** Records of an unexpected size, skipped. */
  badSize: number;
  /** Stopped at a run that would not fit in `out`: more is waiting. */
  full: boolean;
}

export class RingReader {
  private readonly page: number;
  private consPtr: Ptr | null;
  private prodPtr: Ptr | null;
  private readonly cons64: BigUint64Array;
  private readonly prod64: BigUint64Array;
  private readonly data32: Uint32Array;
  private readonly data8: Uint8Array;
  private cons: number;

  constructor(
    fd: number,
    /** Data area size: the map's max_entries, a power of two. */
    readonly size: number,
  ) {
    const { libc } = bindings();
    this.page = libc.getpagesize();
    this.consPtr = mapOrThrow(libc.mmap(null, this.page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), 'consumer page');
    try {
      this.prodPtr = mapOrThrow(libc.mmap(null, this.page + size, PROT_READ, MAP_SHARED, fd, this.page), 'producer pages');
    } catch (err) {
      libc.munmap(this.consPtr, this.page);
      throw err;
    }
    this.cons64 = new BigUint64Array(view(this.consPtr, this.page), 0, 1);
    const prod = view(this.prodPtr, this.page + size);
    this.prod64 = new BigUint64Array(prod, 0, 1);
    this.data32 = new Uint32Array(prod, this.page, size / 4);
    this.data8 = new Uint8Array(prod, this.page, size);
    this.cons = Number(Atomics.load(this.cons64, 0));
  }

  /** Bytes written by the kernel and not yet consumed (records + headers). */
  pending(): number {
    return Number(Atomics.load(this.prod64, 0)) - this.cons;
  }

  /**
   * Copies up to out.length / RECORD_SIZE committed records into `out` and
   * releases their space to the kernel. Stops at the first record still being
   * written (BUSY), and before a run that would not fit whole.
   */
  drain(out: Buffer): RingDrain {
    if (!this.prodPtr) return { count: 0, runs: 0, badSize: 0, full: false };
    const d32 = this.data32;
    const d8 = this.data8;
    const size = this.size;
    const max = Math.floor(out.length / RECORD_SIZE);
    const prod = Number(Atomics.load(this.prod64, 0));
    let cons = this.cons;
    let count = 0;
    let runs = 0;
    let badSize = 0;
    let full = false;
    while (cons < prod) {
      const off = cons % size; // positions exceed 2^32: no bit masking on them
      const len = Atomics.load(d32, off >>> 2);
      if (len & BUSY) break;
      const bytes = len & 0x3fffffff; // without BUSY and DISCARD
      if (!(len & DISCARD)) {
        if (bytes && bytes % RECORD_SIZE === 0) {
          const n = bytes / RECORD_SIZE;
          if (count + n > max) {
            full = true;
            break;
          }
          const s = (off + HDR) % size;
          const t = count * RECORD_SIZE;
          const head = Math.min(bytes, size - s); // the kernel maps the data twice; this reader once, so a run may wrap
          out.set(d8.subarray(s, s + head), t);
          if (head < bytes) out.set(d8.subarray(0, bytes - head), t + head);
          count += n;
          runs++;
        } else {
          badSize++;
        }
      }
      cons += (bytes + HDR + 7) & ~7;
    }
    if (cons !== this.cons) {
      this.cons = cons;
      Atomics.store(this.cons64, 0, BigInt(cons));
    }
    return { count, runs, badSize, full };
  }

  close(): void {
    const { libc } = bindings();
    if (this.prodPtr) libc.munmap(this.prodPtr, this.page + this.size);
    if (this.consPtr) libc.munmap(this.consPtr, this.page);
    this.prodPtr = null;
    this.consPtr = null;
  }
}

/**
 * Records a timer drain aims to find (2 MiB, an eighth of the default ring). Every wake-up
 * costs the agent ~0.4-0.5 ms of CPU beyond its records' own work, even at full load (a
 * wake-up on a CPU the traffic keeps busy finds its code and data out of the caches), and on
 * a busy node that CPU is taken from the traffic. A 1-in-8 sampled agent over the lab
 * (20-50k events/s) woke ~80 times a second with a fixed 10 ms period, and used ~35% less CPU
 * for its records aiming at 4,096 (perf stat -e task-clock on the agent, three interleaved
 * 10 s runs each). At full capture over the lab (~420k events/s) 4,096 kept the period at its
 * 10 ms floor: 30 ms took ~17% less agent CPU per record, 60 ms another ~7% (0.335, 0.279 and
 * 0.260 CPU-s per million records, the agent's utime+stime over the traffic, medians of 5-6
 * interleaved 8 s runs, ad hoc). This many makes it ~40 ms there. A record waits up to a
 * period in the ring, within the batch linger (which counts from the drain before), and the
 * ring's wake-up at wakeupFraction still catches a rate that jumps between drains.
 */
export const DRAIN_TARGET_RECORDS = 16_384;

/**
 * The next timer drain period, in [min, max] ms: scaled so that the next drain finds
 * about DRAIN_TARGET_RECORDS at the rate this one found, doubled when it found none.
 * A rate that jumps in between is the ring fd's to catch (wakeupFraction).
 */
export function nextDrainPeriod(period: number, found: number, min: number, max: number): number {
  const next = found > 0 ? Math.round((period * DRAIN_TARGET_RECORDS) / found) : period * 2;
  return Math.max(min, Math.min(max, next));
}

function mapOrThrow(p: Ptr | null, what: string): Ptr {
  if (!p || address(p) === MAP_FAILED) {
    throw new LiveError('HOP_LIVE_MAP_FAILED', `cannot mmap ring buffer ${what} (errno ${lastErrno()})`);
  }
  return p;
}
