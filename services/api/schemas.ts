/**
 * JSON schemas of the API's routes: request (validated by fastify's ajv) and response
 * (serialised by fast-json-stringify, which drops what a schema does not list; the
 * unit tests compare served bodies with the objects the code built, so the schemas
 * and the TypeScript types in queries.ts and correlator/timeline.ts cannot drift apart
 * silently).
 */
import { TIME_HINT, TIME_PATTERN } from './time.js';

/** Hints for pattern failures, keyed by `<part>/<field>`: ajv would print the regex. */
export const PATTERN_HINTS: Readonly<Record<string, string>> = {
  'querystring/addr': 'must be an IPv4 or IPv6 address',
  'querystring/node': 'must be a node name (letters, digits, . _ - :, at most 253)',
  'querystring/proto': 'must be tcp, udp, icmp, icmpv6, sctp or a protocol number',
  'querystring/since': TIME_HINT,
  'querystring/until': TIME_HINT,
  'querystring/service': 'must be an IPv4 or IPv6 address',
  'querystring/namespace': 'must be a namespace name (letters, digits, . _ - :, at most 253)',
  'querystring/pod': 'must be a pod or namespace name (letters, digits, . _ - :, at most 253)',
  'params/flowId': 'must be a flow id (decimal, up to 20 digits)',
};

const NODE_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$';

export function flowsQuerySchema(maxRows: number) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      addr: { type: 'string', maxLength: 45, pattern: '^[0-9A-Fa-f:.]{2,45}$', description: 'IPv4 or IPv6 address of either endpoint.' },
      port: { type: 'integer', minimum: 0, maximum: 65535, description: 'Port of either endpoint.' },
      node: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'A node the flow crossed.' },
      proto: { type: 'string', maxLength: 6, pattern: '^(tcp|udp|icmp|icmpv6|sctp|[0-9]{1,3})$', description: 'IP protocol name or number.' },
      since: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'Flows active at or after: RFC 3339, epoch ms, or a duration before now (15m, 2h).' },
      until: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'Flows started at or before: same forms as since.' },
      limit: { type: 'integer', minimum: 1, maximum: maxRows, default: Math.min(100, maxRows), description: `Most flows returned (at most ${maxRows}).` },
    },
  } as const;
}

export const timelineParamsSchema = {
  type: 'object',
  required: ['flowId'],
  additionalProperties: false,
  properties: {
    flowId: { type: 'string', maxLength: 20, pattern: '^[0-9]{1,20}$', description: 'Flow id (decimal).' },
  },
} as const;

const endpoint = {
  type: 'object',
  required: ['addr', 'port'],
  properties: { addr: { type: 'string' }, port: { type: 'integer' } },
} as const;

const nsString = { type: 'string', description: 'ns since the Unix epoch, decimal' } as const;

const flowSummary = {
  type: 'object',
  required: ['flowId', 'proto', 'protoName', 'a', 'b', 'firstTsNs', 'lastTsNs', 'first', 'last', 'durationUs', 'events', 'packets', 'bytes', 'drops', 'resets', 'retrans', 'nodes'],
  properties: {
    flowId: { type: 'string' },
    proto: { type: 'integer' },
    protoName: { type: 'string' },
    a: endpoint,
    b: endpoint,
    firstTsNs: nsString,
    lastTsNs: nsString,
    first: { type: 'string' },
    last: { type: 'string' },
    durationUs: { type: 'number' },
    events: { type: 'integer' },
    packets: { type: 'integer' },
    bytes: { type: 'integer' },
    drops: { type: 'integer' },
    resets: { type: 'integer' },
    retrans: { type: 'integer' },
    nodes: { type: 'array', items: { type: 'string' } },
  },
} as const;

