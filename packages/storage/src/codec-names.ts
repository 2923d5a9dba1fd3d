/**
 * The codec names alone, without the compression streams: the agent's option table lists them,
 * and archive_command loads that table on its start-up-critical path (`@pgfleet/storage/codec-names`).
 */
export const CODECS = ['zstd', 'lz4', 'gzip', 'none'] as const;
export type Codec = (typeof CODECS)[number];
