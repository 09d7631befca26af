/**
 * Parts of the device program (bpf/packet.bpf.c on_device) that `npm run bench:kernel-ab --
 * --ablate ...` can remove, one at a time, to measure what each costs per run on the same
 * packets. perf cannot see inside a BPF program on these VMs (no hardware counters, and
 * sampling moves their throughput), so this profile is by subtraction.
 *
 * Each part is a set of exact text edits to a copy of packet.bpf.c. An edit whose text is no
 * longer in the program fails the bench: the program changed, so update the edit.
 * `hop_keep(e)` keeps the record's stores alive where a removed part would let the compiler
 * drop them with it (an empty asm that takes the record's address and clobbers memory).
 */
import { readFileSync, writeFileSync } from 'node:fs';

export interface Ablation {
  part: string;
  what: string;
  edits: [from: string, to: string][];
}

const KEEP = '#define hop_keep(p) asm volatile("" : : "r"(p) : "memory")\n';
const FIRST_LINE = '\tconst struct hop_filter_cfg *cfg = hop_cfg_get(&hop_cfg);\n\tconst struct net_device *dev = skb->dev;\n';
const AFTER_PARSE = '\t__u32 why = hop_tuple_admit(cfg, &hop_addrs, &hop_ports, e);\n';
const CT = '\tstruct nf_conn *ct = hop_fill_ct(e, skb, !ingress);\n\tif (ct)\n\t\tmaybe_emit_ct(e, ct);\n';
const EMIT = '\thop_emit(e);\n\treturn 0;\n}\n\nSEC("tp_btf/netif_receive_skb")';

export const ABLATIONS: readonly Ablation[] = [
  { part: 'everything', what: 'the program returns at once: what is left is its call (tcx or tracepoint) and the stats clock', edits: [[FIRST_LINE, '\treturn 0;\n' + FIRST_LINE]] },
  { part: 'after-parse', what: 'everything after the header parse (filters, connection, clock, conntrack, emission)', edits: [[AFTER_PARSE, '\thop_keep(e);\n\treturn 0;\n' + AFTER_PARSE]] },
  { part: 'filters', what: 'the address, port and protocol filters (hop_tuple_admit)', edits: [[AFTER_PARSE, '\t__u32 why = 0;\n']] },
  { part: 'connection', what: "the connection slot: identity, ISNs and sampling choice (hop_conn_packet)", edits: [['\tif (!hop_conn_packet(cfg, &hop_conns, e)) {', '\tif (0) {']] },
  { part: 'clock', what: 'the record\'s timestamp (bpf_ktime_get_ns)', edits: [['\te->ts_ns = bpf_ktime_get_ns();', '\te->ts_ns = 1;']] },
  { part: 'conntrack', what: "the skb's conntrack entry and the CT records (hop_fill_ct, maybe_emit_ct)", edits: [[CT, '']] },
  { part: 'ct-records', what: 'the CT record check and its records only (maybe_emit_ct)', edits: [[CT, '\tstruct nf_conn *ct = hop_fill_ct(e, skb, !ingress);\n\t(void)ct;\n']] },
  { part: 'emission', what: "the record's copy into this CPU's run and the run's write to the ring (hop_emit)", edits: [[EMIT, EMIT.replace('\thop_emit(e);', '\thop_keep(e);')]] },
];

/** The part named `part`; an error listing the parts when there is none. */
export function ablation(part: string): Ablation {
  const a = ABLATIONS.find((x) => x.part === part);
  if (!a) throw new Error(`--ablate: no part ${JSON.stringify(part)} (all, ${ABLATIONS.map((x) => x.part).join(', ')})`);
  return a;
}

/** Removes part `a` from the packet.bpf.c at `file`, in place. */
export function ablate(file: string, a: Ablation): void {
  let src = readFileSync(file, 'utf8');
  // hop_keep's definition goes in first, before the program's license, checked like the part's own edits
  const license: [string, string] = ['char LICENSE[]', KEEP + '\nchar LICENSE[]'];
  for (const [from, to] of [license, ...a.edits]) {
    if (!src.includes(from)) throw new Error(`--ablate ${a.part}: ${JSON.stringify(from.slice(0, 60))}... is no longer in ${file}; update bench/live/ablations.ts`);
    src = src.replace(from, to);
  }
  writeFileSync(file, src);
}
