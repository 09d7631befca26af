/**
 * Opens, loads and (separately) attaches the BPF objects (bpf/.output/*.bpf.o), one per
 * concern, sharing one set of maps: the first object that loads creates the
 * shared maps (kernel-abi.ts), the others reuse their fds. A program whose
 * tracepoint is absent, or an object the verifier refuses, is reported as a
 * ProgramProblem and the rest keeps working. close() destroys every link and
 * closes every object, which releases programs and maps: nothing is pinned, so
 * nothing outlives the process.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import koffi from 'koffi';
import { bindings, lastErrno, type Ptr } from './libbpf.js';
import { datasecVarOffset, type KernelBtf } from './btf.js';
import { LiveError, type ProgramProblem } from './errors.js';
import type { DeviceHooks } from './options.js';
import type { TcxPrograms } from './tcx.js';
import { OBJECTS, RODATA_BTF_NF_CONN, RODATA_RUN_FLUSH_NS, RODATA_RUN_RECORDS, RODATA_WAKEUP_BYTES, SharedMap, SHARED_MAP_NAMES, type ObjectName } from './kernel-abi.js';

/** What each program's absence costs. */
const LOST: Record<string, string> = {
  netif_receive_skb: 'device ingress packets',
  net_dev_queue: 'device egress packets and conntrack (CT) records',
  net_dev_start_xmit: 'time packets spend in a device queue (netem, shaping; devices without a queue have none)',
  kfree_skb: 'drops',
  tcp_send_reset: 'resets sent',
  tcp_receive_reset: 'resets received',
  tcp_retransmit_skb: 'retransmissions',
  inet_sock_set_state: 'TCP socket state changes',
  'tcx/ingress': 'device ingress packets',
  'tcx/egress': 'device egress packets and conntrack (CT) records',
};

/** The tracepoint programs the tc programs replace (net_dev_start_xmit stays a tracepoint: it times the qdisc). */
const TC_REPLACES = new Set(['netif_receive_skb', 'net_dev_queue']);

export interface AttachedProgram {
  object: ObjectName;
  program: string;
  /** Tracepoint name (the part after tp_btf/), or tcx/ingress, tcx/egress. */
  tracepoint: string;
  /** The loaded program's fd (its run-time statistics: programStats in source.ts). */
  fd: number;
}

export interface KernelObjects {
  /** fd of each shared map, by name. */
  readonly maps: ReadonlyMap<string, number>;
  readonly attached: readonly AttachedProgram[];
  readonly problems: readonly ProgramProblem[];
  /** With device hooks 'tc': the loaded tc programs' fds, for tcx links (tcx.ts); else null. */
  readonly tcx: TcxPrograms | null;
  /** fd of hop_flush_run (bpf/emit.bpf.h), run on a CPU to write its open run of records now; -1 if none loaded. */
  readonly flushFd: number;
  /**
   * Attaches every loaded program. Separate from loading so that the filters
   * (netns above all) are in the maps before the first event can fire.
   * Throws HOP_LIVE_NOTHING_ATTACHED (after closing) when none attaches.
   */
  attach(): void;
  /**
   * Links (true) or unlinks (false) one attached tracepoint program, by tracepoint, while
   * the rest keeps running; false if it is not attached here or linking it failed.
   */
  link(tracepoint: string, on: boolean): boolean;
  /** Whether an attached tracepoint program is linked now (see link()). */
  linked(tracepoint: string): boolean;
  /** Destroys the links: no new events. Maps stay readable until close(). */
  detach(): void;
  /** detach(), then closes the objects, which frees programs and maps. */
  close(): void;
}

export interface LoadOptions {
  objDir: string;
  btf: KernelBtf;
  ringBytes: number;
  wakeupBytes: number;
  /** Records per run, 1..RUN_MAX (1: each record its own ring record), and the longest a run's first record waits (emit.bpf.h). */
  runRecords: number;
  runFlushNs: number;
  /** Read conntrack entries in place where the kernel BTF allows (options.ts conntrackInPlace). */
  conntrackInPlace?: boolean;
  /** Objects to load (default all). */
  objects?: readonly ObjectName[];
  /** Default 'tracepoint'. */
  deviceHooks?: DeviceHooks;
}

