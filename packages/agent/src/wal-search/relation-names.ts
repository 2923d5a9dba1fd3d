/**
 * Relation files to names for `pgfleet wal search`: the starting backup's catalog snapshot, kept
 * up to date with the catalog changes the WAL after it carries.
 */
import type { CatalogSnapshot } from '../backup/catalog-snapshot.js';
import type { SearchRecord } from './record-events.js';
import type { CatalogEvent, RelationName, RelFile } from './transactions.js';

/** Schemas whose rows are PostgreSQL's own bookkeeping: DDL shows as catalog events, not as their rows. */
const SYSTEM_SCHEMAS = new Set(['pg_catalog', 'pg_toast', 'information_schema']);
/** FirstNormalObjectId: relation files below it were made by initdb (catalogs), never by users. */
const FIRST_NORMAL_OBJECT_ID = 16384;

export class RelationNamer {
  private readonly byFile = new Map<string, RelationName & { kind: string }>();
  private readonly databases = new Map<number, string>();

  constructor(snapshot: CatalogSnapshot | undefined) {
    for (const db of snapshot?.databases ?? []) {
      this.databases.set(db.oid, db.name);
      const schemas = new Map(db.namespaces.map((n) => [n.oid, n.name]));
      for (const r of db.relations)
        this.byFile.set(`${db.oid}/${r.relNumber}`, {
          database: db.name,
          schema: schemas.get(r.namespaceOid) ?? `namespace ${r.namespaceOid}`,
          name: r.name,
          kind: r.kind,
        });
    }
  }

  /** The relation's name now (schema and name '' when unknown). */
  nameOf(rel: RelFile): RelationName {
    const n = this.byFile.get(`${rel.dbOid}/${rel.relNumber}`);
    return n
      ? { database: n.database, schema: n.schema, name: n.name }
      : { database: this.databaseName(rel.dbOid), schema: '', name: '' };
  }

  /** The database's name, or its oid when the snapshot does not know it. */
  databaseName(oid: number): string {
    return this.databases.get(oid) ?? `database ${oid}`;
  }

  /** Whether changes to this relation are PostgreSQL's bookkeeping rather than user rows. */
  isSystem(rel: RelFile, name: RelationName): boolean {
    if (rel.dbOid === 0) return true;
    if (name.name) return SYSTEM_SCHEMAS.has(name.schema);
    return rel.relNumber < FIRST_NORMAL_OBJECT_ID;
  }

  /** Every user table's schema.name in the snapshot. */
  *allNames(): Iterable<string> {
    for (const n of this.byFile.values()) if (!SYSTEM_SCHEMAS.has(n.schema)) yield `${n.schema}.${n.name}`;
  }

  observe(_r: SearchRecord): void {}

  abort(_xid: number, _subxids: readonly number[]): void {}

  /** The catalog events of a committed transaction: the relation files it dropped. */
  commit(_xid: number, _subxids: readonly number[], dropped: readonly RelFile[]): CatalogEvent[] {
    const out: CatalogEvent[] = [];
    for (const rel of dropped) {
      const n = this.byFile.get(`${rel.dbOid}/${rel.relNumber}`);
      if (!n || n.kind !== 'r' || SYSTEM_SCHEMAS.has(n.schema)) continue;
      out.push({ kind: 'drop', rel, table: { database: n.database, schema: n.schema, name: n.name } });
    }
    return out;
  }
}
