/**
 * Live capture: eBPF programs on the running kernel feed the agent.
 * The public surface; everything else in this folder is internal.
 */
export { createLiveSource, describeLiveStatus, type LiveSource, type LiveStatus } from './source.js';
export {
  parseLiveOptions,
  parseLiveFilters,
  LIVE_SPEC,
  FILTER_SPEC,
  type LiveOptions,
  type LiveOptionsInput,
  type LiveFilters,
  type LiveFiltersInput,
} from './options.js';
export { dropReasonName, resetReasonName, tcpStateName } from './reasons.js';
export { registerLiveMetrics } from './metrics.js';
export { LiveError, type LiveErrorCode, type ProgramProblem } from './errors.js';
export { kernelSymbol, dropLocation, loadKernelSymbols } from './ksyms.js';
