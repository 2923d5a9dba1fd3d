import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { createLogger, redactingSink, resolveLogFormat } from './logger.js';

test('log format: auto is pretty at a terminal and JSON otherwise; an option or PGFLEET_LOG_FORMAT forces either', () => {
  const saved = process.env.PGFLEET_LOG_FORMAT;
  delete process.env.PGFLEET_LOG_FORMAT;
  try {
    assert.equal(resolveLogFormat(undefined, true), 'pretty');
    assert.equal(resolveLogFormat(undefined, false), 'json');
    assert.equal(resolveLogFormat('auto', false), 'json');
    assert.equal(resolveLogFormat('json', true), 'json');
    assert.equal(resolveLogFormat('pretty', false), 'pretty');
    process.env.PGFLEET_LOG_FORMAT = 'pretty';
    assert.equal(resolveLogFormat(undefined, false), 'pretty');
    assert.equal(resolveLogFormat('json', false), 'json', 'the option wins over the environment');
  } finally {
    if (saved === undefined) delete process.env.PGFLEET_LOG_FORMAT;
    else process.env.PGFLEET_LOG_FORMAT = saved;
  }
});

test('a child of a component logger that names its own component writes one component key: the innermost', () => {
  const lines: string[] = [];
  const root = pino({ base: null }, redactingSink({ write: (l: string) => lines.push(l) }));
  root.child({ component: 'controller' }).child({ component: 'scheduler', cluster: 'shop' }).info('round');
  root.child({ component: 'agent' }).info('plain');
  assert.equal(lines.length, 2);
  assert.equal(lines[0]!.match(/"component":/g)?.length, 1, lines[0]);
  assert.equal((JSON.parse(lines[0]!) as { component: string }).component, 'scheduler');
  assert.match(lines[0]!, /"cluster":"shop"/);
  assert.ok(lines[0]!.endsWith('\n'), 'still one line each');
  assert.equal((JSON.parse(lines[1]!) as { component: string }).component, 'agent');
});

test('pretty and JSON logs: readable lines with a local time, or JSON; URL credentials redacted in both', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-log-'));
  try {
    const write = (format: 'json' | 'pretty'): string => {
      const path = join(dir, `${format}.log`);
      const fd = openSync(path, 'w');
      const log = createLogger({ format, destination: fd }).child({ component: 'wal-push' });
      log.info({ url: 'nats://u:hunter2@nats:4222' }, 'archived 000000010000000000000003');
      log.flush();
      closeSync(fd);
      return readFileSync(path, 'utf8');
    };
    const pretty = write('pretty');
    assert.match(
      pretty,
      /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d{4}\] INFO: archived 000000010000000000000003/,
    );
    assert.match(pretty, /component: "wal-push"/);
    assert.doesNotMatch(pretty, /hunter2/);
    assert.doesNotMatch(pretty, /^\{/, 'not JSON');
    const json = JSON.parse(write('json')) as { msg: string; component: string; url: string; time: number };
    assert.equal(json.msg, 'archived 000000010000000000000003');
    assert.equal(json.component, 'wal-push');
    assert.doesNotMatch(json.url, /hunter2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
