/**
 * The lab's state file, `<repo>/var/lab/state.json`: everything a consumer (agent
 * launcher, correlator checker, demo) needs to know about the running lab. Written
 * atomically (temp file + rename) after every change; `version` changes when a field's
 * meaning does.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { LabError } from './errors.js';
import { labDir, statePath } from './paths.js';
import type { Backend, LabOptions, Mode, NodeName, PodName, Route, VIP } from './topology.js';

export const STATE_VERSION = 1;

export interface InterfaceState {
  /** Interface name inside its namespace. */
  name: string;
  /** ifindex inside its namespace (what skb->dev->ifindex shows). */
  ifindex: number;
  mac: string;
  /** IPv4 address and prefix; point-to-point pod links also name the peer address. */
  address: string;
  prefix: number;
  peerAddress?: string;
  /** The interface at the other end of the link (through the wire namespace, if any). */
  peer: { netns: string; name: string };
  /** Inter-node links only: the wire-namespace interface this veth is actually paired with. */
  via?: { netns: string; name: string };
}

export interface NamespaceState {
  kind: 'node' | 'pod';
  node: NodeName;
  pod?: PodName;
  /** Inode of the namespace (/run/netns/<name>): the kernel's net->ns.inum, for scoping capture. */
  inode: number;
  interfaces: InterfaceState[];
  routes: Route[];
  /** Sysctls the lab set here, as written. */
  sysctls: Record<string, string>;
}

export interface NodeState {
  /** The node's own (routing) namespace. */
  netns: string;
  role: 'client' | 'lb' | 'server';
  /** Every namespace that belongs to this node: its own first, then its pods'. An agent for this node scopes capture to these. */
  namespaces: string[];
  pods: PodName[];
  /** Clock offset the agent for this node should apply to its timestamps, ms (can be negative). */
  clockOffsetMs: number;
}

export interface PodState {
  netns: string;
  node: NodeName;
  role: 'client' | 'backend';
  ip: string;
  ifname: string;
  gateway: string;
  /** Node-side veth of this pod (in the node's namespace). */
  hostIf: string;
  /** Backends only: the sidecar capture and the ports of the app and proxy. */
  sidecar?: { appPort: number; proxyPort: number; adminPort: number; redirect: string };
}

export interface NetemState {
  delayMs: number;
  jitterMs: number;
  lossPct: number;
}

export interface LinkState {
  /** Sending end (its egress) and receiving end (its ingress). */
  from: { netns: string; ifname: string };
  to: { netns: string; ifname: string };
  /**
   * Where this direction's delay/loss is made: frames arriving on `in` in the wire namespace
   * are relayed out of `out`. Null for pod links (direct veths: netem needs sch_netem there).
   */
  wire: { netns: string; in: string; out: string } | null;
  netem: NetemState | null;
}

/** A wire namespace: the middle of an inter-node link, no addresses, frames only. */
export interface WireState {
  inode: number;
  interfaces: { name: string; ifindex: number; attachedTo: { netns: string; name: string } }[];
}

export interface DropState {
  /** Stable id for removal (`lab drop <where> --clear` removes all of a namespace's). */
  id: string;
  netns: string;
  /** Built-in chain the rule hangs off (a HOPT-DROP-<chain> chain jumped to from it). */
  hook: 'FORWARD' | 'INPUT' | 'OUTPUT';
  /** The match, as iptables arguments, before `-j`. */
  match: string[];
  /** What `-j` names, with its options: DROP (absent in states written before REJECT), or REJECT --reject-with .... */
  target?: string[];
}

export interface ProcessState {
  /** app-server, proxy-server, wire-lb-c (a link's delay relay), ... */
  name: string;
  netns: string;
  pid: number;
  argv: string[];
  log: string;
}

export interface LabState {
  version: number;
  createdAt: string;
  options: LabOptions;
  /** snat: backends see node-lb (10.10.2.1) as the client; direct: they see the client pod. */
  mode: Mode;
  vip: typeof VIP;
  backends: Backend[];
  /** How node-lb spreads connections over backends (kube-proxy's statistic random). */
  balance: 'random';
  nodes: Record<NodeName, NodeState>;
  pods: Partial<Record<PodName, PodState>>;
  namespaces: Record<string, NamespaceState>;
  /** Directional links by id `<from>-<to>` (a, lb, c, client, server, server2), e.g. `lb-c`. */
  links: Record<string, LinkState>;
  /** Wire namespaces of the inter-node links, by name (agents need not watch them). */
  wires: Record<string, WireState>;
  drops: DropState[];
  /** Fixes of the seed incident applied in the backend pods (`lab fix`). */
  fixes: ('be-liberal' | 'drop-invalid')[];
  processes: ProcessState[];
}

export function readState(): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LabError('HOP_LAB_NOT_UP', `cannot read ${statePath}`, { cause: err });
  }
  try {
    const s = JSON.parse(text) as LabState;
    if (s.version !== STATE_VERSION) throw new Error(`state version ${String(s.version)}, expected ${STATE_VERSION}`);
    return s;
  } catch (err) {
    throw new LabError('HOP_LAB_NOT_UP', `${statePath} is not a lab state file; run \`hoptrace lab down\``, { cause: err });
  }
}

export function requireState(): LabState {
  const s = readState();
  if (!s) throw new LabError('HOP_LAB_NOT_UP', 'the lab is not up (no var/lab/state.json); run `hoptrace lab up`');
  return s;
}

export function writeState(s: LabState): void {
  mkdirSync(labDir, { recursive: true });
  const tmp = `${statePath}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(s, null, 2)}\n`);
  renameSync(tmp, statePath);
}

export function removeState(): void {
  rmSync(statePath, { force: true });
}
