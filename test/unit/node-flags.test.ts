import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../services/agent/node-flags.js';

it('bin/hoptrace starts agents with AGENT_NODE_FLAGS', () => {
  const script = readFileSync(new URL('../../bin/hoptrace', import.meta.url), 'utf8');
  expect(script).toContain(`[[ \${1:-} == agent ]] && flags=(${AGENT_NODE_FLAGS.join(' ')})`);
});
