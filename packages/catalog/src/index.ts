// The catalog: storage interface, the SQLite implementation and LSN helpers it relies on.
export * from './store.js';
export { SqliteCatalogStore, isLegalJobTransition, type SqliteCatalogOptions } from './sqlite-store.js';
export { SQLITE_MIGRATIONS } from './migrations.js';
