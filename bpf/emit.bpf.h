/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Emission: records reach the ring buffer in runs, not one by one.
 *
 * Each CPU appends its records to a run of its own (hop_runs, shared_maps.bpf.h:
 * a per-CPU array of HOP_RUN_MAX records) and writes the whole run to the ring as
 * one ring record (len = n x 128) once it holds hop_run_records, or when its CPU's
 * timer fires, at most hop_run_flush_ns after the run opened. One
 * bpf_ringbuf_output per run instead of one per record, and the agent copies a run
 * out of the mapping at once (memcpy) instead of record by record.
 *
 * The timer (hop_flushers, one bpf_timer per CPU, pinned to it) bounds how long a
 * record waits on a quiet CPU. A program can be interrupted (softirq over task
 * context) or preempted by another on the same CPU, so a run is taken with an atomic
 * exchange of its busy word: whoever finds it taken writes its record to the ring by
 * itself, and a timer that finds it taken tries again a millisecond later. Records of
 * one CPU keep their order; across CPUs they arrive up to a flush period apart, as
 * the agent's consumers already allow (every record carries its own timestamp).
 *
 * When the agent stops, it runs hop_flush_run on each CPU (BPF_PROG_TEST_RUN with
 * BPF_F_TEST_RUN_ON_CPU) to take the open runs at once instead of waiting for timers.
 *
 * hop_run_records = 1 writes every record on its own, as before runs.
 * Include after shared_maps.bpf.h.
 */
#ifndef HOP_EMIT_BPF_H
#define HOP_EMIT_BPF_H

#define HOP_RUN_RETRY_NS (1000 * 1000)
/* Keeps the compiler from moving a run's stores past the store that frees it. */
#define hop_barrier() asm volatile("" ::: "memory")
#define HOP_CLOCK_MONOTONIC 1 /* uapi time.h */

static __always_inline void hop_count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&hop_counters, &idx);
	if (v)
		__sync_fetch_and_add(v, n);
}

/* Writes n records at rec to the ring buffer as one ring record. Wakes the reader
 * only once hop_wakeup_bytes are waiting: the agent also drains on a timer, so most
 * writes cost no wakeup. */
static __always_inline void hop_output(const void *rec, __u32 n)
{
	if (n == 0 || n > HOP_RUN_MAX)
		return;
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&hop_events, BPF_RB_AVAIL_DATA) >= hop_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&hop_events, (void *)rec, n * sizeof(struct hop_event), flags))
		hop_count_n(HOP_CTR_RINGBUF_FULL, n);
	else
		hop_count_n(HOP_CTR_EMITTED, n);
}

/* With the run taken (busy). */
static __always_inline void hop_run_flush(struct hop_run *r)
{
	hop_output(r->ev, r->count);
	r->count = 0;
}

/* Writes this CPU's open run now; false when an interrupted append holds it (try again later). */
static __always_inline bool hop_flush_this_cpu(void)
{
	__u32 zero = 0;
	struct hop_run *r = bpf_map_lookup_elem(&hop_runs, &zero);
	if (!r)
		return true;
	if (__sync_lock_test_and_set(&r->busy, 1))
		return false;
	hop_run_flush(r);
	hop_barrier();
	r->busy = 0;
	return true;
}

static int hop_flush_timer(void *map, __u32 *key, struct hop_flusher *f)
{
	f->armed = 0;
	if (!hop_flush_this_cpu())
		f->armed = !bpf_timer_start(&f->timer, HOP_RUN_RETRY_NS, BPF_F_TIMER_CPU_PIN);
	return 0;
}

/*
 * Makes sure this CPU's flush timer is pending; nonzero when it cannot. A timer still
 * pending from an earlier run (one that filled up) is kept: it fires sooner than a new
 * one would, and at a high rate a start per run (an hrtimer reprogrammed every 31
 * records) would cost more than the rare partial run it flushes early.
 */
static __always_inline long hop_arm_flush(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct hop_flusher *f = bpf_map_lookup_elem(&hop_flushers, &cpu);
	if (!f)
		return -1;
	if (!f->ready) {
		long err = bpf_timer_init(&f->timer, &hop_flushers, HOP_CLOCK_MONOTONIC);
		if (err && err != -16 /* EBUSY: a nested program got there first */)
			return err;
		err = bpf_timer_set_callback(&f->timer, hop_flush_timer);
		if (err)
			return err;
		f->ready = 1;
	}
	if (f->armed)
		return 0;
	long err = bpf_timer_start(&f->timer, hop_run_flush_ns, BPF_F_TIMER_CPU_PIN);
	f->armed = !err;
	return err;
}

/* Run by the agent on one CPU (never attached): writes that CPU's open run now.
 * Returns 1 when an interrupted append holds the run (try again), else 0. */
SEC("raw_tp")
int hop_flush_run(void *ctx)
{
	return hop_flush_this_cpu() ? 0 : 1;
}

static __always_inline void hop_emit(struct hop_event *e)
{
	e->abi_version = HOP_ABI_VERSION;
	if (hop_run_records > 1) {
		__u32 zero = 0;
		struct hop_run *r = bpf_map_lookup_elem(&hop_runs, &zero);
		if (r && !__sync_lock_test_and_set(&r->busy, 1)) {
			__u32 n = r->count;
			if (n < HOP_RUN_MAX) {
				__builtin_memcpy(&r->ev[n], e, sizeof(*e));
				r->count = ++n;
				/* a run's first record starts the timer; a run that cannot be timed goes now */
				if (n >= hop_run_records || (n == 1 && hop_arm_flush()))
					hop_run_flush(r);
			} else {
				hop_run_flush(r); /* not reached: a run is written once it holds hop_run_records */
			}
			hop_barrier();
			r->busy = 0;
			return;
		}
	}
	hop_output(e, 1);
}

#endif
