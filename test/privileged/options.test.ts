/**
 * parseLiveOptions / parseLiveFilters and the filter encoding. Pure (no
 * privileges); lives here next to the code it pins until the unit suite takes it.
 */
import { describe, expect, it } from 'vitest';
import { parseLiveFilters, parseLiveOptions, LiveError } from '../../services/agent/live/index.js';
import { deviceHooksOf } from '../../services/agent/live/options.js';
import { encodeFilterCfg, netnsHome, netnsLayout } from '../../services/agent/live/filters.js';
import { NETNS_PROBES, NETNS_SLOTS } from '../../services/agent/live/kernel-abi.js';
import { CfgFlag } from '../../services/agent/live/kernel-abi.js';
import { checkCapabilities } from '../../services/agent/live/privileges.js';

describe('live options', () => {
  it('defaults: everything captured, sane sizes, frozen', () => {
    const o = parseLiveOptions({ node: 'n1' });
    expect(o).toMatchObject({ node: 'n1', netns: null, interfaces: null, addrs: null, ports: null, protocols: null, sampleN: 1, ringBytes: 1 << 24, queueIdleMs: 10_000 });
    expect(Object.isFrozen(o)).toBe(true);
    expect(parseLiveOptions({ queueIdleMs: '0' }).queueIdleMs).toBe(0);
    expect(() => parseLiveOptions({ queueIdleMs: -1 })).toThrow(/queueIdleMs: expected an integer in \[0, 3600000\]/);
    expect(o.objDir).toMatch(/bpf\/\.output$/);
  });

  it('takes packets at devices by tcx links when every owned namespace can be entered, else by tracepoints', () => {
    const hooks = (o: object) => deviceHooksOf(parseLiveOptions(o));
    expect(hooks({ netns: 'pod-a,/proc/1/ns/net' })).toBe('tc');
    expect(hooks({})).toBe('tracepoint'); // every namespace: no list of devices to link
    expect(hooks({ netns: 'pod-a,4026531840' })).toBe('tracepoint'); // an inode cannot be entered
    expect(hooks({ netns: 'pod-a', deviceHooks: 'tracepoint' })).toBe('tracepoint');
    expect(hooks({ netns: 'pod-a', deviceHooks: 'tc' })).toBe('tc');
    expect(() => hooks({ deviceHooks: 'tc' })).toThrow(/deviceHooks: tc needs netns/);
    // a kernel before 6.6 has no tcx: auto falls back, an explicit tc says why not
    expect(deviceHooksOf(parseLiveOptions({ netns: 'pod-a' }), false)).toBe('tracepoint');
    expect(() => deviceHooksOf(parseLiveOptions({ netns: 'pod-a', deviceHooks: 'tc' }), false)).toThrow(/BPF_TCX_INGRESS, Linux >= 6.6/);
    expect(() => parseLiveOptions({ deviceHooks: 'xdp' })).toThrow(/deviceHooks: expected auto, tc or tracepoint/);
  });

  it('accepts names, paths and inodes for namespaces, and lists as comma-separated strings', () => {
    const o = parseLiveOptions({ netns: 'pod-a, /proc/1/ns/net,4026531840', protocols: 'tcp,17', ports: '80,443' });
    expect(o.netns).toEqual([
      { kind: 'name', name: 'pod-a' },
      { kind: 'path', path: '/proc/1/ns/net' },
      { kind: 'inode', inode: 4026531840 },
    ]);
    expect(o.protocols).toEqual([6, 17]);
    expect(o.ports).toEqual([80, 443]);
  });

  it('turns addresses into IPv4-mapped / IPv6 LPM keys', () => {
    const { addrs } = parseLiveFilters({ addrs: ['10.1.0.0/16', '10.2.3.4', 'fd00::/8', '::ffff:1.2.3.4'] });
    expect(addrs!.map((a) => a.prefixlen)).toEqual([112, 128, 8, 128]);
    expect(Buffer.from(addrs![0]!.addr).toString('hex')).toBe('00000000000000000000ffff0a010000');
    expect(Buffer.from(addrs![2]!.addr).toString('hex')).toBe('fd000000000000000000000000000000');
    expect(Buffer.from(addrs![3]!.addr).toString('hex')).toBe('00000000000000000000ffff01020304');
  });

  it.each([
    [{ ringBytes: 100000 }, /ringBytes: must be a power of two/],
    [{ ringBytes: 1024 }, /ringBytes: expected an integer/],
    [{ ports: [70000] }, /ports\[0\]/],
    [{ ports: [] }, /ports: an empty list/],
    [{ addrs: ['10.0.0.0/33'] }, /addrs\[0\]/],
    [{ addrs: ['example.com'] }, /addrs\[0\]: not an IP address/],
    [{ netns: ['../etc'] }, /netns\[0\]: not a valid netns name/],
    [{ interfaces: ['a-very-long-device-name'] }, /interfaces\[0\]/],
    [{ protocols: ['quic'] }, /protocols\[0\]/],
    [{ sampleN: 0 }, /sampleN/],
    [{ objects: ['packet', 'xdp'] }, /objects\[1\]/],
    [{ colour: 'blue' }, /colour: unknown option/],
  ])('rejects %j naming the field', (input, message) => {
    expect(() => parseLiveOptions(input)).toThrow(message);
    try {
      parseLiveOptions(input);
    } catch (e) {
      expect((e as LiveError).code).toBe('HOP_LIVE_BAD_OPTION');
    }
  });

  it('encodes the kernel filter config', () => {
    const b = encodeFilterCfg(parseLiveFilters({ ports: [80], protocols: ['tcp', 'icmpv6'], sampleN: 8 }), true);
    expect(b.readUInt32LE(0)).toBe(CfgFlag.NETNS | CfgFlag.PORT | CfgFlag.PROTO);
    expect(b.readUInt32LE(4)).toBe(8);
    expect(b.readBigUInt64LE(8)).toBe((1n << 6n) | (1n << 58n));
    expect(encodeFilterCfg(parseLiveFilters({}), true, NETNS_SLOTS).readUInt32LE(40)).toBe(NETNS_SLOTS);
  });

  it('places owned namespaces by linear probing from their home slot, as the kernel looks them up', () => {
    const home = (ino: number) => netnsHome(ino) & (NETNS_SLOTS - 1);
    // hop_mix32 of these inodes, as the C definition computes them (gcc, uint32_t arithmetic).
    expect([netnsHome(1), netnsHome(4026531840)]).toEqual([0xf281be04, 0x6b8bfc45]);
    const first = 4026531840;
    const same: number[] = [];
    for (let ino = first + 1; same.length < NETNS_PROBES; ino++) if (home(ino) === home(first)) same.push(ino);
    const layout = netnsLayout([first, ...same.slice(0, NETNS_PROBES - 1), first]);
    expect(layout.size).toBe(NETNS_PROBES);
    [first, ...same.slice(0, NETNS_PROBES - 1)].forEach((ino, i) => expect(layout.get((home(first) + i) & (NETNS_SLOTS - 1))).toBe(ino));
    // One more with the same home slot would sit past the kernel's probe window.
    expect(() => netnsLayout([first, ...same])).toThrow(expect.objectContaining({ code: 'HOP_LIVE_BAD_OPTION' }));
  });

  it('names the missing privilege', () => {
    expect(() => checkCapabilities(0n, 1000)).toThrow(expect.objectContaining({ code: 'HOP_LIVE_NOT_ROOT' }));
    expect(() => checkCapabilities(0n, 0)).toThrow(expect.objectContaining({ code: 'HOP_LIVE_MISSING_CAPABILITY' }));
    expect(() => checkCapabilities((1n << 39n) | (1n << 38n), 1000)).not.toThrow();
  });
});
