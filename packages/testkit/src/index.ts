/**
 * @pgfleet/testkit: launchers for the real servers every integration and e2e test uses
 * (PostgreSQL, nats-server, an S3 server), plus free ports, temp dirs and running as `postgres`.
 */
export { freePort, isPortListening } from './ports.js';
export { reapOrphans } from './cleanup.js';
export {
  pgOsUser,
  pgEnvForChild,
  makeTempDir,
  removeDir,
  chownToPostgres,
  run,
  runAsPostgres,
  tail,
  type OsUser,
  type RunOptions,
} from './os-user.js';
export { pgBinDir, startPostgres, type PgInstance, type PgInstanceOptions } from './postgres.js';
export { startStandby, type StandbyInstance, type StandbyOptions } from './standby.js';
export { startNats, natsServerBin, type NatsServer, type NatsOptions } from './nats.js';
export { startS3, type S3Server, type S3Options } from './s3.js';
export { startWalCluster, waldump, type WalCluster, type WaldumpRecord, type ArchivedSegment } from './wal-cluster.js';
