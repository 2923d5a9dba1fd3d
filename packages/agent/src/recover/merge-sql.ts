/**
 * The SQL recover-table hands the DBA once the rows are back in pgfleet_recovered: how to put the
 * missing rows into the live table and how to see what differs. It is printed, never run: only
 * the DBA knows whether rows written since the mistake should win.
 *
 * With a primary key a recovered row is missing when no live row has its key (INSERT ... WHERE
 * NOT EXISTS); without one, rows are compared whole (EXCEPT ALL keeps duplicates apart, and
 * needs an equality operator for every column type: json columns need a cast). A table that no
 * longer exists live (dropped) is moved back instead.
 */
import { quoteIdentifier, quoteQualified, RECOVERED_SCHEMA, type QualifiedName } from '@pgfleet/pg';

export interface MergeInput {
  /** The live table the rows came from. */
  live: QualifiedName;
  /** Its name in pgfleet_recovered. */
  recovered: string;
  /** Primary key columns, in key order (empty: none). */
  primaryKey: readonly string[];
  /** Whether the live table exists now. */
  liveExists: boolean;
  /** A GENERATED ALWAYS identity column: inserting its recovered values needs OVERRIDING SYSTEM VALUE. */
  identityAlways: boolean;
}

export function mergeStatements(m: MergeInput): { merge: string; compare: string } {
  const live = quoteQualified(m.live);
  const rec = quoteQualified({ schema: RECOVERED_SCHEMA, name: m.recovered });
  if (!m.liveExists) {
    const rename = m.recovered === m.live.name ? '' : `ALTER TABLE ${rec} RENAME TO ${quoteIdentifier(m.live.name)};\n`;
    const moved = quoteQualified({ schema: RECOVERED_SCHEMA, name: m.live.name });
    return {
      merge: `${rename}ALTER TABLE ${moved} SET SCHEMA ${quoteIdentifier(m.live.schema)};`,
      compare: `SELECT count(*) FROM ${rec};`,
    };
  }
  const overriding = m.identityAlways ? ' OVERRIDING SYSTEM VALUE' : '';
  const compare = `SELECT * FROM ${rec} EXCEPT ALL SELECT * FROM ${live};`;
  if (m.primaryKey.length > 0) {
    const match = m.primaryKey.map((c) => `t.${quoteIdentifier(c)} = r.${quoteIdentifier(c)}`).join(' AND ');
    return {
      merge: `INSERT INTO ${live}${overriding} SELECT * FROM ${rec} r WHERE NOT EXISTS (SELECT 1 FROM ${live} t WHERE ${match});`,
      compare,
    };
  }
  return {
    merge: `INSERT INTO ${live}${overriding} SELECT * FROM (SELECT * FROM ${rec} EXCEPT ALL SELECT * FROM ${live}) AS missing;`,
    compare,
  };
}
