/**
 * LZ4 blocks through liblz4 (Debian liblz4-1, the reference C library), called with
 * koffi once per block, never per record.
 *
 * The format is lz4-napi's, which hoptrace wrote before and still reads: the
 * uncompressed length as a u32 little endian, then one raw LZ4 block. liblz4 writes the
 * same block bytes as lz4-napi's Rust encoder (lz4_flex) on hop records, in about half
 * the time (~0.95 vs ~1.8 ms per MiB of generated records on this VM), and decodes into
 * a buffer of the right size at once (test/unit/lz4.test.ts checks both ways against
 * lz4-napi's own blocks).
 *
 * A compressor writes into a buffer of its own and lends the result: the view stays
 * valid until that compressor's next call. (HopBatch.encode copies it into the message
 * anyway; a fresh worst-case-sized buffer per block would only feed the garbage
 * collector.)
 */
import koffi, { type LibraryHandle } from 'koffi';
import { HopError } from './errors.js';

/** Largest uncompressed block a length prefix may claim: a HopBatch holds at most 65536 records of 128 bytes. */
export const LZ4_MAX_BLOCK = 64 << 20;

interface Liblz4 {
  compressBound(n: number): number;
  compressDefault(src: Uint8Array, dst: Uint8Array, srcSize: number, dstCap: number): number;
  decompressSafe(src: Uint8Array, dst: Uint8Array, srcSize: number, dstCap: number): number;
}

let lib: Liblz4 | null = null;

function liblz4(): Liblz4 {
  if (lib) return lib;
  let h: LibraryHandle;
  try {
    h = koffi.load('liblz4.so.1');
  } catch (err) {
    throw new HopError('HOP_CONFIG_INVALID', `cannot load liblz4.so.1 (Debian package liblz4-1; scripts/setup.sh installs it): ${String(err)}`, false, { cause: err });
  }
  lib = {
    compressBound: h.func('int LZ4_compressBound(int inputSize)'),
    compressDefault: h.func('int LZ4_compress_default(const void *src, void *dst, int srcSize, int dstCapacity)'),
    decompressSafe: h.func('int LZ4_decompress_safe(const void *src, void *dst, int compressedSize, int dstCapacity)'),
  };
  return lib;
}

/** A compressor: src -> [u32 LE length][LZ4 block], lent until its next call. */
export function createLz4Compressor(): (src: Buffer) => Buffer {
  const l = liblz4();
  let scratch = Buffer.alloc(0);
  return (src) => {
    if (src.length > LZ4_MAX_BLOCK) throw new HopError('HOP_BATCH_INVALID', `LZ4 block of ${src.length} bytes is over ${LZ4_MAX_BLOCK}`);
    const bound = 4 + l.compressBound(src.length);
    if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
    scratch.writeUInt32LE(src.length, 0);
    const n = src.length ? l.compressDefault(src, scratch.subarray(4), src.length, bound - 4) : 0;
    if (n < 0 || (n === 0 && src.length)) throw new HopError('HOP_BATCH_INVALID', `LZ4_compress_default failed on ${src.length} bytes (${n})`);
    return scratch.subarray(0, 4 + n);
  };
}

/** [u32 LE length][LZ4 block] -> the bytes. Throws (plain Error, naming what is wrong) on a block that does not decode to exactly its length. */
export function lz4Uncompress(block: Buffer): Buffer {
  if (block.length < 4) throw new Error(`${block.length} bytes: no length prefix`);
  const size = block.readUInt32LE(0);
  if (size > LZ4_MAX_BLOCK) throw new Error(`length prefix claims ${size} bytes, over ${LZ4_MAX_BLOCK}`);
  const out = Buffer.allocUnsafe(size);
  if (size === 0) return out;
  const n = liblz4().decompressSafe(block.subarray(4), out, block.length - 4, size);
  if (n !== size) throw new Error(n < 0 ? `corrupt LZ4 block (liblz4 error at input byte ${-n - 1})` : `decoded ${n} bytes, length prefix says ${size}`);
  return out;
}
