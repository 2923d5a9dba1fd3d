/**
 * Serialises pushes of one WAL file name inside the daemon. archive_command (through the socket)
 * and the WAL stream archive the same segments; the repository's "same name + same checksum =
 * success" check is a list-then-write, so two concurrent pushes of one name could both see
 * nothing and both write. One at a time per name, the second finds the first's object.
 */
export class WalNameLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(name) ?? Promise.resolve();
    const p = before.then(fn, fn);
    const tail = p.catch(() => undefined);
    this.tails.set(name, tail);
    void tail.then(() => {
      if (this.tails.get(name) === tail) this.tails.delete(name);
    });
    return p;
  }
}