const timelineEvent = {
  type: 'object',
  required: [
    'index', 'tsNs', 'time', 'sinceStartUs', 'sincePrevUs', 'agent', 'boot', 'seq', 'node', 'netns', 'netnsIno', 'pod',
    'ifindex', 'ifname', 'hook', 'kind', 'direction', 'src', 'dst', 'tcpFlags', 'tcpSeq', 'tcpAck', 'tcpWindow',
    'payloadLen', 'ipId', 'skState', 'reason', 'ct', 'packet',
  ],
  properties: {
    index: { type: 'integer' },
    tsNs: nsString,
    time: { type: 'string' },
    sinceStartUs: { type: 'number' },
    sincePrevUs: { type: 'number' },
    agent: { type: 'string' },
    boot: { type: 'string' },
    seq: { type: 'string' },
    node: { type: 'string' },
    netns: { type: 'string' },
    netnsIno: { type: 'integer' },
    pod: { type: 'string' },
    ifindex: { type: 'integer' },
    ifname: { type: 'string' },
    hook: { type: 'string' },
    kind: { type: 'string' },
    direction: { type: 'string', enum: ['forward', 'reverse'] },
    src: endpoint,
    dst: endpoint,
    tcpFlags: { type: 'string' },
    tcpSeq: { type: 'integer' },
    tcpAck: { type: 'integer' },
    tcpWindow: { type: 'integer' },
    payloadLen: { type: 'integer' },
    ipId: { type: 'integer' },
    skState: { type: 'string' },
    reason: { type: 'integer' },
    ct: {
      type: ['object', 'null'],
      required: ['id', 'status', 'info', 'reply'],
      properties: {
        id: { type: 'integer' },
        status: { type: 'integer' },
        info: { type: 'integer' },
        reply: {
          type: ['object', 'null'],
          required: ['src', 'dst'],
          properties: { src: endpoint, dst: endpoint },
        },
      },
    },
    packet: { type: ['integer', 'null'] },
  },
} as const;

const packetPath = {
  type: 'object',
  required: ['index', 'direction', 'tcpFlags', 'tcpSeq', 'tcpAck', 'payloadLen', 'ipId', 'hops', 'totalUs', 'dropped'],
  properties: {
    index: { type: 'integer' },
    direction: { type: 'string', enum: ['forward', 'reverse'] },
    tcpFlags: { type: 'string' },
    tcpSeq: { type: 'integer' },
    tcpAck: { type: 'integer' },
    payloadLen: { type: 'integer' },
    ipId: { type: 'integer' },
    hops: {
      type: 'array',
      items: {
        type: 'object',
        required: ['event', 'tsNs', 'node', 'netns', 'ifname', 'hook', 'kind', 'deltaUs', 'crossNode'],
        properties: {
          event: { type: 'integer' },
          tsNs: nsString,
          node: { type: 'string' },
          netns: { type: 'string' },
          ifname: { type: 'string' },
          hook: { type: 'string' },
          kind: { type: 'string' },
          deltaUs: { type: ['number', 'null'] },
          crossNode: { type: 'boolean' },
        },
      },
    },
    totalUs: { type: 'number' },
    dropped: { type: 'boolean' },
  },
} as const;

const timeline = {
  type: ['object', 'null'],
  required: ['from', 'to', 'orientation', 'startNs', 'endNs', 'durationUs', 'nodes', 'duplicates', 'events', 'packets'],
  properties: {
    from: endpoint,
    to: endpoint,
    orientation: { type: 'string', enum: ['syn', 'canonical'] },
    startNs: nsString,
    endNs: nsString,
    durationUs: { type: 'number' },
    nodes: { type: 'array', items: { type: 'string' } },
    duplicates: { type: 'integer' },
    events: { type: 'array', items: timelineEvent },
    packets: { type: 'array', items: packetPath },
  },
} as const;

export const errorSchema = {
  type: 'object',
  required: ['statusCode', 'code', 'error', 'message'],
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string', description: 'Stable error code (HOP_*)' },
    error: { type: 'string' },
    message: { type: 'string' },
  },
} as const;

const errors = { 400: errorSchema, 404: errorSchema, 500: errorSchema, 502: errorSchema, 503: errorSchema };

export const healthSchema = {
  type: 'object',
  required: ['status', 'clickhouse'],
  properties: {
    status: { type: 'string', enum: ['ok', 'unavailable'] },
    clickhouse: {
      type: 'object',
      required: ['reachable', 'url'],
      properties: {
        reachable: { type: 'boolean' },
        url: { type: 'string' },
        error: { type: 'string' },
      },
    },
  },
} as const;

