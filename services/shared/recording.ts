/**
 * Recording files: what one agent captured, replayable through the same decoder
 * as live capture.
 *
 * File format (little endian):
 *   0  magic "HOPREC\0\1" (8 bytes)
 *   8  u16 header size (64)
 *  10  u16 record size (128)
 *  12  u32 record ABI version (bpf/events.h HOP_ABI_VERSION)
 *  16  i64 clock offset, ns: wall clock minus kernel monotonic clock on the node
 *  24  u64 boot: identity of the capturing agent boot (below 2^53)
 *  32  node name, 32 bytes, NUL padded
 *  64  records, RECORD_SIZE bytes each
 */
import { ABI_VERSION, RECORD_SIZE } from './record.js';
import { HopError } from './errors.js';

export const MAGIC = Buffer.from('HOPREC\0\x01', 'latin1');
export const HEADER_SIZE = 64;

export interface RecordingHeader {
  node: string;
  boot: number;
  clockOffsetNs: bigint;
}

export function encodeHeader(h: RecordingHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, 0);
  b.writeUInt16LE(HEADER_SIZE, 8);
  b.writeUInt16LE(RECORD_SIZE, 10);
  b.writeUInt32LE(ABI_VERSION, 12);
  b.writeBigInt64LE(h.clockOffsetNs, 16);
  b.writeBigUInt64LE(BigInt(h.boot), 24);
  if (Buffer.byteLength(h.node) > 31) throw new HopError('HOP_RECORDING_INVALID', `node name too long for a recording: ${h.node}`);
  b.write(h.node, 32, 'utf8');
  return b;
}

/** Parses a recording header; `file` only names the file in errors. */
export function decodeHeader(b: Buffer, file: string): RecordingHeader {
  const bad = (why: string) => new HopError('HOP_RECORDING_INVALID', `${file}: not a hoptrace recording: ${why}`);
  if (b.length < HEADER_SIZE) throw bad(`only ${b.length} bytes`);
  if (!b.subarray(0, 8).equals(MAGIC)) throw bad('bad magic');
  if (b.readUInt16LE(8) !== HEADER_SIZE) throw bad(`header size ${b.readUInt16LE(8)}`);
  if (b.readUInt16LE(10) !== RECORD_SIZE) throw bad(`record size ${b.readUInt16LE(10)}, this build reads ${RECORD_SIZE}`);
  if (b.readUInt32LE(12) !== ABI_VERSION) throw bad(`record ABI ${b.readUInt32LE(12)}, this build reads ${ABI_VERSION}`);
  const boot = b.readBigUInt64LE(24);
  if (boot >= 1n << 53n) throw bad('boot id out of range');
  const end = b.indexOf(0, 32);
  return {
    clockOffsetNs: b.readBigInt64LE(16),
    boot: Number(boot),
    node: b.toString('utf8', 32, end < 0 || end > 64 ? 64 : end),
  };
}
