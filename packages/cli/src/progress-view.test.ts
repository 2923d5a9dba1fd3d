// The --wait progress bar as a terminal shows it: our byte sizes, rate and ETA, never
// cli-progress's raw {total} or {eta} ("257 MB/493803108 ... ETA INF").
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Writable } from 'node:stream';
import { stripVTControlCharacters } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { JobProgressSchema } from '@pgfleet/proto';
import { ProgressView } from './progress-view.js';

test('the bar shows done/total in bytes, the rate and the ETA the agent sent', () => {
  let screen = '';
  const terminal = new Writable({
    write(chunk: Buffer, _enc, done) {
      screen += chunk.toString();
      done();
    },
  });
  const view = new ProgressView('backup', true, () => undefined, terminal);
  view.update(
    create(JobProgressSchema, {
      phase: 'copying',
      bytesDone: 257n * 1024n * 1024n,
      bytesTotal: 493_803_108n,
      bytesPerSecond: 50 * 1024 * 1024,
      etaSeconds: 4,
    }),
  );
  view.stop();
  const text = stripVTControlCharacters(screen);
  assert.match(text, /backup \[.*\] 54% \| 257 MB\/471 MB \| 50 MB\/s \| ETA 4s \| copying/);
  assert.doesNotMatch(text, /493803108|INF/);
});
