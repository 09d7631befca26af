// Names shared across C, TypeScript and protobuf are declared in bpf/events.h; this
// test fails when record.ts or hop.proto drift from it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { ABI_VERSION, Flag, Hook, Kind, RECORD_SIZE, TcpState } from '../../services/shared/record.js';

const root = join(__dirname, '../..');
const header = readFileSync(join(root, 'bpf/events.h'), 'utf8');

/** NAME -> value of a C enum in events.h, with the prefix removed. */
function cEnum(name: string, prefix: string): Record<string, number> {
  const body = new RegExp(`enum ${name} \\{([^}]*)\\}`).exec(header)?.[1];
  if (!body) throw new Error(`enum ${name} not found in events.h`);
  const out: Record<string, number> = {};
  for (const m of body.matchAll(/(\w+)\s*=\s*([^,/]+),/g)) out[m[1]!.replace(prefix, '')] = Function(`return (${m[2]})`)() as number;
  return out;
}

const proto = protobuf.loadSync(join(root, 'proto/hoptrace/v1/hop.proto'));
function protoEnum(name: string, prefix: string): Record<string, number> {
  const e = proto.lookupEnum(`hoptrace.v1.${name}`);
  return Object.fromEntries(Object.entries(e.values).map(([k, v]) => [k.replace(prefix, ''), v]));
}

describe('names shared across languages', () => {
  it('event kinds', () => {
    expect(cEnum('hop_kind', 'HOP_KIND_')).toEqual(Kind);
    expect(protoEnum('EventKind', 'EVENT_KIND_')).toEqual(Kind);
  });
  it('hook points', () => {
    expect(cEnum('hop_hook', 'HOP_HOOK_')).toEqual(Hook);
    expect(protoEnum('HookPoint', 'HOOK_POINT_')).toEqual(Hook);
  });
  it('flags', () => {
    expect(cEnum('hop_flag', 'HOP_F_')).toEqual(Flag);
  });
  it('TCP states', () => {
    expect(protoEnum('TcpState', 'TCP_STATE_')).toEqual(TcpState);
  });
  it('ABI version and record size', () => {
    expect(header).toContain(`#define HOP_ABI_VERSION ${ABI_VERSION}\n`);
    expect(header).toContain(`#define HOP_RECORD_SIZE ${RECORD_SIZE}\n`);
  });
});
