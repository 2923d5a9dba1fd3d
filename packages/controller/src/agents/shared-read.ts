/**
 * One catalog read shared by the callers that ask for it before it starts. Every Hello reads the
 * active jobs (to reconcile the agent's), and 10,000 Hellos of a connect storm were 10,000 reads
 * of the same rows through the catalog's pool. A caller joins only a read that has not started
 * yet, so what it gets was read after it asked, as its own read would have been.
 */
export class SharedRead<T> {
  private next: Promise<T> | undefined;

  constructor(private readonly read: () => Promise<T>) {}

  get(): Promise<T> {
    this.next ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      // Started: later callers wait for a read of their own.
      this.next = undefined;
      return this.read();
    });
    return this.next;
  }
}
