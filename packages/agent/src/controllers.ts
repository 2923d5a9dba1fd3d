/**
 * The controllers an agent may talk to. --controller takes one address or a comma list of them:
 * the agent holds one stream at a time, to the first that answers, and when that controller dies
 * (or cannot be reached) it moves on to the next in the list, round and round. Jobs keep running
 * meanwhile and their results go to whichever controller the agent reaches next (daemon.ts keeps
 * them until a Welcome), since every controller of a fleet shares the one catalog.
 *
 * A DNS name that resolves to several addresses is one entry: grpc-js's resolver hands the channel
 * every address and its pick_first policy connects to the first that answers, re-resolving after
 * a failure; the name stays the TLS server name, so one certificate naming it serves every
 * controller behind it.
 */
import { PgfleetError } from '@pgfleet/core';

/** gRPC target schemes passed through as they are (grpc-js naming: dns:, unix:, ipv4:, ipv6:). */
const SCHEME = /^(dns|unix|unix-abstract|ipv4|ipv6):/;
/** host:port or [v6]:port. */
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/;

/** The addresses of a --controller value, in the order given; a malformed entry is named. */
export function controllerAddresses(value: string): string[] {
  const entries = value.split(',').map((e) => e.trim());
  const bad = (why: string): PgfleetError =>
    new PgfleetError('ControllerAddressInvalid', `--controller '${value}': ${why}`);
  if (entries.length === 1 && entries[0] === '') throw bad('no controller address given');
  for (const entry of entries) {
    if (entry === '') throw bad('an empty entry (two commas, or one at an end)');
    if (SCHEME.test(entry)) continue;
    const m = HOST_PORT.exec(entry);
    if (!m) throw bad(`'${entry}' is not host:port`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw bad(`'${entry}': port ${port} is not between 1 and 65535`);
  }
  return [...new Set(entries)];
}

/**
 * How long to wait before the next connection attempt, after `failures` consecutive failed or
 * lost sessions on a list of `count` addresses. Moving to another controller of the list is
 * nearly immediate (a fleet's agents fail over within seconds); only once every controller has
 * been tried does the wait grow, exponentially up to 30 s. The jitter (half to all of the wait)
 * keeps a fleet's agents from reconnecting in one burst when a controller dies.
 */
export function reconnectDelayMs(failures: number, count: number, random: () => number = Math.random): number {
  const rounds = Math.floor(Math.max(0, failures) / Math.max(1, count));
  return Math.min(30_000, 500 * 2 ** rounds) * (0.5 + random() / 2);
}
