/** Job progress as the agent reports it; throttled so a backup of 100k files does not flood the stream. */
export interface Progress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  message?: string;
  /** Smoothed throughput of the current phase (bytes/s); 0 until bytes move. */
  bytesPerSecond?: number;
  /** Seconds left at that rate; 0 when unknown (no total, nothing moved yet, or done). */
  etaSeconds?: number;
}

export type ProgressSink = (p: Progress) => void;

/**
 * Weight of the newest interval in the smoothed rate: about the last ten reports (5 s) count, so
 * the ETA follows a slowdown (a big compressible file, then a noisy one) without jumping about.
 */
const RATE_SMOOTHING = 0.2;

export class ProgressTracker {
  private last = 0;
  readonly state: Progress;
  private sample: { at: number; bytes: number } | undefined;
  private rate = 0;

  constructor(
    private readonly sink: ProgressSink,
    phase: string,
    private readonly intervalMs = 500,
    private readonly now: () => number = Date.now,
  ) {
    this.state = { phase, bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
  }

  phase(phase: string, message?: string): void {
    if (phase !== this.state.phase) {
      // A new phase moves other bytes (or none): its rate starts over.
      this.sample = undefined;
      this.rate = 0;
    }
    this.state.phase = phase;
    this.state.message = message;
    this.flush();
  }

  add(bytes: number, files = 0): void {
    this.state.bytesDone += bytes;
    this.state.filesDone += files;
    if (this.now() - this.last >= this.intervalMs) this.flush();
  }

  flush(): void {
    const now = this.now();
    this.last = now;
    if (!this.sample) this.sample = { at: now, bytes: this.state.bytesDone };
    else if (now > this.sample.at) {
      const current = ((this.state.bytesDone - this.sample.bytes) * 1000) / (now - this.sample.at);
      this.rate = this.rate === 0 ? current : this.rate + RATE_SMOOTHING * (current - this.rate);
      this.sample = { at: now, bytes: this.state.bytesDone };
    }
    const left = this.state.bytesTotal - this.state.bytesDone;
    this.state.bytesPerSecond = this.rate;
    this.state.etaSeconds = this.rate > 0 && left > 0 ? left / this.rate : 0;
    this.sink({ ...this.state });
  }
}
