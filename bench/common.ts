/** Helpers shared by the benchmarks. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** ClickHouse server CPU seconds; its pid file is under var/run of this checkout or of HOPTRACE_INFRA_DIR (the checkout that started it). */
export function clickhouseCpuS(): number {
  for (const dir of [process.cwd(), process.env.HOPTRACE_INFRA_DIR ?? '']) {
    try {
      const pid = readFileSync(join(dir, 'var/run/clickhouse.pid'), 'utf8').trim();
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      /* next */
    }
  }
  return NaN;
}