interface MapShape {
  type: number;
  key: number;
  value: number;
  max: number;
}

const EAGAIN = 11;

function errnoText(e: number): string {
  return e ? ` (errno ${e})` : '';
}

function logTail(lines: string[]): string {
  const keep = lines.filter((l) => l.trim()).slice(-25);
  return keep.length ? `\n${keep.join('\n')}` : '';
}

export function loadObjects(o: LoadOptions): KernelObjects {
  const { bpf, drainLog } = bindings();
  const wanted = o.objects ?? OBJECTS;
  const missing = wanted.filter((n) => !existsSync(join(o.objDir, `${n}.bpf.o`)));
  if (missing.length === wanted.length) {
    throw new LiveError(
      'HOP_LIVE_NO_OBJECTS',
      `no BPF objects in ${o.objDir} (${missing.map((m) => `${m}.bpf.o`).join(', ')}): run \`make -C bpf\``,
    );
  }

  const objs: Ptr[] = [];
  /** Attached tracepoint programs by tracepoint, with their link while linked. */
  const links = new Map<string, { prog: Ptr; link: Ptr | null }>();
  const shared = new Map<string, number>();
  const shapes = new Map<string, MapShape>();
  const attached: AttachedProgram[] = [];
  const problems: ProgramProblem[] = [];
  const loaded: { name: ObjectName; progs: ProgInfo[] }[] = [];
  let flushProg: Ptr | undefined;
  let closed = false;

  const detach = (): void => {
    for (const l of [...links.values()].reverse()) {
      if (l.link) bpf.bpf_link__destroy(l.link);
      l.link = null;
    }
  };
  const setLinked = (tracepoint: string, on: boolean): boolean => {
    const l = links.get(tracepoint);
    if (!l || closed) return false;
    if (on && !l.link) l.link = bpf.bpf_program__attach(l.prog) || null;
    if (!on && l.link) {
      bpf.bpf_link__destroy(l.link);
      l.link = null;
    }
    return on === !!l.link;
  };
  const close = (): void => {
    if (closed) return;
    closed = true;
    detach();
    for (const obj of objs.splice(0).reverse()) bpf.bpf_object__close(obj);
  };

  try {
    for (const name of wanted) {
      const path = join(o.objDir, `${name}.bpf.o`);
      if (!existsSync(path)) {
        problems.push({ program: `${name}.bpf.o`, code: 'HOP_LIVE_NO_OBJECTS', message: `${path} missing`, lost: lostOfObject(name) });
        continue;
      }
      drainLog();
      const obj = bpf.bpf_object__open_file(path, null);
      if (!obj) {
        const e = lastErrno();
        problems.push({
          program: `${name}.bpf.o`,
          code: 'HOP_LIVE_LOAD_FAILED',
          message: `cannot open ${path}${errnoText(e)}${logTail(drainLog())}`,
          lost: lostOfObject(name),
        });
        continue;
      }
      objs.push(obj);

      const progs = programsOf(obj);
      const tc = o.deviceHooks === 'tc';
      let loadable = 0;
      // every object has hop_flush_run; one loaded is enough
      const flushers = progs.filter((p) => p.flush);
      for (const p of flushers) {
        p.wanted = false;
        if (flushProg || p !== flushers[0]) bpf.bpf_program__set_autoload(p.prog, false);
      }
      for (const p of progs) {
        if (p.flush) continue;
        if (p.tc !== tc && (p.tc || TC_REPLACES.has(p.tracepoint))) {
          // the other kind of device hook: not wanted, not a problem
          bpf.bpf_program__set_autoload(p.prog, false);
          p.wanted = false;
          continue;
        }
        if (p.tc || o.btf.hasTracepoint(p.tracepoint)) {
          loadable++;
          continue;
        }
        bpf.bpf_program__set_autoload(p.prog, false);
        problems.push({
          program: p.name,
          code: 'HOP_LIVE_TRACEPOINT_ABSENT',
          message: `tracepoint ${p.tracepoint} is absent on this kernel (no btf_trace_${p.tracepoint} in its BTF)`,
          lost: LOST[p.tracepoint] ?? p.tracepoint,
        });
      }
      if (!loadable) continue;

      setRodataU64(obj, RODATA_WAKEUP_BYTES, BigInt(o.wakeupBytes));
      setRodataU64(obj, RODATA_RUN_RECORDS, BigInt(o.runRecords));
      setRodataU64(obj, RODATA_RUN_FLUSH_NS, BigInt(o.runFlushNs));
      setRodataU64(obj, RODATA_BTF_NF_CONN, BigInt(o.conntrackInPlace === false ? 0 : o.btf.structId('nf_conn')));
      prepareSharedMaps(obj, shared, shapes, o.ringBytes);

      if (bpf.bpf_object__load(obj) !== 0) {
        const e = lastErrno();
        // The verifier gives up with EAGAIN when a signal is pending (libbpf retries 5 times): node
        // --cpu-prof's SIGPROF every millisecond does this to every load.
        const why = e === EAGAIN ? ' (EAGAIN: the verifier was interrupted by signals, as a profiler\'s SIGPROF does; profile the agent with perf and node --perf-basic-prof instead of --cpu-prof)' : '';
        const message = `${name}.bpf.o failed to load${errnoText(e)}${why}${logTail(drainLog())}`;
        for (const p of progs.filter((q) => q.wanted && (q.tc || o.btf.hasTracepoint(q.tracepoint)))) {
          problems.push({
            program: p.name,
            code: 'HOP_LIVE_LOAD_FAILED',
            message,
            lost: LOST[p.tracepoint] ?? p.tracepoint,
          });
        }
        continue;
      }
      for (const m of SHARED_MAP_NAMES) {
        if (shared.has(m)) continue;
        const map = bpf.bpf_object__find_map_by_name(obj, m);
        if (map) shared.set(m, bpf.bpf_map__fd(map));
      }
      loaded.push({ name, progs: progs.filter((p) => p.wanted && (p.tc || o.btf.hasTracepoint(p.tracepoint))) });
      flushProg ??= flushers[0]?.prog;
    }
  } catch (err) {
    close();
    throw err;
  }

  const nothing = (): never => {
    close();
    throw new LiveError(
      'HOP_LIVE_NOTHING_ATTACHED',
      `no BPF program could be attached:\n${problems.map((p) => `  ${p.program}: ${p.code}: ${p.message}`).join('\n')}`,
    );
  };
  if (!loaded.length || !shared.has(SharedMap.EVENTS)) nothing();

  let tcx: TcxPrograms | null = null;
  const attach = (): void => {
    for (const { name, progs } of loaded.splice(0)) {
      for (const p of progs) {
        if (p.tc) {
          // linked per device by tcx.ts; counted as attached once loaded
          const fd = bpf.bpf_program__fd(p.prog);
          tcx ??= { ingress: -1, egress: -1 };
          tcx[p.tracepoint === 'tcx/ingress' ? 'ingress' : 'egress'] = fd;
          attached.push({ object: name, program: p.name, tracepoint: p.tracepoint, fd });
          continue;
        }
        drainLog();
        const link = bpf.bpf_program__attach(p.prog);
        if (!link) {
          const e = lastErrno();
          problems.push({
            program: p.name,
            code: 'HOP_LIVE_ATTACH_FAILED',
            message: `cannot attach ${p.name} to tp_btf/${p.tracepoint}${errnoText(e)}${logTail(drainLog())}`,
            lost: LOST[p.tracepoint] ?? p.tracepoint,
          });
          continue;
        }
        links.set(p.tracepoint, { prog: p.prog, link });
        attached.push({ object: name, program: p.name, tracepoint: p.tracepoint, fd: bpf.bpf_program__fd(p.prog) });
      }
    }
    if (!attached.length) nothing();
    if (tcx && (tcx.ingress < 0 || tcx.egress < 0)) {
      close();
      throw new LiveError('HOP_LIVE_LOAD_FAILED', 'packet.bpf.o has no hop_tc_ingress or hop_tc_egress program: rebuild bpf/');
    }
  };
  return {
    maps: shared,
    attached,
    problems,
    get tcx() {
      return tcx;
    },
    flushFd: flushProg ? bpf.bpf_program__fd(flushProg) : -1,
    attach,
    link: setLinked,
    linked: (tracepoint) => !!links.get(tracepoint)?.link,
    detach,
    close,
  };
}

