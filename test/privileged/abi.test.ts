/**
 * Names and layouts shared between the BPF programs and the agent have not
 * drifted: bpf/maps.bpf.h against services/agent/live/kernel-abi.ts, the
 * shared maps defined once (bpf/shared_maps.bpf.h), and enum hop_stage of
 * bpf/events.h against record.ts. Pure text checks: no privileges needed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Stage } from '../../services/shared/record.js';
import {
  CfgFlag,
  KERNEL_COUNTERS,
  MAX_ADDRS,
  MAX_IFNAMES,
  MAX_NETNS,
  MAX_PORTS,
  NETNS_PROBES,
  NETNS_SLOTS,
  OBJECTS,
  RUN_MAX,
  SHARED_MAP_NAMES,
  SharedMap,
} from '../../services/agent/live/kernel-abi.js';
import { REPO } from './preflight.js';

const read = (f: string) => readFileSync(join(REPO, 'bpf', f), 'utf8');
const maps = read('maps.bpf.h');

function cEnum(text: string, name: string, prefix: string): Record<string, number> {
  const body = new RegExp(`enum ${name} \\{([^}]*)\\}`).exec(text)?.[1];
  if (!body) throw new Error(`enum ${name} not found`);
  const out: Record<string, number> = {};
  for (const m of body.matchAll(/(\w+)\s*=\s*([^,/]+),/g)) out[m[1]!.replace(prefix, '')] = Function(`return (${m[2]})`)() as number;
  return out;
}

function define(name: string): number {
  const m = new RegExp(`#define ${name} (\\d+)`).exec(maps);
  if (!m) throw new Error(`#define ${name} not found`);
  return Number(m[1]);
}

/** The `struct {...} name SEC(".maps");` blocks of a BPF source, by map name. */
function mapDefs(src: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of src.matchAll(/struct \{([^}]*)\} (\w+) SEC\("\.maps"\);/g)) out.set(m[2]!, m[1]!.replace(/\s+/g, ' ').trim());
  return out;
}

describe('kernel/agent ABI of the live capture', () => {
  it('counter indices', () => {
    const c = cEnum(maps, 'hop_counter', 'HOP_CTR_');
    const { MAX, ...named } = c;
    expect(MAX).toBe(KERNEL_COUNTERS.length);
    expect(Object.keys(named).map((k) => k.toLowerCase())).toEqual([...KERNEL_COUNTERS]);
    expect(Object.values(named)).toEqual(KERNEL_COUNTERS.map((_, i) => i));
  });

  it('filter config flags and set sizes', () => {
    expect(cEnum(maps, 'hop_cfg_flag', 'HOP_CFG_')).toEqual(CfgFlag);
    expect([define('HOP_MAX_NETNS'), define('HOP_MAX_ADDRS'), define('HOP_MAX_PORTS'), define('HOP_MAX_IFNAMES')]).toEqual([
      MAX_NETNS,
      MAX_ADDRS,
      MAX_PORTS,
      MAX_IFNAMES,
    ]);
    expect([define('HOP_NETNS_SLOTS'), define('HOP_NETNS_PROBES'), define('HOP_RUN_MAX')]).toEqual([NETNS_SLOTS, NETNS_PROBES, RUN_MAX]);
  });

  it('shared maps are listed in the header and defined once: in shared_maps.bpf.h, which every object includes, or in one object', () => {
    for (const name of SHARED_MAP_NAMES) expect(maps).toContain(` ${name}:`);
    const shared = mapDefs(read('shared_maps.bpf.h'));
    const sources = OBJECTS.map((o) => read(`${o}.bpf.c`));
    sources.forEach((src, i) => expect(src, `${OBJECTS[i]}.bpf.c includes shared_maps.bpf.h`).toContain('#include "shared_maps.bpf.h"'));
    const own = sources.map(mapDefs);
    for (const name of SHARED_MAP_NAMES) {
      const where = [...(shared.has(name) ? ['shared_maps.bpf.h'] : []), ...OBJECTS.filter((_, i) => own[i]!.has(name)).map((o) => `${o}.bpf.c`)];
      expect(where, `${name} defined in`).toHaveLength(1);
    }
    expect(shared.has(SharedMap.EVENTS)).toBe(true);
  });

  it('drop stages', () => {
    expect(cEnum(read('events.h'), 'hop_stage', 'HOP_STAGE_')).toEqual(Stage);
  });
});
