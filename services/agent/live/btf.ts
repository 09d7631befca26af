/**
 * What the running kernel's BTF says: which tracepoints exist (a tp_btf program
 * needs the `btf_trace_<name>` typedef), and the names of kernel enums such as
 * `skb_drop_reason` and `sk_rst_reason`, read from the kernel itself so they
 * never rot across kernel versions.
 */
import { existsSync } from 'node:fs';
import { bindings, BTF_KIND_DATASEC, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF, readI32, readU32, type Ptr } from './libbpf.js';
import { LiveError } from './errors.js';

export const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';

/** struct btf_type: name_off, info (vlen 0-15, kind 24-28), size/type; kind data follows. */
const BTF_TYPE_SIZE = 12;

export function btfKind(info: number): number {
  return (info >>> 24) & 0x1f;
}

export function btfVlen(info: number): number {
  return info & 0xffff;
}

/** Enum value -> name of one BTF enum (32- or 64-bit), with `prefix` stripped. */
export function readEnum(btf: Ptr, name: string, prefix = ''): Map<number, string> | null {
  const { bpf } = bindings();
  let id = bpf.btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
  if (id < 0) id = bpf.btf__find_by_name_kind(btf, name, BTF_KIND_ENUM64);
  if (id < 0) return null;
  const t = bpf.btf__type_by_id(btf, id)!;
  const info = readU32(t, 4);
  const is64 = btfKind(info) === BTF_KIND_ENUM64;
  const stride = is64 ? 12 : 8; // btf_enum {name_off, val} / btf_enum64 {name_off, lo32, hi32}
  const out = new Map<number, string>();
  for (let i = 0; i < btfVlen(info); i++) {
    const off = BTF_TYPE_SIZE + i * stride;
    const full = bpf.btf__name_by_offset(btf, readU32(t, off)) ?? '';
    const value = is64 ? readU32(t, off + 4) : readI32(t, off + 4);
    out.set(value, full.startsWith(prefix) ? full.slice(prefix.length) : full);
  }
  return out;
}

/** Offset of a global variable within a data section of an object's BTF, or -1. */
export function datasecVarOffset(btf: Ptr, section: string, variable: string): number {
  const { bpf } = bindings();
  const id = bpf.btf__find_by_name_kind(btf, section, BTF_KIND_DATASEC);
  if (id < 0) return -1;
  const t = bpf.btf__type_by_id(btf, id)!;
  const vlen = btfVlen(readU32(t, 4));
  for (let i = 0; i < vlen; i++) {
    const off = BTF_TYPE_SIZE + i * 12; // btf_var_secinfo {type, offset, size}
    const v = bpf.btf__type_by_id(btf, readU32(t, off))!;
    if (bpf.btf__name_by_offset(btf, readU32(v, 0)) === variable) return readU32(t, off + 4);
  }
  return -1;
}

export interface KernelBtf {
  hasTracepoint(name: string): boolean;
  enumNames(name: string, prefix?: string): Map<number, string> | null;
  /** Type id of a struct in the kernel's own BTF (not a module's), or 0 when it has none. */
  structId(name: string): number;
  close(): void;
}

/** Opens the running kernel's BTF. Throws HOP_LIVE_NO_BTF when it is absent. */
export function openKernelBtf(): KernelBtf {
  if (!existsSync(VMLINUX_BTF)) {
    throw new LiveError(
      'HOP_LIVE_NO_BTF',
      `no kernel BTF at ${VMLINUX_BTF}: the kernel needs CONFIG_DEBUG_INFO_BTF=y; live capture cannot run (recordings still work)`,
    );
  }
  const { bpf } = bindings();
  let btf = bpf.btf__load_vmlinux_btf();
  if (!btf) throw new LiveError('HOP_LIVE_NO_BTF', `cannot parse kernel BTF at ${VMLINUX_BTF}`);
  return {
    hasTracepoint: (name) => bpf.btf__find_by_name_kind(btf!, `btf_trace_${name}`, BTF_KIND_TYPEDEF) >= 0,
    enumNames: (name, prefix) => readEnum(btf!, name, prefix),
    structId: (name) => Math.max(0, bpf.btf__find_by_name_kind(btf!, name, BTF_KIND_STRUCT)),
    close: () => {
      if (btf) bpf.btf__free(btf);
      btf = null;
    },
  };
}
