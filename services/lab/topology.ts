/**
 * The lab's topology as data: namespaces, veth pairs, addresses, routes, sysctls and
 * firewall rules, computed from the options without touching the system. lab.ts applies
 * it; the state file records it for consumers (agents, correlator checks, the demo).
 *
 *   hopt-pod-client      hopt-node-a               hopt-node-lb               hopt-node-c        hopt-pod-server
 *   eth0 10.244.1.2 ── veth-client 10.244.1.1                                     veth-server ──── eth0 10.244.3.2
 *                      eth-lb 10.10.1.1 ═[wire a-lb]═ eth-a 10.10.1.2                              (hopt-pod-server2
 *                                                     eth-c 10.10.2.1 ═[wire lb-c]═ eth-lb 10.10.2.2    eth0 10.244.3.3)
 *                                                     VIP 10.96.0.10:80 -> backends :8080 (DNAT, optional SNAT)
 *
 * Pod links are point-to-point (/32 with a peer address, Calico style); node links are /24s.
 * Routes are static; node-c sends everything for other nodes back through node-lb, so
 * un-SNATed replies pass the conntrack entry that undoes the DNAT.
 *
 * Every namespace is created by the lab and named hopt-node-* / hopt-pod-* / hopt-lab-*;
 * nothing is connected to the host's own network namespace, so no lab packet can leave it.
 *
 * Each inter-node link (a-lb, lb-c) runs through a "wire" namespace (hopt-lab-wire-*):
 * two veths joined by tc mirred redirects, invisible to the nodes (their interfaces still
 * face each other's addresses and MACs). This kernel has no netem, so delay and loss are
 * made there by a user-space relay (workload/wire.py) while a link has them; the time is
 * then spent on the link, between one node's transmit and the next node's receive.
 */

export type NodeName = 'node-a' | 'node-lb' | 'node-c';
export type PodName = 'client' | 'server' | 'server2';
export type Mode = 'snat' | 'direct';

export interface LabOptions {
  /** Masquerade VIP traffic on node-lb (backends see 10.10.2.1) instead of preserving the client IP. */
  snat: boolean;
  /** Backend pods behind the VIP on node-c: `server`, and `server2` when 2. */
  backends: 1 | 2;
  /**
   * net.netfilter.nf_conntrack_tcp_be_liberal on node-lb. On (the default) node-lb's
   * conntrack passes an out-of-window segment and NATs it, so inject-oow's segment reaches
   * the server pod, whose own conntrack (be_liberal=0) marks it INVALID. Off, node-lb marks
   * it INVALID itself and does not translate it; with no route to the VIP it is dropped there
   * and the client's connection survives.
   */
  lbLiberal: boolean;
  /** Clock offset per node, ms, for whoever starts the agents (the lab only records it). */
  clockOffsetsMs: Partial<Record<NodeName, number>>;
}

export const defaultOptions: LabOptions = Object.freeze({ snat: false, backends: 1, lbLiberal: true, clockOffsetsMs: {} });

export const NODES: readonly NodeName[] = ['node-a', 'node-lb', 'node-c'];
/** Every namespace the lab may create: `down` removes exactly these (and no other hopt-*). */
export const ALL_NETNS: readonly string[] = [
  'hopt-pod-client',
  'hopt-pod-server',
  'hopt-pod-server2',
  'hopt-node-a',
  'hopt-node-lb',
  'hopt-node-c',
  'hopt-lab-wire-a-lb',
  'hopt-lab-wire-lb-c',
];

export const VIP = Object.freeze({ service: 'web', ip: '10.96.0.10', port: 80, protocol: 'tcp' as const });
export const SIDECAR = Object.freeze({
  /** The service port: the app listens on 0.0.0.0:<appPort>, the REDIRECT matches it. */
  appPort: 8080,
  /** The proxy's inbound port (Istio's 15006). */
  proxyPort: 15006,
  /** The proxy's admin/stats endpoint, on 127.0.0.1 in the pod. */
  adminPort: 15000,
});
/** kube-proxy's masquerade mark. */
const MASQ_MARK = '0x4000/0x4000';

export interface Route {
  dst: string;
  via: string;
}

/** One end of a veth pair. */
export interface VethEnd {
  netns: string;
  ifname: string;
  /** IPv4 address on this end. */
  address: string;
  /** Prefix of `address` (24), or 32 with `peerAddress` for a point-to-point pod link. */
  prefix: number;
  peerAddress?: string;
}

export interface NamespacePlan {
  netns: string;
  kind: 'node' | 'pod';
  node: NodeName;
  pod?: PodName;
  /** Short name used in link ids: a, lb, c, client, server, server2. */
  key: string;
  sysctls: Record<string, string>;
  routes: Route[];
  /** iptables-restore input, if the namespace has rules. */
  iptables?: string;
}

export interface PodPlan {
  name: PodName;
  netns: string;
  node: NodeName;
  role: 'client' | 'backend';
  ip: string;
  ifname: 'eth0';
  gateway: string;
  /** The node-side veth of this pod, in the node's namespace. */
  hostIf: string;
}

