// The catalog: storage interface, its SQLite and PostgreSQL implementations, the shared job state
// machine and migrations. The shared test suite is exported separately as '@pgfleet/catalog/testing'.
export * from './store.js';
export { isLegalJobTransition, checkJobTransition, JOB_STATES, FAILABLE_JOB_STATES } from './job-state.js';
export { SqliteCatalogStore, type SqliteCatalogOptions } from './sqlite-store.js';
export {
  PostgresCatalogStore,
  redactCatalogUrl,
  type PostgresCatalogOptions,
  MIGRATION_LOCK_CLASS,
  LEADERSHIP_LOCK_CLASS,
  CLUSTER_JOBS_LOCK_CLASS,
} from './postgres-store.js';
export { openCatalog, type OpenCatalogOptions } from './open-catalog.js';
export {
  CATALOG_MIGRATIONS,
  CATALOG_SCHEMA_VERSION,
  SQLITE_MIGRATIONS,
  POSTGRES_MIGRATIONS,
  type CatalogMigration,
} from './migrations.js';
