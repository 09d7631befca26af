/**
 * The Kafka message value: a HopBatch (proto/hoptrace/v1/hop.proto) carrying many
 * kernel-ABI records packed back to back, so neither side builds an object per event.
 */
import Long from 'long';
import protobuf from 'protobufjs/minimal.js';
import { compressSync, uncompressSync } from 'snappy';
import { hoptrace } from './gen/hop.js';
import { ABI_VERSION, RECORD_SIZE } from './record.js';
import { HopError } from './errors.js';

// 64-bit fields stay exact (clock offsets are ~2^61 ns): make sure protobufjs uses Long under ESM.
protobuf.util.Long = Long;
protobuf.configure();

const HopBatch = hoptrace.v1.HopBatch;
const u64 = (n: number) => Long.fromNumber(n, true);
const toBig = (v: Long | number) => BigInt(v.toString());

export interface BatchMeta {
  agent: string;
  node: string;
  boot: number;
  clockOffsetNs: bigint;
  netnsNames?: ReadonlyMap<number, string>;
  droppedSinceLast?: number;
  /** Records (and conn) as snappy blocks (HopBatch.records_snappy), or as they are. */
  compress?: boolean;
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
  const packed = records.subarray(0, count * RECORD_SIZE);
  const ids = conn && hasConn(conn, count) ? conn.subarray(0, 8 * count) : EMPTY;
  const msg = HopBatch.create({
    agent: meta.agent,
    node: meta.node,
    boot: u64(meta.boot),
    firstSeq: u64(first),
    clockOffsetNs: Long.fromString(meta.clockOffsetNs.toString(), false),
    recordSize: RECORD_SIZE,
    abiVersion: ABI_VERSION,
    records: meta.compress ? EMPTY : packed,
    recordsSnappy: meta.compress ? compressSync(packed) : EMPTY,
    seqDeltas: deltas,
    netnsNames: toObject(meta.netnsNames),
    dropReasonNames: toObject(meta.dropReasonNames),
    resetReasonNames: toObject(meta.resetReasonNames),
    symbols: toObject(meta.symbols),
    droppedSinceLast: u64(meta.droppedSinceLast ?? 0),
    conn: meta.compress ? EMPTY : ids,
    connSnappy: meta.compress && ids.length ? compressSync(ids) : EMPTY,
  });
  const bytes = HopBatch.encode(msg).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // a view, not a copy
}

const EMPTY = new Uint8Array(0);

/** A snappy block's contents, or HOP_BATCH_INVALID naming the field. */
function unsnappy(block: Uint8Array, field: string): Buffer {
  try {
    return uncompressSync(Buffer.from(block.buffer, block.byteOffset, block.byteLength), { asBuffer: true }) as Buffer;
  } catch (err) {
    throw new HopError('HOP_BATCH_INVALID', `${field} is not a snappy block: ${(err as Error).message}`, false, { cause: err });
  }
}

/** A bytes field that may come as a snappy block instead: the one set, or HOP_BATCH_INVALID when both are. */
function plainOrSnappy(plain: Uint8Array, snappy: Uint8Array, field: string): Buffer {
  if (snappy.length && plain.length) throw new HopError('HOP_BATCH_INVALID', `both ${field} and ${field}_snappy are set`);
  return snappy.length ? unsnappy(snappy, `${field}_snappy`) : Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
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
  const records = plainOrSnappy(m.records, m.recordsSnappy, 'records');
  if (records.length % RECORD_SIZE !== 0) throw new HopError('HOP_BATCH_INVALID', `records field is ${records.length} bytes, not a multiple of ${RECORD_SIZE}`);
  const count = records.length / RECORD_SIZE;
  const deltas = m.seqDeltas;
  if (deltas.length !== 0 && deltas.length !== count) throw new HopError('HOP_BATCH_INVALID', `${deltas.length} seq deltas for ${count} records`);
  if (!m.agent) throw new HopError('HOP_BATCH_INVALID', 'batch has no agent name');
  const firstSeq = Number(toBig(m.firstSeq));
  const conn = plainOrSnappy(m.conn, m.connSnappy, 'conn');
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