export interface Backend {
  pod: PodName;
  ip: string;
  port: number;
  node: NodeName;
}

/** Two namespaces joined by a veth pair, or by two veth pairs through a wire namespace. */
export interface CablePlan {
  a: VethEnd;
  b: VethEnd;
  /** The wire namespace between them, whose interfaces are `w-<key of a>` and `w-<key of b>`. */
  wire?: { netns: string; aIf: string; bIf: string };
}

export interface LinkPlan {
  /** `<from>-<to>` by namespace key, e.g. `lb-c`: packets leaving node-lb towards node-c. */
  id: string;
  from: { netns: string; ifname: string; key: string };
  to: { netns: string; ifname: string; key: string };
  /** Where delay/loss for this direction is made: frames arrive on `in` and leave by `out`. */
  wire?: { netns: string; in: string; out: string };
}

export interface LabPlan {
  mode: Mode;
  options: LabOptions;
  vip: typeof VIP;
  backends: Backend[];
  balance: 'random';
  namespaces: NamespacePlan[];
  cables: CablePlan[];
  pods: PodPlan[];
  links: LinkPlan[];
}

const NODE_NETNS: Record<NodeName, string> = { 'node-a': 'hopt-node-a', 'node-lb': 'hopt-node-lb', 'node-c': 'hopt-node-c' };

/** Sysctls set in every lab namespace, before any interface exists (so `default` applies to them). */
const COMMON_SYSCTLS: Record<string, string> = {
  // IPv6 link-local chatter (DAD, router solicitations) would only be noise for the agents.
  'net.ipv6.conf.all.disable_ipv6': '1',
  'net.ipv6.conf.default.disable_ipv6': '1',
  // New namespaces inherit rp_filter from the host; asymmetric lab routes must not depend on it.
  'net.ipv4.conf.all.rp_filter': '0',
  'net.ipv4.conf.default.rp_filter': '0',
};

export function podPlans(backends: 1 | 2): PodPlan[] {
  const pods: PodPlan[] = [
    { name: 'client', netns: 'hopt-pod-client', node: 'node-a', role: 'client', ip: '10.244.1.2', ifname: 'eth0', gateway: '10.244.1.1', hostIf: 'veth-client' },
    { name: 'server', netns: 'hopt-pod-server', node: 'node-c', role: 'backend', ip: '10.244.3.2', ifname: 'eth0', gateway: '10.244.3.1', hostIf: 'veth-server' },
  ];
  if (backends === 2) pods.push({ name: 'server2', netns: 'hopt-pod-server2', node: 'node-c', role: 'backend', ip: '10.244.3.3', ifname: 'eth0', gateway: '10.244.3.1', hostIf: 'veth-server2' });
  return pods;
}

/** node-lb's nat table: kube-proxy's chain layout (services -> service -> endpoint, mark for masquerade). */
export function lbIptables(backends: Backend[], snat: boolean): string {
  const sep = (b: Backend) => `HOPT-SEP-${b.pod.toUpperCase()}`;
  const lines = ['*nat', ':HOPT-SERVICES - [0:0]', ':HOPT-SVC-WEB - [0:0]', ':HOPT-MARK-MASQ - [0:0]', ':HOPT-POSTROUTING - [0:0]'];
  for (const b of backends) lines.push(`:${sep(b)} - [0:0]`);
  lines.push(
    '-A PREROUTING -j HOPT-SERVICES',
    '-A OUTPUT -j HOPT-SERVICES',
    '-A POSTROUTING -j HOPT-POSTROUTING',
    `-A HOPT-SERVICES -d ${VIP.ip}/32 -p tcp -m tcp --dport ${VIP.port} -j HOPT-SVC-WEB`,
  );
  backends.forEach((b, i) => {
    const left = backends.length - i;
    // kube-proxy's even spread: endpoint i of n is taken with probability 1/(n-i).
    if (left > 1) lines.push(`-A HOPT-SVC-WEB -m statistic --mode random --probability ${(1 / left).toFixed(11)} -j ${sep(b)}`);
    else lines.push(`-A HOPT-SVC-WEB -j ${sep(b)}`);
  });
  for (const b of backends) {
    if (snat) lines.push(`-A ${sep(b)} -j HOPT-MARK-MASQ`);
    lines.push(`-A ${sep(b)} -p tcp -m tcp -j DNAT --to-destination ${b.ip}:${b.port}`);
  }
  lines.push(
    `-A HOPT-MARK-MASQ -j MARK --set-xmark ${MASQ_MARK}`,
    `-A HOPT-POSTROUTING -m mark ! --mark ${MASQ_MARK} -j RETURN`,
    '-A HOPT-POSTROUTING -j MARK --xor-mark 0x4000',
    // Like kube-proxy: a random source port, so the backend-side tuple differs from the client's.
    '-A HOPT-POSTROUTING -j MASQUERADE --random-fully',
    'COMMIT',
  );
  return `${lines.join('\n')}\n`;
}

/** The server pod's sidecar capture rule, as Istio's init container installs it (reduced to one rule). */
export function sidecarIptables(): string {
  return ['*nat', `-A PREROUTING -p tcp -m tcp --dport ${SIDECAR.appPort} -j REDIRECT --to-ports ${SIDECAR.proxyPort}`, 'COMMIT', ''].join('\n');
}

