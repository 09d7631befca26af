/**
 * SQL value rendering for ClickHouse. The server hoptrace runs against locally
 * (18.16) has no server-side query parameters, so every value that reaches SQL goes
 * through one of these functions, after the caller has validated it.
 */
import { isIP } from 'node:net';
import { HopError } from './errors.js';

/** A ClickHouse string literal: backslash and quote escaped, control bytes as \xNN. */
export function str(s: string): string {
  // eslint-disable-next-line no-control-regex
  return `'${s.replace(/[\\']/g, (c) => `\\${c}`).replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}'`;
}

/** An unsigned integer literal; throws unless `n` is a non-negative safe integer (or bigint). */
export function uint(n: number | bigint): string {
  if (typeof n === 'bigint') {
    if (n < 0n || n >= 1n << 64n) throw new HopError('HOP_BAD_REQUEST', `not a UInt64: ${n}`);
    return n.toString();
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new HopError('HOP_BAD_REQUEST', `not an unsigned integer: ${n}`);
  return String(n);
}

/** An identifier (database, table): only [A-Za-z_][A-Za-z0-9_]*, quoted with backquotes. */
export function ident(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new HopError('HOP_BAD_REQUEST', `not an identifier: ${JSON.stringify(name)}`);
  return `\`${name}\``;
}

/** Canonical text of an IP address as hoptrace stores it (record.ts decoder form), or null. */
export function canonicalIp(text: string): string | null {
  const v = isIP(text);
  if (v === 4) return text.split('.').map((p) => String(Number(p))).join('.');
  if (v !== 6) return null;
  // Round-trip through URL to get the RFC 5952 compressed, lower-case form.
  try {
    const host = new URL(`http://[${text}]/`).hostname;
    return host.slice(1, -1);
  } catch {
    return null;
  }
}
