/**
 * The one decoder (and encoder) of the kernel record ABI, bpf/events.h.
 *
 * Wire format, 128 bytes, little endian (see bpf/events.h for what each field means):
 *
 *   0 u64 ts_ns      8 u64 skb_id     16 u32 netns_ino  20 u32 ifindex
 *  24 u8 abi_version 25 u8 kind 26 u8 hook 27 u8 family 28 u8 l4proto 29 u8 tcp_flags
 *  30 u8 sk_state   31 u8 ct_info    32 u32 ct_id      36 u32 ct_status
 *  40 u16 reason    42 u16 ip_id     44 u16 payload_len 46 u16 flags
 *  48 tuple: saddr[16] daddr[16] u16 sport u16 dport (36 bytes)
 *  84 pkt:   u32 seq, u32 ack, u16 window, u16 pad, ifname[16], u32 mark, u32 aux[3]
 *  84 ct:    reply tuple (36 bytes), 8 bytes pad          (kind CT only)
 *
 * Decoding turns bytes into a plain object and validates the framing; it carries no
 * policy. Interpretation (flow keys, verdicts, names) happens elsewhere.
 */

export const ABI_VERSION = 1;
export const RECORD_SIZE = 128;

/** enum hop_kind (bpf/events.h). */
export const Kind = {
  UNSPECIFIED: 0,
  PACKET: 1,
  CT: 2,
  DROP: 3,
  RST_SENT: 4,
  RST_RECV: 5,
  RETRANS: 6,
  SOCK_STATE: 7,
} as const;
export type KindValue = (typeof Kind)[keyof typeof Kind];

/** enum hop_hook (bpf/events.h). */
export const Hook = {
  UNSPECIFIED: 0,
  NETIF_RECEIVE: 1,
  NET_DEV_QUEUE: 2,
  NET_DEV_XMIT: 3,
  TC_INGRESS: 4,
  TC_EGRESS: 5,
  KFREE_SKB: 6,
  TCP_SEND_RESET: 7,
  TCP_RECEIVE_RESET: 8,
  TCP_RETRANSMIT: 9,
  SOCK_SET_STATE: 10,
} as const;
export type HookValue = (typeof Hook)[keyof typeof Hook];

/** enum hop_flag (bpf/events.h). */
export const Flag = {
  CT: 1 << 0,
  CT_UNTRACKED: 1 << 1,
  CT_MISSING: 1 << 2,
  INGRESS: 1 << 3,
  EGRESS: 1 << 4,
  TRUNCATED: 1 << 5,
  /** PACKET: aux[1], aux[2] are the TCP connection's client and server ISNs (the kernel learned them). */
  CONN: 1 << 6,
} as const;

/** enum hop_stage (bpf/events.h): DROP records, aux[2]. */
export const Stage = {
  UNSPECIFIED: 0,
  PREROUTING: 1,
  INPUT: 2,
  FORWARD: 3,
  OUTPUT: 4,
  POSTROUTING: 5,
} as const;

/** Kernel TCP states (include/net/tcp_states.h); 0 = unknown. */
export const TcpState = {
  UNSPECIFIED: 0,
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
  NEW_SYN_RECV: 12,
} as const;

export const AF_INET = 2;
export const AF_INET6 = 10;

const KIND_MAX = 7;
const HOOK_MAX = 10;
const FLAGS_ALL = Object.values(Flag).reduce((a, b) => a | b, 0);

export interface Tuple {
  /** Source address in text form (dotted quad or RFC 5952 IPv6). */
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
}

/** One decoded record: bytes turned into fields, nothing interpreted. */
export interface HopRecord {
  tsNs: bigint;
  skbId: bigint;
  netnsIno: number;
  ifindex: number;
  kind: KindValue;
  hook: HookValue;
  family: number;
  l4proto: number;
  tcpFlags: number;
  skState: number;
  ctInfo: number;
  ctId: number;
  ctStatus: number;
  reason: number;
  ipId: number;
  payloadLen: number;
  flags: number;
  tuple: Tuple;
  /** PACKET-like kinds; zero for CT. */
  seq: number;
  ack: number;
  window: number;
  ifname: string;
  mark: number;
  /** Kind-specific words, see struct hop_pkt in bpf/events.h (e.g. DROP: code address, Stage). */
  aux: [number, number, number];
  /** Kind CT only: the conntrack REPLY tuple. */
  reply: Tuple | null;
}