export function planLab(options: LabOptions): LabPlan {
  const pods = podPlans(options.backends);
  const backends: Backend[] = pods.filter((p) => p.role === 'backend').map((p) => ({ pod: p.name, ip: p.ip, port: SIDECAR.appPort, node: p.node }));
  const conntrack = (liberal: boolean) => ({ 'net.netfilter.nf_conntrack_tcp_be_liberal': liberal ? '1' : '0' });

  const namespaces: NamespacePlan[] = [
    {
      netns: 'hopt-node-a',
      kind: 'node',
      node: 'node-a',
      key: 'a',
      sysctls: { ...COMMON_SYSCTLS, 'net.ipv4.ip_forward': '1', ...conntrack(false) },
      routes: [
        { dst: '10.96.0.0/12', via: '10.10.1.2' },
        { dst: '10.244.0.0/16', via: '10.10.1.2' },
        { dst: '10.10.2.0/24', via: '10.10.1.2' },
      ],
    },
    {
      netns: 'hopt-node-lb',
      kind: 'node',
      node: 'node-lb',
      key: 'lb',
      sysctls: { ...COMMON_SYSCTLS, 'net.ipv4.ip_forward': '1', ...conntrack(options.lbLiberal) },
      routes: [
        { dst: '10.244.1.0/24', via: '10.10.1.1' },
        { dst: '10.244.3.0/24', via: '10.10.2.2' },
      ],
      iptables: lbIptables(backends, options.snat),
    },
    {
      netns: 'hopt-node-c',
      kind: 'node',
      node: 'node-c',
      key: 'c',
      sysctls: { ...COMMON_SYSCTLS, 'net.ipv4.ip_forward': '1', ...conntrack(false) },
      // Everything not on this node goes back through node-lb, so un-SNATed replies
      // pass the conntrack entry that must undo the DNAT.
      routes: [
        { dst: '10.244.0.0/16', via: '10.10.2.1' },
        { dst: '10.96.0.0/12', via: '10.10.2.1' },
        { dst: '10.10.1.0/24', via: '10.10.2.1' },
      ],
    },
  ];
  for (const p of pods) {
    namespaces.push({
      netns: p.netns,
      kind: 'pod',
      node: p.node,
      pod: p.name,
      key: p.name,
      // be_liberal=0 (the kernel default) is what lets an out-of-window segment bypass the REDIRECT.
      sysctls: { ...COMMON_SYSCTLS, ...conntrack(false) },
      routes: [{ dst: 'default', via: p.gateway }],
      iptables: p.role === 'backend' ? sidecarIptables() : undefined,
    });
  }

  const wire = (a: string, b: string) => ({ netns: `hopt-lab-wire-${a}-${b}`, aIf: `w-${a}`, bIf: `w-${b}` });
  const cables: CablePlan[] = [
    {
      a: { netns: 'hopt-node-a', ifname: 'eth-lb', address: '10.10.1.1', prefix: 24 },
      b: { netns: 'hopt-node-lb', ifname: 'eth-a', address: '10.10.1.2', prefix: 24 },
      wire: wire('a', 'lb'),
    },
    {
      a: { netns: 'hopt-node-lb', ifname: 'eth-c', address: '10.10.2.1', prefix: 24 },
      b: { netns: 'hopt-node-c', ifname: 'eth-lb', address: '10.10.2.2', prefix: 24 },
      wire: wire('lb', 'c'),
    },
  ];
  for (const p of pods) {
    cables.push({
      a: { netns: p.netns, ifname: p.ifname, address: p.ip, prefix: 32, peerAddress: p.gateway },
      b: { netns: NODE_NETNS[p.node], ifname: p.hostIf, address: p.gateway, prefix: 32, peerAddress: p.ip },
    });
  }

  const keyOf = new Map(namespaces.map((n) => [n.netns, n.key]));
  const links: LinkPlan[] = [];
  for (const c of cables) {
    const ka = keyOf.get(c.a.netns)!;
    const kb = keyOf.get(c.b.netns)!;
    const end = (e: VethEnd, key: string) => ({ netns: e.netns, ifname: e.ifname, key });
    links.push({ id: `${ka}-${kb}`, from: end(c.a, ka), to: end(c.b, kb), ...(c.wire ? { wire: { netns: c.wire.netns, in: c.wire.aIf, out: c.wire.bIf } } : {}) });
    links.push({ id: `${kb}-${ka}`, from: end(c.b, kb), to: end(c.a, ka), ...(c.wire ? { wire: { netns: c.wire.netns, in: c.wire.bIf, out: c.wire.aIf } } : {}) });
  }

  return { mode: options.snat ? 'snat' : 'direct', options, vip: VIP, backends, balance: 'random', namespaces, cables, pods, links };
}

export function nodeNetns(node: NodeName): string {
  return NODE_NETNS[node];
}

export function isNodeName(s: string): s is NodeName {
  return (NODES as readonly string[]).includes(s);
}
