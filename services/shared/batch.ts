/**
 * The Kafka message value: a HopBatch (proto/hoptrace/v1/hop.proto) carrying many
 * kernel-ABI records packed back to back, so neither side builds an object per event.
 */
import Long from 'long';
import protobuf from 'protobufjs/minimal.js';
import * as snappy from 'snappy';
import { hoptrace } from './gen/hop.js';
import { ABI_VERSION, RECORD_SIZE } from './record.js';
import { HopError } from './errors.js';
import { createLz4Compressor, lz4Uncompress } from './lz4.js';

// 64-bit fields stay exact (clock offsets are ~2^61 ns): make sure protobufjs uses Long under ESM.
protobuf.util.Long = Long;
protobuf.configure();

const HopBatch = hoptrace.v1.HopBatch;
const Codec = hoptrace.v1.RecordCodec;

/** HOPTRACE_RECORD_COMPRESSION values. */
export type RecordCodecName = 'lz4' | 'snappy' | 'none';

/**
 * Each codec's block of a buffer and back (npm run bench:kafka compares them). `slot` 0
 * packs records, 1 conn: an LZ4 block is lent by its slot's compressor until that slot's
 * next call, by which time HopBatch.encode has copied it into a message.
 */
let lz4Slots: ((b: Buffer) => Buffer)[] | null = null;
const CODECS: Record<number, { name: string; compress(b: Buffer, slot: 0 | 1): Buffer; uncompress(b: Buffer): Buffer }> = {
  [Codec.RECORD_CODEC_LZ4]: { name: 'lz4', compress: (b, slot) => (lz4Slots ??= [createLz4Compressor(), createLz4Compressor()])[slot]!(b), uncompress: lz4Uncompress },
  [Codec.RECORD_CODEC_SNAPPY]: { name: 'snappy', compress: (b) => snappy.compressSync(b), uncompress: (b) => snappy.uncompressSync(b, { asBuffer: true }) as Buffer },
};
const CODEC_OF: Record<RecordCodecName, number> = { lz4: Codec.RECORD_CODEC_LZ4, snappy: Codec.RECORD_CODEC_SNAPPY, none: Codec.RECORD_CODEC_NONE };
const u64 = (n: number) => Long.fromNumber(n, true);
const toBig = (v: Long | number) => BigInt(v.toString());

export interface BatchMeta {
  agent: string;
  node: string;
  boot: number;
  clockOffsetNs: bigint;
  netnsNames?: ReadonlyMap<number, string>;
  droppedSinceLast?: number;
  /** Records (and conn) as one compressed block each (HopBatch.codec), or as they are. */
  codec?: RecordCodecName;
  /** Names of the reasons and kernel addresses found in the batch's records. */
  dropReasonNames?: ReadonlyMap<number, string>;
  resetReasonNames?: ReadonlyMap<number, string>;
  symbols?: ReadonlyMap<bigint, string>;
}

/** Map keys as protobuf map keys: decimal for numbers, 0x-hex for (64-bit) addresses. */
function toObject(m: ReadonlyMap<number, string> | ReadonlyMap<bigint, string> | undefined): Record<string, string> {
  const o: Record<string, string> = {};
  for (const [k, v] of m ?? []) o[typeof k === 'bigint' ? `0x${k.toString(16)}` : String(k)] = v;
  return o;
}

/**
 * Encodes `count` records from `records` with their seqs (any order: records held
 * back for a handshake follow later ones) and, optionally, their connection ids
 * (8 bytes per record, services/agent/connections.ts).
 */
export function encodeBatch(meta: BatchMeta, records: Buffer, seqs: ArrayLike<number>, count: number, conn?: Buffer): Buffer {
  let first = seqs[0] ?? 0;
  for (let i = 1; i < count; i++) if (seqs[i]! < first) first = seqs[i]!;
  let contiguous = true;
  for (let i = 0; i < count && contiguous; i++) contiguous = seqs[i] === first + i;
  const deltas: number[] = [];
  if (!contiguous) for (let i = 0; i < count; i++) deltas.push(seqs[i]! - first);
  const codec = CODEC_OF[meta.codec ?? 'none'];
  const pack = CODECS[codec]?.compress ?? ((b: Buffer) => b);
  // both blocks are lent until the next encodeBatch: HopBatch.encode below copies them
  const ids = conn && hasConn(conn, count) ? conn.subarray(0, 8 * count) : undefined;
  const msg = HopBatch.create({
    agent: meta.agent,
    node: meta.node,
    boot: u64(meta.boot),
    firstSeq: u64(first),
    clockOffsetNs: Long.fromString(meta.clockOffsetNs.toString(), false),
    recordSize: RECORD_SIZE,
    abiVersion: ABI_VERSION,
    records: pack(records.subarray(0, count * RECORD_SIZE), 0),
    codec,
    seqDeltas: deltas,
    netnsNames: toObject(meta.netnsNames),
    dropReasonNames: toObject(meta.dropReasonNames),
    resetReasonNames: toObject(meta.resetReasonNames),
    symbols: toObject(meta.symbols),
    droppedSinceLast: u64(meta.droppedSinceLast ?? 0),
    conn: ids ? pack(ids, 1) : new Uint8Array(0),
  });
  const bytes = HopBatch.encode(msg).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // a view, not a copy
}

