/**
 * kafkajs 2.2.4 builds each produce request through nested Encoders (record, record
 * batch, partition, topic, request, frame), each copying the one inside it. Its
 * Encoder grows by allocating the next power of two with Buffer.alloc: a 260 KiB
 * record batch (8,192 LZ4-packed records) lands in a zero-filled 512 KiB buffer at each
 * of those levels. At full capture that zero-filling was ~4-5% of the agent's CPU samples
 * (memset under Heap::AllocateExternalBackingStore, from Encoder.writeBufferInternal),
 * and the doubled allocations fed V8's external-memory accounting.
 *
 * Every Encoder write goes through ensureAvailable() and then writes at `offset`, and
 * its `buffer` is the slice up to `offset`, so bytes past `offset` are never read: a
 * new buffer need not be zeroed. It is sized to what is needed plus an eighth (the
 * small writes that follow a large one then fit), or doubled when that is larger
 * (many small writes stay amortised). Importing this module patches the class kafkajs
 * loads (the same module instance: CommonJS caches it by path).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface EncoderLike {
  buf: Buffer;
  offset: number;
  ensureAvailable(length: number): void;
}

export const Encoder = require('kafkajs/src/protocol/encoder.js') as { prototype: EncoderLike };

/** The size an encoder's buffer of `current` bytes grows to when it needs `need`. */
export function grownSize(current: number, need: number): number {
  return Math.max(2 * current, need + (need >> 3) + 64);
}

const proto = Encoder.prototype;
if (typeof proto.ensureAvailable !== 'function') throw new Error('kafkajs: Encoder.ensureAvailable not found; kafka-encoder.ts needs review for this kafkajs version');

if (!(proto.ensureAvailable as { hoptraceGrowth?: boolean }).hoptraceGrowth) {
  const patched = function (this: EncoderLike, length: number): void {
    const need = this.offset + length;
    if (need <= this.buf.length) return;
    const next = Buffer.allocUnsafe(grownSize(this.buf.length, need));
    this.buf.copy(next, 0, 0, this.offset);
    this.buf = next;
  };
  (patched as { hoptraceGrowth?: boolean }).hoptraceGrowth = true;
  proto.ensureAvailable = patched;
}

/** Whether kafkajs's Encoder grows with grownSize (for tests). */
export const kafkajsUsesEncoderGrowth = (): boolean => (proto.ensureAvailable as { hoptraceGrowth?: boolean }).hoptraceGrowth === true;
