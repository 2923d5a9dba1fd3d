/**
 * How `--wait` shows a job's progress on stderr: a bar (cli-progress) with bytes, rate and ETA
 * when stderr is a terminal and the phase has a byte total; otherwise one line per change, so logs
 * and CI output stay readable.
 *
 * cli-progress fills its own placeholders ({total}, {eta}, {value}, {percentage}, ...) after the
 * payload, so a payload key of the same name is overwritten by the raw number ("257 MB/493803108
 * ... ETA INF"): ours are named apart (doneText, totalText, rateText, etaText).
 */
import { createRequire } from 'node:module';
import type cliProgress from 'cli-progress';
import type { JobProgress } from '@pgfleet/proto';
import { formatAge, formatBytes, formatProgress } from './format.js';

export class ProgressView {
  private bar: cliProgress.SingleBar | undefined;
  private lastLine = '';

  constructor(
    private readonly kind: string,
    private readonly tty: boolean = process.stderr.isTTY === true,
    private readonly write: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
    private readonly stream: NodeJS.WritableStream = process.stderr,
  ) {}

  update(p: JobProgress): void {
    if (this.tty && p.bytesTotal > 0n) {
      this.bar ??= this.newBar();
      this.bar.setTotal(Number(p.bytesTotal));
      this.bar.update(Number(p.bytesDone), {
        doneText: formatBytes(p.bytesDone),
        totalText: formatBytes(p.bytesTotal),
        rateText: p.bytesPerSecond > 0 ? `${formatBytes(p.bytesPerSecond)}/s` : '-',
        etaText: p.etaSeconds > 0 ? formatAge(p.etaSeconds) : '-',
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
    // Loaded for a bar only (a terminal): scripts and tests, which never show one, skip its 16 modules.
    const { SingleBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof cliProgress;
    const bar = new SingleBar(
      {
        format: `${this.kind} [{bar}] {percentage}% | {doneText}/{totalText} | {rateText} | ETA {etaText} | {phase}`,
        stream: this.stream,
        // A terminal is decided by `tty` above; the bar itself need not probe the stream again.
        noTTYOutput: true,
        hideCursor: true,
        barsize: 30,
      },
      Presets.shades_classic,
    );
    bar.start(1, 0, { doneText: '0 B', totalText: '-', rateText: '-', etaText: '-', phase: '' });
    return bar;
  }
}