interface ProgInfo {
  prog: Ptr;
  name: string;
  tracepoint: string;
  /** A TC program (section "tc"), attached per device by tcx.ts. */
  tc: boolean;
  /** hop_flush_run (section "raw_tp"): never attached, run by the agent on each CPU. */
  flush: boolean;
  wanted: boolean;
}

function programsOf(obj: Ptr): ProgInfo[] {
  const { bpf } = bindings();
  const out: ProgInfo[] = [];
  for (let p = bpf.bpf_object__next_program(obj, null); p; p = bpf.bpf_object__next_program(obj, p)) {
    const sec = bpf.bpf_program__section_name(p);
    const name = bpf.bpf_program__name(p);
    const tc = sec === 'tc';
    const tracepoint = tc ? `tcx/${name.endsWith('egress') ? 'egress' : 'ingress'}` : sec.startsWith('tp_btf/') ? sec.slice('tp_btf/'.length) : sec;
    out.push({ prog: p, name, tracepoint, tc, flush: sec === 'raw_tp', wanted: true });
  }
  return out;
}

function lostOfObject(name: ObjectName): string {
  return { packet: 'device packets and conntrack records', drop: 'drops', tcp: 'resets, retransmissions, socket states' }[name];
}

/** Sets a `const volatile __u64` in an object's .rodata; only possible before load. */
function setRodataU64(obj: Ptr, variable: string, value: bigint): void {
  const { bpf } = bindings();
  for (let m = bpf.bpf_object__next_map(obj, null); m; m = bpf.bpf_object__next_map(obj, m)) {
    if (!bpf.bpf_map__name(m).endsWith('.rodata')) continue;
    const btf = bpf.bpf_object__btf(obj);
    const off = btf ? datasecVarOffset(btf, '.rodata', variable) : -1;
    const size: [number] = [0];
    const data = bpf.bpf_map__initial_value(m, size);
    if (off < 0 || !data || off + 8 > size[0]) {
      throw new LiveError('HOP_LIVE_LOAD_FAILED', `object has no .rodata variable ${variable}: rebuild bpf/`);
    }
    koffi.encode(data, off, 'uint64', value);
    return;
  }
  throw new LiveError('HOP_LIVE_LOAD_FAILED', `object has no .rodata section (wants ${variable}): rebuild bpf/`);
}