export const healthResponses = { 200: healthSchema, 503: healthSchema };

export const flowsResponses = {
  200: {
    type: 'object',
    required: ['flows', 'count', 'limit', 'truncated'],
    properties: {
      flows: { type: 'array', items: flowSummary },
      count: { type: 'integer' },
      limit: { type: 'integer' },
      truncated: { type: 'boolean', description: 'More flows matched than limit.' },
    },
  },
  ...errors,
} as const;

/** correlator/handshake.ts */
const joined = {
  type: 'array',
  items: { type: 'string' },
  description: 'Flow ids read with this one: the same connection, recorded apart because its SYN-ACK did not reach every node (the client side carries no server ISN). Empty for most flows.',
} as const;

export const timelineResponses = {
  200: {
    type: 'object',
    required: ['flow', 'timeline', 'truncated', 'eventLimit'],
    properties: {
      flow: { ...flowSummary, type: ['object', 'null'], description: 'null while the flow summary is not written yet' },
      timeline: timeline,
      truncated: { type: 'boolean', description: 'The flow has more events than eventLimit; the first ones are shown.' },
      eventLimit: { type: 'integer' },
      joined,
    },
  },
  ...errors,
} as const;

const pathHop = {
  type: 'object',
  properties: {
    node: { type: 'string' },
    netns: { type: 'string' },
    pod: { type: 'string' },
    ifname: { type: 'string' },
    hook: { type: 'string' },
    src: endpoint,
    dst: endpoint,
    nat: { type: ['string', 'null'], description: 'Translation between the previous hop and this one, e.g. DNAT 10.96.0.10:80 -> 10.10.3.2:8080' },
    conntrack: { type: 'array', items: { type: 'string' }, description: 'NAT that conntrack on this node and namespace records for this tuple' },
    evidence: { type: 'array', items: { type: 'string', enum: ['isn', 'tuple', 'conntrack'] }, description: 'What joined this hop to the flow' },
    packets: { type: 'integer' },
  },
} as const;

const segment = {
  type: 'object',
  properties: {
    direction: { type: 'string', enum: ['forward', 'reverse'] },
    from: { type: 'string' },
    to: { type: 'string' },
    crossNode: { type: 'boolean' },
    samples: { type: 'integer' },
    minUs: { type: 'number' },
    p50Us: { type: 'number' },
    p99Us: { type: 'number' },
    maxUs: { type: 'number' },
  },
} as const;

const clockOffset = {
  type: 'object',
  properties: {
    node: { type: 'string' },
    offsetUs: { type: 'number', description: 'Estimated clock offset from the reference node, µs, subtracted from its times' },
    from: { type: ['object', 'null'], properties: { peer: { type: 'string' }, packets: { type: 'integer' } } },
  },
} as const;

export const pathResponses = {
  200: {
    type: 'object',
    properties: {
      flow: { ...flowSummary, type: ['object', 'null'] },
      path: {
        type: 'object',
        properties: {
          client: { ...endpoint, type: ['object', 'null'] },
          server: { ...endpoint, type: ['object', 'null'] },
          paths: { type: 'object', properties: { forward: { type: 'array', items: pathHop }, reverse: { type: 'array', items: pathHop } } },
          segments: { type: 'array', items: segment },
          clock: { type: 'array', items: clockOffset },
          packets: { type: 'integer' },
          exchange: {
            type: ['object', 'null'],
            description: 'The first request and response, timed at the two ends (each on one node\'s clock): the client\'s wait, the server\'s share, the network\'s. null unless both ends saw both.',
            properties: { clientWaitUs: { type: 'number' }, serverUs: { type: 'number' }, networkUs: { type: 'number' } },
          },
        },
      },
      truncated: { type: 'boolean' },
      joined,
    },
  },
  ...errors,
} as const;

export function latencyQuerySchema(maxFlows: number) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      service: { type: 'string', maxLength: 45, pattern: '^[0-9A-Fa-f:.]{2,45}$', description: 'Service (virtual) IP or any address the flows had.' },
      port: { type: 'integer', minimum: 0, maximum: 65535, description: 'Port the flows had (e.g. the service port).' },
      pod: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'Pod (or network namespace name) the flows crossed.' },
      node: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'A node the flows crossed.' },
      since: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'Flows active at or after.' },
      until: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'Flows started at or before.' },
      maxFlows: { type: 'integer', minimum: 1, maximum: maxFlows, default: Math.min(2000, maxFlows), description: 'Most recent flows analysed.' },
    },
  } as const;
}

