/**
 * The user-space mirror of bpf/maps.bpf.h: shared map names, counter indices,
 * filter config layout. test/privileged/abi.test.ts parses the header and checks
 * that these have not drifted.
 */

/** BPF objects (bpf/<name>.bpf.c), in load order: the first to load creates the shared maps. */
export const OBJECTS = ['packet', 'drop', 'tcp'] as const;
export type ObjectName = (typeof OBJECTS)[number];

/** Shared maps, in the order objects define them. One kernel map each, shared by fd. */
export const SharedMap = {
  EVENTS: 'hop_events',
  COUNTERS: 'hop_counters',
  CFG: 'hop_cfg',
  NETNS: 'hop_netns',
  ADDRS: 'hop_addrs',
  PORTS: 'hop_ports',
  IFNAMES: 'hop_ifnames',
  RUNS: 'hop_runs',
  FLUSHERS: 'hop_flushers',
} as const;
export const SHARED_MAP_NAMES: readonly string[] = Object.values(SharedMap);

/** enum hop_counter, as counter names (snake case: they become metric labels). */
export const KERNEL_COUNTERS = [
  'emitted',
  'ringbuf_full',
  'netns_filtered',
  'ifname_filtered',
  'proto_filtered',
  'addr_filtered',
  'port_filtered',
  'sampled_out',
  'not_ip',
  'truncated',
  'no_netns',
  'ct_deduped',
  'queued_egress',
  'sampled_out_seen',
] as const;
export type KernelCounter = (typeof KERNEL_COUNTERS)[number];

/** enum hop_cfg_flag. */
export const CfgFlag = {
  NETNS: 1 << 0,
  ADDR: 1 << 1,
  PORT: 1 << 2,
  PROTO: 1 << 3,
  IFNAME: 1 << 4,
} as const;

/** struct hop_filter_cfg: u32 flags, u32 sample_n, u64 proto_bits[4], u32 netns_base, u32 pad. */
export const FILTER_CFG_SIZE = 48;
/** struct hop_addr_key: u32 prefixlen, u8 addr[16]. */
export const ADDR_KEY_SIZE = 20;
export const IFNAMSIZ = 16;

export const MAX_NETNS = 1024;
/** Slots of one owned-namespace table, and slots probed from an inode's home slot. */
export const NETNS_SLOTS = 8192;
export const NETNS_PROBES = 8;
export const MAX_ADDRS = 256;
export const MAX_PORTS = 256;
export const MAX_IFNAMES = 64;
/** Records per run at most (HOP_RUN_MAX): a CPU's records reach the ring buffer together, as one ring record. */
export const RUN_MAX = 31;

/** Runtime knobs in every object's .rodata, set before load. */
export const RODATA_WAKEUP_BYTES = 'hop_wakeup_bytes';
/** Records per run (1 = every record on its own), and how long a run's first record may wait (emit.bpf.h). */
export const RODATA_RUN_RECORDS = 'hop_run_records';
export const RODATA_RUN_FLUSH_NS = 'hop_run_flush_ns';
/** The kernel BTF id of struct nf_conn (0: conntrack is a module; entries are copied out instead of read in place). */
export const RODATA_BTF_NF_CONN = 'hop_btf_nf_conn';
