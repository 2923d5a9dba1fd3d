/** Job progress as the agent reports it; throttled so a backup of 100k files does not flood the stream. */
export interface Progress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  message?: string;
}

export type ProgressSink = (p: Progress) => void;

export class ProgressTracker {
  private last = 0;
  readonly state: Progress;

  constructor(private readonly sink: ProgressSink, phase: string, private readonly intervalMs = 500) {
    this.state = { phase, bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
  }

  phase(phase: string, message?: string): void {
    this.state.phase = phase;
    this.state.message = message;
    this.flush();
  }

  add(bytes: number, files = 0): void {
    this.state.bytesDone += bytes;
    this.state.filesDone += files;
    const now = Date.now();
    if (now - this.last >= this.intervalMs) this.flush();
  }

  flush(): void {
    this.last = Date.now();
    this.sink({ ...this.state });
  }
}
