import { encodeRecord, Hook, Kind, RECORD_SIZE, type RecordInput } from '../../services/shared/record.js';

/** A TCP packet record between two endpoints. */
export function pkt(saddr: string, sport: number, daddr: string, dport: number, extra: Partial<RecordInput> = {}): Buffer {
  return encodeRecord({ tsNs: 1_000n, kind: Kind.PACKET, hook: Hook.NET_DEV_QUEUE, family: saddr.includes(':') ? 10 : 2, tuple: { saddr, daddr, sport, dport }, ...extra });
}

/** Packs records into one buffer. */
export function pack(records: Buffer[]): Buffer {
  return Buffer.concat(records, records.length * RECORD_SIZE);
}