/** Why a record could not be decoded. Stable strings: they label counters. */
export type CorruptReason =
  | 'bad_abi_version'
  | 'bad_kind'
  | 'bad_hook'
  | 'bad_family'
  | 'bad_flags'
  | 'truncated';

export class CorruptRecordError extends Error {
  readonly code = 'HOP_CORRUPT_RECORD';
  readonly retriable = false;
  constructor(
    readonly reason: CorruptReason,
    /** Byte offset of the record within the buffer it was decoded from. */
    readonly offset: number,
  ) {
    super(`corrupt record at offset ${offset}: ${reason}`);
    this.name = 'CorruptRecordError';
  }
}

/** Returns the reason a record is malformed, or null when it is well formed. */
export function checkRecord(buf: Buffer, off: number): CorruptReason | null {
  if (off + RECORD_SIZE > buf.length) return 'truncated';
  if (buf[off + 24] !== ABI_VERSION) return 'bad_abi_version';
  const kind = buf[off + 25]!;
  if (kind === 0 || kind > KIND_MAX) return 'bad_kind';
  if (buf[off + 26]! > HOOK_MAX) return 'bad_hook';
  const family = buf[off + 27];
  if (family !== AF_INET && family !== AF_INET6) return 'bad_family';
  if ((buf.readUInt16LE(off + 46) & ~FLAGS_ALL) !== 0) return 'bad_flags';
  return null;
}

/** The text of the 16-byte address field at `off` (IPv4 in its first 4 bytes for AF_INET). */
export function formatAddr(buf: Buffer, off: number, family: number): string {
  if (family === AF_INET) return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(off + i).toString(16));
  return compressIPv6(groups);
}

/** RFC 5952: collapse the longest run (>= 2) of zero groups. */
function compressIPv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function tuple(buf: Buffer, off: number, family: number): Tuple {
  return {
    saddr: formatAddr(buf, off, family),
    daddr: formatAddr(buf, off + 16, family),
    sport: buf.readUInt16LE(off + 32),
    dport: buf.readUInt16LE(off + 34),
  };
}

/** A NUL-terminated Latin-1 string of at most `len` bytes at off. */
export function cstring(buf: Buffer, off: number, len: number): string {
  const end = buf.indexOf(0, off);
  return buf.toString('latin1', off, end < 0 || end > off + len ? off + len : end);
}

/** Decodes the record at `off`. Throws CorruptRecordError when it is malformed. */
export function decodeRecord(buf: Buffer, off = 0): HopRecord {
  const bad = checkRecord(buf, off);
  if (bad) throw new CorruptRecordError(bad, off);
  const kind = buf[off + 25] as KindValue;
  const family = buf[off + 27]!;
  const isCt = kind === Kind.CT;
  return {
    tsNs: buf.readBigUInt64LE(off),
    skbId: buf.readBigUInt64LE(off + 8),
    netnsIno: buf.readUInt32LE(off + 16),
    ifindex: buf.readUInt32LE(off + 20),
    kind,
    hook: buf[off + 26] as HookValue,
    family,
    l4proto: buf[off + 28]!,
    tcpFlags: buf[off + 29]!,
    skState: buf[off + 30]!,
    ctInfo: buf[off + 31]!,
    ctId: buf.readUInt32LE(off + 32),
    ctStatus: buf.readUInt32LE(off + 36),
    reason: buf.readUInt16LE(off + 40),
    ipId: buf.readUInt16LE(off + 42),
    payloadLen: buf.readUInt16LE(off + 44),
    flags: buf.readUInt16LE(off + 46),
    tuple: tuple(buf, off + 48, family),
    seq: isCt ? 0 : buf.readUInt32LE(off + 84),
    ack: isCt ? 0 : buf.readUInt32LE(off + 88),
    window: isCt ? 0 : buf.readUInt16LE(off + 92),
    ifname: isCt ? '' : cstring(buf, off + 96, 16),
    mark: isCt ? 0 : buf.readUInt32LE(off + 112),
    aux: isCt ? [0, 0, 0] : [buf.readUInt32LE(off + 116), buf.readUInt32LE(off + 120), buf.readUInt32LE(off + 124)],
    reply: isCt ? tuple(buf, off + 84, family) : null,
  };
}

