// The pgfleet controller: option table, server start-up and the PITR backup choice.
export { controllerProgram, resolveRunConfig, type ControllerConfig } from './options.js';
export { startController, type RunningController, type StartOptions } from './server.js';
export { chooseBackup, validateTarget, FUTURE_SKEW_MS, type PitrTarget, type BackupSummary } from './restore/pitr.js';