const quantiles = { type: 'object', properties: { p50: { type: 'number' }, p99: { type: 'number' } } } as const;

export const latencyResponses = {
  200: {
    type: 'object',
    properties: {
      flows: { type: 'integer' },
      packets: { type: 'integer' },
      clock: { type: 'array', items: clockOffset },
      segments: { type: 'array', items: segment },
      exchanges: {
        type: ['object', 'null'],
        description: 'The flows\' first requests and responses timed at their two ends (path.exchange): how many, and p50/p99 of the client\'s wait, the server\'s share and the network\'s, µs. null when no flow had both ends watched.',
        properties: {
          flows: { type: 'integer' },
          clientWaitUs: quantiles,
          serverUs: quantiles,
          networkUs: quantiles,
        },
      },
      truncated: { type: 'boolean', description: 'The flows had more events than the API reads at once; the report covers part of them.' },
    },
  },
  ...errors,
} as const;

const verdict = {
  type: 'object',
  properties: {
    kind: { type: 'string', description: 'nat_bypass_reset, reset_refused, reset_no_socket, reset_app_abort, reset_other, reset_received, drop, retrans_burst' },
    key: { type: 'string' },
    tsNs: nsString,
    node: { type: 'string' },
    netns: { type: 'string' },
    pod: { type: 'string' },
    where: { type: 'string' },
    skState: { type: 'string' },
    reason: { type: 'integer' },
    reasonName: { type: 'string' },
    trigger: {
      type: ['object', 'null'],
      properties: { src: endpoint, dst: endpoint, seq: { type: 'integer' }, ack: { type: 'integer' }, flags: { type: 'string' }, len: { type: 'integer' } },
    },
    title: { type: 'string' },
    evidence: { type: 'array', items: { type: 'string' } },
    fix: { type: ['string', 'null'] },
  },
} as const;

const links = { type: 'object', properties: { timeline: { type: 'string' }, path: { type: 'string' }, explain: { type: 'string' } } } as const;

export const explainResponses = {
  200: {
    type: 'object',
    properties: {
      flow: { ...flowSummary, type: ['object', 'null'] },
      path: pathResponses[200].properties.path,
      verdicts: { type: 'array', items: verdict },
      text: { type: 'array', items: { type: 'string' }, description: 'The explanation, one line per item' },
      truncated: { type: 'boolean' },
      joined,
      links,
    },
  },
  ...errors,
} as const;

export const INCIDENT_KINDS = ['nat_bypass_reset', 'reset_refused', 'reset_no_socket', 'reset_app_abort', 'reset_other', 'reset_received', 'drop', 'retrans_burst'] as const;

export function incidentsQuerySchema(maxRows: number) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      type: { type: 'string', enum: INCIDENT_KINDS, description: 'Incident kind.' },
      namespace: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'Network namespace name where it happened.' },
      pod: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'Pod (or namespace name) where it happened.' },
      service: { type: 'string', maxLength: 45, pattern: '^[0-9A-Fa-f:.]{2,45}$', description: 'Service VIP or any address the flow had.' },
      node: { type: 'string', maxLength: 253, pattern: NODE_PATTERN, description: 'Node where it happened.' },
      since: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'At or after.' },
      until: { type: 'string', maxLength: 40, pattern: TIME_PATTERN, description: 'At or before.' },
      limit: { type: 'integer', minimum: 1, maximum: maxRows, default: Math.min(100, maxRows) },
    },
  } as const;
}

export const incidentsResponses = {
  200: {
    type: 'object',
    properties: {
      incidents: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            flowId: { type: 'string' },
            ...verdict.properties,
            time: { type: 'string' },
            place: { type: 'string' },
            links,
          },
        },
      },
      count: { type: 'integer' },
      truncated: { type: 'boolean' },
    },
  },
  ...errors,
} as const;