/** Writes an address's text (formatAddr form) as its 16 wire bytes at off (IPv4: the first 4). */
export function putAddr(buf: Buffer, off: number, family: number, text: string): void {
  buf.fill(0, off, off + 16);
  if (family === AF_INET) {
    // Digit by digit: the object insert path packs four addresses per row.
    let k = off;
    let v = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x2e) {
        buf[k++] = v;
        v = 0;
      } else v = v * 10 + c - 48;
    }
    buf[k] = v;
    return;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => buf.writeUInt16BE(parseInt(g, 16), off + 2 * i));
}

function putTuple(buf: Buffer, off: number, family: number, t: Tuple): void {
  putAddr(buf, off, family, t.saddr);
  putAddr(buf, off + 16, family, t.daddr);
  buf.writeUInt16LE(t.sport, off + 32);
  buf.writeUInt16LE(t.dport, off + 34);
}

/** Input of encodeRecord: a HopRecord with the uninteresting fields optional. */
export type RecordInput = Pick<HopRecord, 'tsNs' | 'kind' | 'family' | 'tuple'> & Partial<HopRecord>;

/**
 * Encodes one record in the kernel ABI. Used by the recording generator and tests;
 * the kernel programs write the same bytes.
 */
export function encodeRecord(r: RecordInput, buf: Buffer = Buffer.alloc(RECORD_SIZE), off = 0): Buffer {
  buf.fill(0, off, off + RECORD_SIZE);
  buf.writeBigUInt64LE(r.tsNs, off);
  buf.writeBigUInt64LE(r.skbId ?? 0n, off + 8);
  buf.writeUInt32LE(r.netnsIno ?? 0, off + 16);
  buf.writeUInt32LE(r.ifindex ?? 0, off + 20);
  buf[off + 24] = ABI_VERSION;
  buf[off + 25] = r.kind;
  buf[off + 26] = r.hook ?? Hook.UNSPECIFIED;
  buf[off + 27] = r.family;
  buf[off + 28] = r.l4proto ?? 6;
  buf[off + 29] = r.tcpFlags ?? 0;
  buf[off + 30] = r.skState ?? 0;
  buf[off + 31] = r.ctInfo ?? 0;
  buf.writeUInt32LE(r.ctId ?? 0, off + 32);
  buf.writeUInt32LE(r.ctStatus ?? 0, off + 36);
  buf.writeUInt16LE(r.reason ?? 0, off + 40);
  buf.writeUInt16LE(r.ipId ?? 0, off + 42);
  buf.writeUInt16LE(r.payloadLen ?? 0, off + 44);
  buf.writeUInt16LE(r.flags ?? 0, off + 46);
  putTuple(buf, off + 48, r.family, r.tuple);
  if (r.kind === Kind.CT) {
    if (r.reply) putTuple(buf, off + 84, r.family, r.reply);
    return buf;
  }
  buf.writeUInt32LE(r.seq ?? 0, off + 84);
  buf.writeUInt32LE(r.ack ?? 0, off + 88);
  buf.writeUInt16LE(r.window ?? 0, off + 92);
  buf.write((r.ifname ?? '').slice(0, 15), off + 96, 'latin1');
  buf.writeUInt32LE(r.mark ?? 0, off + 112);
  const aux = r.aux ?? [0, 0, 0];
  for (let i = 0; i < 3; i++) buf.writeUInt32LE(aux[i]!, off + 116 + 4 * i);
  return buf;
}
