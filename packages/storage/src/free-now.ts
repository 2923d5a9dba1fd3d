/**
 * Frees the memory of a buffer a native call returned (its own ArrayBuffer, not a slice of
 * Node's pool) as soon as its bytes are copied out, instead of at a garbage collection: V8
 * collects such buffers only when their external memory has grown by tens of MB, so a copy loop
 * of 64 KiB cipher outputs or 1 MiB lz4-napi blocks held 55-70 MB of dead buffers as RSS
 * (issue 19, docs/benchmarks.md). Detaching the ArrayBuffer (a transfer to an empty one) drops
 * V8's only reference to that memory. The caller must hold no other view of it.
 */
export function freeNow(buf: Uint8Array): void {
  const ab = buf.buffer as ArrayBuffer & { transfer?: (n: number) => ArrayBuffer };
  if (buf.byteOffset !== 0 || ab.byteLength !== buf.length || typeof ab.transfer !== 'function') return;
  try {
    ab.transfer(0);
  } catch {
    // not detachable in this runtime: garbage collection frees it as before
  }
}
