/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The maps every object shares with the agent (types in maps.bpf.h), defined once
 * and included by each *.bpf.c: each object still gets its own definitions, and the
 * agent creates every map once and hands the same fd to all objects
 * (bpf_map__reuse_fd), so all programs feed one ring buffer and obey one filter set.
 * Include after maps.bpf.h.
 */
#ifndef HOP_SHARED_MAPS_BPF_H
#define HOP_SHARED_MAPS_BPF_H

/* Set by the agent before load. */
const volatile __u64 hop_wakeup_bytes = 1 << 20;
/* Also set by the agent (emit.bpf.h): records per run (1..HOP_RUN_MAX), and how long the
 * first record of a run may wait for the rest. */
const volatile __u64 hop_run_records = HOP_RUN_MAX;
const volatile __u64 hop_run_flush_ns = 10 * 1000 * 1000;


struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} hop_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hop_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hop_filter_cfg);
} hop_cfg SEC(".maps");

/* Owned namespaces: two open-addressed tables of inodes (0 = empty), so the agent
 * fills one while the programs read the other, then flips hop_filter_cfg.netns_base.
 * An array, not a hash map: its lookups are inlined, where a hash lookup cost ~45 ns
 * on every packet at every device (npm run bench:live -- --sections kernel). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * HOP_NETNS_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} hop_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HOP_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hop_addr_key);
	__type(value, __u8);
} hop_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HOP_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} hop_ports SEC(".maps");

/* Each CPU's run of records not yet written (emit.bpf.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hop_run);
} hop_runs SEC(".maps");

/* One per possible CPU (max_entries set by the agent), indexed by CPU id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hop_flusher);
} hop_flushers SEC(".maps");

#endif
