/**
 * How `--wait` shows a job's progress on stderr: a bar (cli-progress) with bytes, rate and ETA
 * when stderr is a terminal and the phase has a byte total; otherwise one line per change, so logs
 * and CI output stay readable.
 */
import cliProgress from 'cli-progress';
import type { JobProgress } from '@pgfleet/proto';
import { formatAge, formatBytes, formatProgress } from './format.js';

export class ProgressView {
  private bar: cliProgress.SingleBar | undefined;
  private lastLine = '';

  constructor(
    private readonly kind: string,
    private readonly tty: boolean = process.stderr.isTTY === true,
    private readonly write: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
  ) {}

  update(p: JobProgress): void {
    if (this.tty && p.bytesTotal > 0n) {
      this.bar ??= this.newBar();
      this.bar.setTotal(Number(p.bytesTotal));
      this.bar.update(Number(p.bytesDone), {
        done: formatBytes(p.bytesDone),
        total: formatBytes(p.bytesTotal),
        rate: p.bytesPerSecond > 0 ? `${formatBytes(p.bytesPerSecond)}/s` : '-',
        eta: p.etaSeconds > 0 ? formatAge(p.etaSeconds) : '-',
        phase: p.phase,
      });
      return;
    }
    // A phase without a total (e.g. waiting for WAL) ends the bar and goes on in lines.
    this.stop();
    const line = formatProgress(this.kind, p);
    if (line !== this.lastLine) this.write(line);
    this.lastLine = line;
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  private newBar(): cliProgress.SingleBar {
    const bar = new cliProgress.SingleBar(
      {
        format: `${this.kind} [{bar}] {percentage}% | {done}/{total} | {rate} | ETA {eta} | {phase}`,
        stream: process.stderr,
        hideCursor: true,
        barsize: 30,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(1, 0, { done: '0 B', total: '-', rate: '-', eta: '-', phase: '' });
    return bar;
  }
}
