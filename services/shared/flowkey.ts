/**
 * Flow identity from raw records: both directions of a 5-tuple get the same key.
 *
 * Works on the record bytes (bpf/events.h tuple at offset 48), without decoding. The canonical order puts the endpoint with the
 * smaller (address bytes, port) first; `direction` says whether a record's source
 * is that first endpoint (0) or the second (1).
 *
 * flowId is 53 bits (a safe JS integer, stored as ClickHouse UInt64): two
 * independent 32-bit murmur3 hashes of the canonical tuple bytes.
 */
const TUPLE = 48;
const L4PROTO = 28;
const FAMILY = 27;

/** Compares (saddr, sport) with (daddr, dport) of the record at off: <0, 0, >0. */
function compareEndpoints(buf: Buffer, off: number): number {
  // Byte by byte, unsigned (as Buffer.compare orders), in JS: the native compare's call costs more than 16 bytes do.
  const s = off + TUPLE;
  for (let i = 0; i < 16; i++) {
    const c = buf[s + i]! - buf[s + 16 + i]!;
    if (c !== 0) return c;
  }
  return buf.readUInt16LE(off + TUPLE + 32) - buf.readUInt16LE(off + TUPLE + 34);
}

/** 0 when the record's source is the canonical first endpoint, 1 otherwise. */
export function direction(buf: Buffer, off: number): 0 | 1 {
  return compareEndpoints(buf, off) <= 0 ? 0 : 1;
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * 53-bit flow id of the record's canonical 5-tuple: two murmur3-32 hashes of the
 * canonical tuple (address words of the first endpoint, then the second, ports,
 * protocol and family), seeded 0x2f1a7c3d (top 21 bits) and 0x5bd1e995 (32 bits),
 * computed in one pass. Stored flow ids depend on it: the unit test pins values.
 */
export function flowId(buf: Buffer, off: number): number {
  const rev = compareEndpoints(buf, off) > 0;
  const a = off + TUPLE + (rev ? 16 : 0);
  const b = off + TUPLE + (rev ? 0 : 16);
  let h = 0x2f1a7c3d;
  let l = 0x5bd1e995;
  for (let i = 0; i < 16; i += 4) {
    const k = buf.readInt32LE(a + i);
    h = mix(h, k);
    l = mix(l, k);
  }
  for (let i = 0; i < 16; i += 4) {
    const k = buf.readInt32LE(b + i);
    h = mix(h, k);
    l = mix(l, k);
  }
  const ports = (buf.readUInt16LE(off + TUPLE + (rev ? 34 : 32)) << 16) | buf.readUInt16LE(off + TUPLE + (rev ? 32 : 34));
  const proto = (buf[off + L4PROTO]! << 8) | buf[off + FAMILY]!;
  h = fmix(mix(mix(h, ports), proto) ^ 40) >>> 11;
  l = fmix(mix(mix(l, ports), proto) ^ 40);
  return h * 0x1_0000_0000 + l;
}

/**
 * Connection identity that survives NAT: the client's and the server's initial
 * sequence numbers (from the SYN and the SYN-ACK). NAT rewrites addresses and ports
 * but not sequence numbers, so every hop of one TCP connection, on either side of a
 * DNAT, SNAT or REDIRECT, carries the same pair.
 */
export interface ConnId {
  /** Client ISN (the SYN's sequence number); 0 = unknown. */
  isnC: number;
  /** Server ISN (the SYN-ACK's sequence number); 0 = unknown or never answered. */
  isnS: number;
}

/** 53-bit flow id of a connection identified by its ISNs (seeded apart from tuple flow ids). */
export function connFlowId(isnC: number, isnS: number): number {
  const hi = fmix(mix(mix(0x1b873593, isnC | 0), isnS | 0) ^ 8) >>> 11;
  const lo = fmix(mix(mix(0x85ebca6b, isnC | 0), isnS | 0) ^ 8);
  return hi * 0x1_0000_0000 + lo;
}

const SYN = 0x02;
const ACK = 0x10;
const dist = (a: number, b: number) => (a - b) >>> 0;

/**
 * Whether a TCP segment of the connection (isnC, isnS) was sent by the client, from
 * sequence spaces alone (so it holds on every side of a NAT): a client segment's seq
 * is near the client ISN and its ack near the server's.
 */
export function sentByClient(seq: number, ack: number, flags: number, isnC: number, isnS: number): boolean {
  if ((flags & (SYN | ACK)) === SYN) return true;
  if ((flags & (SYN | ACK)) === (SYN | ACK)) return false;
  if (isnS === 0) return dist(seq, isnC) < 2 ** 30;
  const fwd = Math.min(dist(seq, isnC), flags & ACK ? dist(ack, isnS) : 2 ** 31);
  const rev = Math.min(dist(seq, isnS), flags & ACK ? dist(ack, isnC) : 2 ** 31);
  return fwd <= rev;
}