/** Sizes the ring buffer and the per-CPU flush timers, or points the object's shared maps at the fds created by an earlier object. */
function prepareSharedMaps(obj: Ptr, shared: Map<string, number>, shapes: Map<string, MapShape>, ringBytes: number): void {
  const { bpf } = bindings();
  for (const name of SHARED_MAP_NAMES) {
    const map = bpf.bpf_object__find_map_by_name(obj, name);
    if (!map) continue;
    if (name === SharedMap.EVENTS) bpf.bpf_map__set_max_entries(map, ringBytes);
    if (name === SharedMap.FLUSHERS) bpf.bpf_map__set_max_entries(map, bpf.libbpf_num_possible_cpus());
    const shape: MapShape = {
      type: bpf.bpf_map__type(map),
      key: bpf.bpf_map__key_size(map),
      value: bpf.bpf_map__value_size(map),
      max: bpf.bpf_map__max_entries(map),
    };
    const seen = shapes.get(name);
    if (!seen) {
      shapes.set(name, shape);
    } else if (seen.type !== shape.type || seen.key !== shape.key || seen.value !== shape.value || seen.max !== shape.max) {
      throw new LiveError(
        'HOP_LIVE_LOAD_FAILED',
        `shared map ${name} differs between objects (${JSON.stringify(seen)} vs ${JSON.stringify(shape)}): bpf/*.bpf.c drifted from bpf/maps.bpf.h`,
      );
    }
    const fd = shared.get(name);
    if (fd !== undefined && bpf.bpf_map__reuse_fd(map, fd) !== 0) {
      throw new LiveError('HOP_LIVE_LOAD_FAILED', `cannot share map ${name}${errnoText(lastErrno())}`);
    }
  }
}
