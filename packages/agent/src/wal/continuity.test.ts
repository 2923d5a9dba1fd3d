// WAL continuity from segment names only: gaps as LSN ranges with their segment names, the end of
// the continuous WAL, unusable segments, and following timeline history to a later timeline.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { walContinuity, type TimelineBranch } from './continuity.js';

const SEG = 16 * 1024 * 1024;
const seg = (tli: number, n: number) =>
  `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
const names = (tli: number, ...ns: number[]) => ns.map((n) => seg(tli, n));
const noBranches = new Map<number, TimelineBranch>();

describe('walContinuity', () => {
  test('continuous WAL runs to the end of the newest segment', () => {
    const r = walContinuity({
      segmentSize: SEG,
      start: seg(1, 2),
      requiredThrough: seg(1, 3),
      present: new Set(names(1, 1, 2, 3, 4, 5)),
      branches: noBranches,
    });
    assert.deepEqual(r.gaps, []);
    assert.equal(r.firstBreak, undefined);
    assert.deepEqual(r.continuousTo, { timeline: 1, lsn: '0/6000000' });
    assert.deepEqual(r.end, { timeline: 1, segment: seg(1, 5) });
    assert.deepEqual(r.stretches, [{ timeline: 1, first: seg(1, 2), last: seg(1, 5) }]);
  });

  test('a missing segment in the middle is a gap [from, to) and ends continuity', () => {
    const r = walContinuity({
      segmentSize: SEG,
      start: seg(1, 2),
      present: new Set(names(1, 2, 3, 5, 6, 9)),
      branches: noBranches,
    });
    assert.deepEqual(r.gaps, [
      { timeline: 1, fromLsn: '0/4000000', toLsn: '0/5000000', segments: [seg(1, 4)] },
      { timeline: 1, fromLsn: '0/7000000', toLsn: '0/9000000', segments: [seg(1, 7), seg(1, 8)] },
    ]);
    assert.equal(r.firstBreak, seg(1, 4));
    assert.deepEqual(r.continuousTo, { timeline: 1, lsn: '0/4000000' });
  });

  test('a missing first segment: continuity ends where it starts', () => {
    const r = walContinuity({
      segmentSize: SEG,
      start: seg(1, 2),
      present: new Set(names(1, 3)),
      branches: noBranches,
    });
    assert.deepEqual(r.gaps, [{ timeline: 1, fromLsn: '0/2000000', toLsn: '0/3000000', segments: [seg(1, 2)] }]);
    assert.deepEqual(r.continuousTo, { timeline: 1, lsn: '0/2000000' });
  });

  test('segments the backup needs are gaps even when nothing newer is archived', () => {
    const r = walContinuity({
      segmentSize: SEG,
      start: seg(1, 2),
      requiredThrough: seg(1, 4),
      present: new Set(names(1, 2)),
      branches: noBranches,
    });
    assert.deepEqual(r.gaps, [
      { timeline: 1, fromLsn: '0/3000000', toLsn: '0/5000000', segments: [seg(1, 3), seg(1, 4)] },
    ]);
  });

  test('an unusable segment ends continuity without being a gap', () => {
    const r = walContinuity({
      segmentSize: SEG,
      start: seg(1, 2),
      present: new Set(names(1, 2, 4)),
      bad: new Set(names(1, 3)),
      branches: noBranches,
    });
    assert.deepEqual(r.gaps, []);
    assert.deepEqual(r.badSegments, [seg(1, 3)]);
    assert.equal(r.firstBreak, seg(1, 3));
    assert.deepEqual(r.continuousTo, { timeline: 1, lsn: '0/3000000' });
    assert.deepEqual(r.end, { timeline: 1, segment: seg(1, 4) });
  });

  test('follows the history to a later timeline from the segment holding the switch point', () => {
    // Timeline 2 branched off 1 at 0/5000100: timeline 1 is needed up to segment 4, timeline 2 from 5.
    const branches = new Map([[2, { parent: 1, switchLsn: 0x5000100n }]]);
    const present = new Set([...names(1, 2, 3, 4, 5, 6), ...names(2, 5, 6, 7)]);
    const r = walContinuity({ segmentSize: SEG, start: seg(1, 2), present, branches });
    assert.deepEqual(r.gaps, []);
    assert.deepEqual(r.stretches, [
      { timeline: 1, first: seg(1, 2), last: seg(1, 4) },
      { timeline: 2, first: seg(2, 5), last: seg(2, 7) },
    ]);
    assert.deepEqual(r.continuousTo, { timeline: 2, lsn: '0/8000000' });
  });

  test('a gap on the later timeline is reported on that timeline', () => {
    const branches = new Map([[2, { parent: 1, switchLsn: 0x4000000n }]]);
    const present = new Set([...names(1, 2, 3), ...names(2, 4, 6)]);
    const r = walContinuity({ segmentSize: SEG, start: seg(1, 2), present, branches });
    assert.deepEqual(r.gaps, [{ timeline: 2, fromLsn: '0/5000000', toLsn: '0/6000000', segments: [seg(2, 5)] }]);
    assert.deepEqual(r.continuousTo, { timeline: 2, lsn: '0/5000000' });
  });

  test('a timeline that branched before the backup is not followed', () => {
    const branches = new Map([[2, { parent: 1, switchLsn: 0x1000000n }]]);
    const present = new Set([...names(1, 3, 4), ...names(2, 1, 2, 3, 4, 5)]);
    const r = walContinuity({ segmentSize: SEG, start: seg(1, 3), present, branches });
    assert.deepEqual(r.stretches, [{ timeline: 1, first: seg(1, 3), last: seg(1, 4) }]);
  });

  test('LSNs above 4 GiB cross the log boundary', () => {
    const a = '0000000100000001000000FF';
    const b = '000000010000000200000000';
    const c = '000000010000000200000001';
    const r = walContinuity({ segmentSize: SEG, start: a, present: new Set([a, c]), branches: noBranches });
    assert.deepEqual(r.gaps, [{ timeline: 1, fromLsn: '2/0', toLsn: '2/1000000', segments: [b] }]);
  });

  test('a fork off the live lineage is never walked into', () => {
    const a = '000000010000000000000009';
    const fork = '00000003000000000000000A';
    const branches = new Map<number, TimelineBranch>([[3, { parent: 1, switchLsn: 0xa000000n }]]);
    const present = new Set([a, '00000001000000000000000A', fork, '00000003000000000000000B']);
    assert.equal(
      walContinuity({ segmentSize: SEG, start: a, present, branches }).end.timeline,
      3,
      'unrestricted: the newest child',
    );
    const live = walContinuity({ segmentSize: SEG, start: a, present, branches, only: new Set([1]) });
    assert.deepEqual([live.end, live.gaps], [{ timeline: 1, segment: '00000001000000000000000A' }, []]);
  });
});
