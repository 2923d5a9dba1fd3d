import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { asPgfleetError } from '@pgfleet/core';
import { DumpedDatabaseSchema } from '@pgfleet/proto';
import { compareTableCounts, tableKey } from './drill.js';
import { describeCountDiffs, expectedCounts } from './dump-drill.js';

const db = (name: string, tables: Array<[string, string, bigint | undefined]>) =>
  create(DumpedDatabaseSchema, {
    name,
    dir: '1',
    tables: tables.map(([schema, t, rows]) => ({
      schema,
      name: t,
      rowEstimate: 0n,
      ...(rows === undefined ? {} : { rows, rowsCounted: true }),
    })),
  });

const restored = (entries: Record<string, Array<[string, string, bigint]>>) =>
  new Map(Object.entries(entries).map(([d, ts]) => [d, new Map(ts.map(([s, t, n]) => [tableKey(s, t), n] as const))]));

describe('dump drill: comparing restored counts with the dump', () => {
  const dump = {
    label: '20261207-040000-000L',
    databases: [
      db('shop', [
        ['sales', 'orders', 30000n],
        ['sales', 'parent', undefined],
        ['public', 'we ird', 4n],
      ]),
      db('crm', [['public', 'contacts', 500n]]),
    ],
  };

  it('compares only the tables the dump counted, exactly (no change bound)', () => {
    const expected = expectedCounts(dump);
    assert.equal(expected.changeBound, 0n);
    assert.deepEqual(
      expected.tables.map((t) => `${t.database}.${t.schema}.${t.table}=${t.rows}`),
      ['shop.sales.orders=30000', 'shop.public.we ird=4', 'crm.public.contacts=500'],
    );
    const same = compareTableCounts(
      expected,
      restored({
        shop: [
          ['sales', 'orders', 30000n],
          ['public', 'we ird', 4n],
        ],
        crm: [['public', 'contacts', 500n]],
      }),
    );
    assert.equal(same.ok, true);
  });

  it('one row fewer, or a table missing, fails and names the tables with both counts', () => {
    const compared = compareTableCounts(
      expectedCounts(dump),
      restored({ shop: [['sales', 'orders', 29999n]], crm: [['public', 'contacts', 500n]] }),
    );
    assert.equal(compared.ok, false);
    assert.equal(compared.differing, 2);
    assert.equal(
      describeCountDiffs(compared.diffs, compared.differing),
      'shop.sales.orders (dump 30000, restored 29999), shop.public.we ird (dump 4, restored missing)',
    );
  });

  it('a dump that recorded no exact counts cannot be drilled (DumpDrillUnavailable)', () => {
    const old = { label: 'x', databases: [db('shop', [['sales', 'orders', undefined]])] };
    assert.throws(
      () => expectedCounts(old),
      (e: unknown) => asPgfleetError(e).errorName === 'DumpDrillUnavailable',
    );
  });
});