/** A bytes field as its codec left it, uncompressed; HOP_BATCH_INVALID naming the field when it is not. */
function unpack(field: Uint8Array, codec: number, name: string): Buffer {
  const b = Buffer.from(field.buffer, field.byteOffset, field.byteLength);
  if (codec === Codec.RECORD_CODEC_NONE || b.length === 0) return b;
  const c = CODECS[codec];
  if (!c) throw new HopError('HOP_BATCH_INVALID', `unknown record codec ${codec}`);
  try {
    return c.uncompress(b);
  } catch (err) {
    throw new HopError('HOP_BATCH_INVALID', `${name} is not a ${c.name} block: ${(err as Error).message}`, false, { cause: err });
  }
}

function hasConn(conn: Buffer, count: number): boolean {
  for (let i = 0; i < count; i++) if (conn.readUInt32LE(8 * i) !== 0) return true;
  return false;
}

export interface DecodedBatch extends BatchMeta {
  records: Buffer;
  count: number;
  firstSeq: number;
  /** Seq of record i. */
  seqOf(i: number): number;
  /** Client ISN of record i's connection (0 = unknown). */
  isnC(i: number): number;
  /** Server ISN of record i's connection (0 = unknown). */
  isnS(i: number): number;
}

/** Decodes a Kafka message value. Throws HOP_BATCH_INVALID naming what is wrong. */
export function decodeBatch(value: Buffer): DecodedBatch {
  let m: hoptrace.v1.HopBatch;
  try {
    m = HopBatch.decode(value);
  } catch (err) {
    throw new HopError('HOP_BATCH_INVALID', `not a HopBatch: ${(err as Error).message}`, false, { cause: err });
  }
  if (m.abiVersion !== ABI_VERSION) throw new HopError('HOP_BATCH_INVALID', `record ABI ${m.abiVersion}, this build reads ${ABI_VERSION}`);
  if (m.recordSize !== RECORD_SIZE) throw new HopError('HOP_BATCH_INVALID', `record size ${m.recordSize}, this build reads ${RECORD_SIZE}`);
  const records = unpack(m.records, m.codec, 'records');
  if (records.length % RECORD_SIZE !== 0) throw new HopError('HOP_BATCH_INVALID', `records field is ${records.length} bytes, not a multiple of ${RECORD_SIZE}`);
  const count = records.length / RECORD_SIZE;
  const deltas = m.seqDeltas;
  if (deltas.length !== 0 && deltas.length !== count) throw new HopError('HOP_BATCH_INVALID', `${deltas.length} seq deltas for ${count} records`);
  if (!m.agent) throw new HopError('HOP_BATCH_INVALID', 'batch has no agent name');
  const firstSeq = Number(toBig(m.firstSeq));
  const conn = unpack(m.conn, m.codec, 'conn');
  if (conn.length !== 0 && conn.length !== 8 * count) throw new HopError('HOP_BATCH_INVALID', `conn field is ${conn.length} bytes for ${count} records`);
  const numKeys = (o: Record<string, string>) => new Map(Object.entries(o).map(([k, v]) => [Number(k), v]));
  return {
    agent: m.agent,
    node: m.node,
    boot: Number(toBig(m.boot)),
    clockOffsetNs: toBig(m.clockOffsetNs),
    netnsNames: numKeys(m.netnsNames),
    dropReasonNames: numKeys(m.dropReasonNames),
    resetReasonNames: numKeys(m.resetReasonNames),
    symbols: new Map(Object.entries(m.symbols).map(([k, v]) => [BigInt(k), v])),
    droppedSinceLast: Number(toBig(m.droppedSinceLast)),
    records,
    count,
    firstSeq,
    seqOf: deltas.length ? (i) => firstSeq + deltas[i]! : (i) => firstSeq + i,
    isnC: conn.length ? (i) => conn.readUInt32LE(8 * i) : () => 0,
    isnS: conn.length ? (i) => conn.readUInt32LE(8 * i + 4) : () => 0,
  };
}
