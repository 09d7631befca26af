import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, optionsTable } from '../../services/shared/config.js';
import { canonicalIp, ident, str, uint } from '../../services/shared/sql.js';

describe('config', () => {
  it('defaults, environment, overrides; frozen', () => {
    const c = loadConfig({ apiPort: 9 }, { HOPTRACE_KAFKA_BROKERS: 'a:1, b:2', HOPTRACE_BATCH_RECORDS: '10' });
    expect(c.kafkaBrokers).toEqual(['a:1', 'b:2']);
    expect(c.batchRecords).toBe(10);
    expect(c.apiPort).toBe(9);
    expect(c.groupId).toBe('hoptrace-correlator');
    expect(Object.isFrozen(c)).toBe(true);
  });
  it.each([
    [{ HOPTRACE_BATCH_RECORDS: '0' }, /batchRecords \(HOPTRACE_BATCH_RECORDS\).*\[1, 65536\]/],
    [{ HOPTRACE_API_PORT: '80x' }, /apiPort/],
    [{ HOPTRACE_KAFKA_BROKERS: 'nohostport' }, /kafkaBrokers/],
    [{ HOPTRACE_CLICKHOUSE_DB: 'x; DROP TABLE y' }, /clickhouseDatabase/],
    [{ HOPTRACE_LOG_LEVEL: 'loud' }, /logLevel/],
  ])('rejects %o naming the option', (env, msg) => {
    expect(() => loadConfig({}, env)).toThrow(msg);
  });
  it('documents every option, and the README shows the same table', () => {
    const table = optionsTable();
    expect(table).toContain('HOPTRACE_CLICKHOUSE_URL');
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    for (const row of table.split('\n').slice(2)) expect(readme, 'README options table is stale: paste `bin/hoptrace options`').toContain(row);
  });
});

describe('sql values', () => {
  it.each([
    ["plain", "'plain'"],
    ["it's", "'it\\'s'"],
    ['back\\slash', "'back\\\\slash'"],
    ["'; DROP TABLE hop_events; --", "'\\'; DROP TABLE hop_events; --'"],
    ['nul\0byte\n', "'nul\\x00byte\\x0a'"],
  ])('str(%j)', (input, out) => expect(str(input)).toBe(out));
  it('uint and ident refuse what is not one', () => {
    expect(uint(42)).toBe('42');
    expect(uint(2n ** 64n - 1n)).toBe('18446744073709551615');
    expect(() => uint(-1)).toThrow();
    expect(() => uint(1.5)).toThrow();
    expect(() => uint(2n ** 64n)).toThrow();
    expect(ident('hop_events')).toBe('`hop_events`');
    expect(() => ident('a`b')).toThrow();
  });
  it.each([
    ['10.0.0.1', '10.0.0.1'],
    ['FD00:0:0:0::1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['10.0.0.256', null],
    ["1' OR 1=1", null],
  ])('canonicalIp(%s)', (input, out) => expect(canonicalIp(input)).toBe(out));
});
