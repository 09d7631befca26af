/**
 * The lab: a small cluster of network namespaces on one machine (ARCHITECTURE.md's
 * incident reproduced end to end). Public surface for the CLI, tests and the demo.
 */
export { labUp, labDown, labStatus, runRequests, workloadStats } from './lab.js';
export type { UpOptions, DownResult, LabStatus, RequestOptions, RequestResult, RequestFlow, ProxyStats, AppStats } from './lab.js';
export { netem, dropRule, dropClear, setClockOffset, applyFix, FIXES, parseDurationMs, parsePercent } from './knobs.js';
export type { DropSpec, DropHook, Fix } from './knobs.js';
export { injectOow } from './incidents.js';
export type { OowResult, OowOptions, OowPacket } from './incidents.js';
export { readState, requireState } from './state.js';
export type { LabState, NodeState, PodState, NamespaceState, InterfaceState, LinkState, NetemState, DropState, ProcessState } from './state.js';
export { planLab, VIP, SIDECAR, NODES, ALL_NETNS } from './topology.js';
export type { LabOptions, NodeName, PodName, Mode } from './topology.js';
export { statePath, labDir } from './paths.js';
export { LabError, type LabErrorCode } from './errors.js';
export { registerLabCommands } from './cli.js';
