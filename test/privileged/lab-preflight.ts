/**
 * Preflight of the lab suite: can this machine build the namespace lab? Each check tries
 * the very feature the lab uses, in a throwaway namespace of its own, and names what is
 * missing. describeLab() FAILS the suite when something is missing, unless the run sets
 * HOPTRACE_ALLOW_SKIP_PRIVILEGED=1: then it skips, and says why. It never skips silently.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lbIptables, sidecarIptables } from '../../services/lab/topology.js';
import { python } from '../../services/lab/paths.js';
import { describeGated } from './preflight.js';

const TOOLS = ['ip', 'iptables', 'iptables-restore', 'iptables-save', 'tc', 'conntrack', 'ss', 'sysctl'] as const;

function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

function why(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
}

function onPath(tool: string): boolean {
  try {
    run('sh', ['-c', 'command -v "$1"', 'sh', tool]);
    return true;
  } catch {
    return false;
  }
}

let cached: string[] | null = null;

/** Names of the missing features (with the error each gave); empty when the lab can run. */
export function labPreflight(): string[] {
  if (cached) return cached;
  const missing: string[] = [];
  for (const t of TOOLS) if (!onPath(t)) missing.push(`tool ${t} (not on PATH)`);
  if (!existsSync('/usr/bin/python3') && !onPath('python3')) missing.push('python3 (raw-socket workloads)');
  if (process.getuid?.() !== 0) missing.push('root (network namespaces, iptables and tc need CAP_SYS_ADMIN and CAP_NET_ADMIN)');
  if (missing.length) return (cached = missing);

  const ns = `hopt-lab-pf-${process.pid}`;
  try {
    run('ip', ['netns', 'add', ns]);
  } catch (err) {
    return (cached = [`network namespaces (ip netns add): ${why(err)}`]);
  }
  const inNs = (cmd: string, args: string[], input?: string) => run('ip', ['netns', 'exec', ns, cmd, ...args], input);
  const checks: [string, () => void][] = [
    ['veth pairs created inside a namespace (ip link add ... netns ... type veth)', () => run('ip', ['link', 'add', 'pf0', 'netns', ns, 'type', 'veth', 'peer', 'name', 'pf1', 'netns', ns])],
    ['per-namespace sysctls (ip_forward, rp_filter, disable_ipv6)', () => inNs('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv6.conf.all.disable_ipv6=1'])],
    [
      'iptables nat in a namespace: DNAT, statistic, MARK, MASQUERADE --random-fully (kube-proxy rules)',
      () => inNs('iptables-restore', ['-w'], lbIptables([{ pod: 'server', ip: '10.244.3.2', port: 8080, node: 'node-c' }, { pod: 'server2', ip: '10.244.3.3', port: 8080, node: 'node-c' }], true)),
    ],
    ['iptables nat REDIRECT in a namespace (the sidecar rule)', () => inNs('iptables-restore', ['-w', '--noflush'], sidecarIptables())],
    ['iptables filter DROP with comment and statistic (lab drop)', () => inNs('iptables', ['-w', '-A', 'FORWARD', '-p', 'tcp', '-m', 'statistic', '--mode', 'random', '--probability', '0.5', '-m', 'comment', '--comment', 'pf', '-j', 'DROP'])],
    ['iptables mangle conntrack INVALID match (lab fix drop-invalid)', () => inNs('iptables', ['-w', '-t', 'mangle', '-A', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'])],
    ['per-namespace conntrack sysctl net.netfilter.nf_conntrack_tcp_be_liberal', () => inNs('sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_be_liberal=0'])],
    ['conntrack tool in a namespace (conntrack -S, -L)', () => inNs('conntrack', ['-S'])],
    [
      'tc clsact + u32 + mirred redirect (the wire namespaces)',
      () => {
        run('ip', ['-n', ns, 'link', 'set', 'pf0', 'up']);
        run('ip', ['-n', ns, 'link', 'set', 'pf1', 'up']);
        run('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'pf0', 'clsact']);
        run('tc', ['-n', ns, 'filter', 'add', 'dev', 'pf0', 'ingress', 'protocol', 'all', 'prio', '1', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', 'pf1']);
      },
    ],
    [
      'AF_PACKET (with PACKET_VNET_HDR) and raw IP sockets from python3 (wire relay, inject-oow)',
      () =>
        inNs(python(), [
          '-c',
          'import socket; p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); p.setsockopt(263, 15, 1); p.bind(("pf0", 0)); socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)',
        ]),
    ],
  ];
  try {
    for (const [feature, check] of checks) {
      try {
        check();
      } catch (err) {
        missing.push(`${feature}: ${why(err)}`);
      }
    }
  } finally {
    try {
      run('ip', ['netns', 'del', ns]);
    } catch {
      // nothing more to do: the name is unique to this process
    }
  }
  return (cached = missing);
}

/** describe() for suites that need the lab: its preflight's gaps fail the suite, or skip it when allowed (describeGated). */
export function describeLab(name: string, body: () => void): void {
  describeGated(name, body, labPreflight());
}
