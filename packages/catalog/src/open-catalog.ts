/**
 * Picks the catalog implementation from the one `catalog` setting: a file path or sqlite:PATH is
 * the embedded SQLite catalog (one controller), a postgres:// or postgresql:// URL the shared
 * PostgreSQL catalog (several controllers).
 */
import { PgfleetError } from '@pgfleet/core';
import { PostgresCatalogStore, redactCatalogUrl, type PostgresCatalogOptions } from './postgres-store.js';
import { SqliteCatalogStore, type SqliteCatalogOptions } from './sqlite-store.js';
import type { CatalogStore } from './store.js';

export interface OpenCatalogOptions {
  sqlite?: SqliteCatalogOptions;
  postgres?: PostgresCatalogOptions;
}

const HINT = 'Set catalog to a file path or sqlite:PATH (SQLite), or to postgres://user@host:port/db (PostgreSQL).';

/** Opens the catalog `url` names and applies pending migrations. */
export async function openCatalog(url: string, options: OpenCatalogOptions = {}): Promise<CatalogStore> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'postgres' || scheme === 'postgresql') return PostgresCatalogStore.open(url, options.postgres);
  const path = scheme === 'sqlite' ? url.slice('sqlite:'.length) : scheme === undefined ? url : '';
  if (path.trim() === '') {
    throw new PgfleetError(
      'InvalidConfig',
      `catalog '${redactCatalogUrl(url)}' is neither a file path, sqlite:PATH nor a postgres:// URL`,
      { hint: HINT },
    );
  }
  return SqliteCatalogStore.open(path, options.sqlite);
}
