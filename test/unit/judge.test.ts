import { describe, expect, it } from 'vitest';
import { retractions, type IncidentRow } from '../../services/correlator/judge.js';

const row = (flow: string, key: string, judgedAt = 1): IncidentRow => ({
  event_date: '2026-12-07', flow_id: flow, incident_key: key, kind: 'drop', ts_ns: '1', node: 'n', netns: '', pod: '', place: 'p', sk_state: '', reason: 0, reason_name: '', trigger: 'null', title: 't', evidence: '[]', fix: '', judged_at_ms: judgedAt, retracted: 0,
});

describe('retractions', () => {
  it('retracts only the stored verdicts of fully read flows that judging again no longer gives', () => {
    const stored = [row('1', 'retrans:a/1/5'), row('1', 'drop:a/1/9'), row('2', 'retrans:b/1/3'), row('3', 'drop:c/1/1')];
    const judged = [row('1', 'retrans:a/1/2', 7), row('1', 'drop:a/1/9', 7), row('2', 'retrans:b/1/3', 7)];
    // flow 3 was cut short by the row limit: its verdict stays whatever this judgement says
    const gone = retractions(stored, judged, new Set(['1', '2']), 7);
    expect(gone).toEqual([{ ...stored[0]!, retracted: 1, judged_at_ms: 7 }]);
  });

  it('retracts every verdict of a flow read in full that now gives none, and nothing of a flow not read', () => {
    const stored = [row('1', 'drop:a/1/9'), row('2', 'drop:b/1/1')];
    expect(retractions(stored, [], new Set(['1']), 9).map((r) => [r.flow_id, r.retracted])).toEqual([['1', 1]]);
  });
});
