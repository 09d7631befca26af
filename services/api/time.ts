/**
 * Time arguments of the query API (`since`, `until`), turned into ns since the epoch.
 *
 * Accepted forms:
 *  - RFC 3339: `2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.123456789+02:00` (ns kept);
 *  - epoch milliseconds: `1714564800000`;
 *  - a duration before now: `15m`, `2h`, `1h30m`, `500ms`, `7d` (units ms s m h d w);
 *  - `now`.
 */

/** Syntactic shape for the route schema; `parseTime` does the semantic checks. */
export const TIME_PATTERN =
  '^(now|[0-9]{1,15}|([0-9]{1,9}(ms|s|m|h|d|w)){1,6}|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2}))$';

export const TIME_HINT = 'must be an RFC 3339 time, epoch milliseconds, a duration before now such as 15m or 2h, or now';

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;
const DURATION_PART = /(\d+)(ms|s|m|h|d|w)/g;
const UNIT_MS: Record<string, bigint> = { ms: 1n, s: 1000n, m: 60_000n, h: 3_600_000n, d: 86_400_000n, w: 604_800_000n };
const MS = 1_000_000n;

/** Times are stored as UInt64 ns: 1970 to 2554. */
const NS_LIMIT = 1n << 64n;

/** ns since the epoch, or null when `raw` is not a valid time or is outside 1970..2554. */
export function parseTime(raw: string, nowMs: number): bigint | null {
  const t = parse(raw, nowMs);
  return t === null || t < 0n || t >= NS_LIMIT ? null : t;
}

function parse(raw: string, nowMs: number): bigint | null {
  const now = BigInt(Math.floor(nowMs)) * MS;
  if (raw === 'now') return now;
  if (/^\d{1,15}$/.test(raw)) return BigInt(raw) * MS;
  if (/^(\d{1,9}(ms|s|m|h|d|w)){1,6}$/.test(raw)) {
    let ms = 0n;
    for (const m of raw.matchAll(DURATION_PART)) ms += BigInt(m[1]!) * UNIT_MS[m[2]!]!;
    return now - ms * MS;
  }
  const m = RFC3339.exec(raw);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac = '', , sign, oh, om] = m;
  const nums = [y, mo, d, h, mi, s].map(Number) as [number, number, number, number, number, number];
  const [Y, M, D, H, Mi, S] = nums;
  // Date.UTC rolls over out-of-range fields; reject them instead (2024-02-30, 25:00).
  const date = new Date(Date.UTC(Y, M - 1, D, H, Mi, S));
  if (date.getUTCFullYear() !== Y || date.getUTCMonth() !== M - 1 || date.getUTCDate() !== D || date.getUTCHours() !== H || date.getUTCMinutes() !== Mi || date.getUTCSeconds() !== S) return null;
  let offsetMin = 0;
  if (sign) {
    const OH = Number(oh);
    const OM = Number(om);
    if (OH > 23 || OM > 59) return null;
    offsetMin = (sign === '-' ? -1 : 1) * (OH * 60 + OM);
  }
  return (BigInt(date.getTime()) - BigInt(offsetMin) * 60_000n) * MS + BigInt(frac.padEnd(9, '0'));
}
