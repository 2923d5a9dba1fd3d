/**
 * Plain-text rendering for humans: aligned columns, byte sizes, times and progress lines. Kept
 * free of gRPC so it is unit-tested directly; JSON output bypasses it entirely.
 */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/** 1024-based like pgBackRest and du -h: 1288490189 -> '1.2 GB'. */
export function formatBytes(bytes: number | bigint): string {
  let n = Number(bytes);
  let unit = 0;
  while (n >= 1024 && unit < UNITS.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${n < 10 ? n.toFixed(1) : Math.round(n)} ${UNITS[unit]}`;
}

/** '2026-03-01 12:00:00Z': UTC, seconds precision, sortable. */
export function formatTime(ms: number | undefined): string {
  if (ms === undefined) return '-';
  // "2026-03-01T12:00:00.000Z" (a year past 9999 has a sign and six digits in front).
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, -14)} ${iso.slice(-13, -5)}Z`;
}

/**
 * Columns padded to their widest cell; the last column is not padded (no trailing blanks). One
 * pass for the widths and one for the text: `pgfleet status` prints a row per cluster, 10,000 of them
 * in a large fleet.
 */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h) => h.length);
  for (const r of rows)
    for (let i = 0; i < widths.length; i++) {
      const n = (r[i] ?? '').length;
      if (n > widths[i]!) widths[i] = n;
    }
  const line = (cells: readonly string[]): string => {
    const last = cells.length - 1;
    let text = '';
    for (let i = 0; i < last; i++) text += `${cells[i]!.padEnd(widths[i] ?? 0)}  `;
    return last < 0 ? '' : (text + cells[last]!).trimEnd();
  };
  let text = line(headers);
  for (const r of rows) text += `\n${line(r)}`;
  return text;
}

export interface ProgressFigures {
  phase: string;
  bytesDone: bigint;
  bytesTotal: bigint;
  filesDone: number;
  filesTotal: number;
  message: string;
  bytesPerSecond?: number;
  etaSeconds?: number;
}

/** 'backup 42% 1.2 GB/2.9 GB files 120/900 (copy)'. */
export function formatProgress(kind: string, p: ProgressFigures): string {
  const parts = [kind];
  if (p.bytesTotal > 0n) {
    const pct = Number((p.bytesDone * 1000n) / p.bytesTotal) / 10;
    parts.push(`${Math.min(100, Math.floor(pct))}%`, `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`);
  } else if (p.bytesDone > 0n) {
    parts.push(formatBytes(p.bytesDone));
  }
  if (p.filesTotal > 0) parts.push(`files ${p.filesDone}/${p.filesTotal}`);
  if (p.bytesPerSecond) parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
  if (p.etaSeconds) parts.push(`ETA ${formatAge(p.etaSeconds)}`);
  if (p.phase) parts.push(`(${p.phase})`);
  if (p.message) parts.push(p.message);
  return parts.join(' ');
}

/** A span for humans, two units at most: 42s, 5m10s, 3h05m, 2d04h. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${pad(Math.floor((s % 86_400) / 3600))}h`;
}
