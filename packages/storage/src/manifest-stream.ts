/**
 * A manifest as a stream of text, both ways, so that memory stays flat in the number of files a
 * backup holds (issue 16: a 100k-file manifest is ~33 MB of JSON; held as one string, copied
 * into a Buffer, sealed and parsed whole, it cost several times that in RSS).
 *
 * The stored form does not change (docs/repository-format.md, "Manifest authentication"): the
 * writer emits exactly the bytes of `JSON.stringify(m, null, 1)`, piece by piece, and every
 * manifest ever written (and every reader) stays as it was. The reader never holds the text: a
 * scanner walks it once, hands each `files[]` element's text to JSON.parse on its own and keeps
 * the rest (the head: every other member, `files` left as `[]`), which stays small.
 */
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { PgfleetError } from '@pgfleet/core/errors';
import {
  type BackupManifest,
  entryBackups,
  type ManifestFile,
  type ManifestHead,
  manifestFileChecker,
  parseManifestHead,
} from './manifest.js';
import type { ManifestMacStream } from './manifest-auth.js';

/** Entries joined into one piece by manifestPieces: large enough that a piece is not a syscall per file. */
const ENTRIES_PER_PIECE = 256;

/**
 * The text of `JSON.stringify(m, null, 1)`, without its final `\n}`, in pieces: the members in
 * `m`'s own order, `files` one batch of entries at a time, taken from `files` when given (then
 * `m.files` only marks the member's place; appended last when `m` has none). Sealing appends the
 * MAC member and the closing brace (manifest-auth.ts).
 */
export async function* manifestHeadPieces(
  m: ManifestHead & { files?: readonly ManifestFile[] },
  files: Iterable<ManifestFile> | AsyncIterable<ManifestFile> = m.files ?? [],
): AsyncGenerator<string> {
  let first = true;
  const members: [string, unknown][] = Object.entries(m);
  if (!('files' in m)) members.push(['files', files]);
  for (const [key, value] of members) {
    // JSON.stringify leaves out members whose value it cannot write.
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue;
    const lead = `${first ? '{' : ','}\n ${JSON.stringify(key)}: `;
    first = false;
    if (key !== 'files') {
      // A member at depth 1: its own lines indented one more space (JSON strings hold no raw newline).
      yield `${lead}${JSON.stringify(value, null, 1).replace(/\n/g, '\n ')}`;
      continue;
    }
    let piece = `${lead}[`;
    let n = 0;
    for await (const f of files) {
      piece += `${n === 0 ? '' : ','}\n  ${JSON.stringify(f, null, 1).replace(/\n/g, '\n  ')}`;
      if (++n % ENTRIES_PER_PIECE === 0) {
        yield piece;
        piece = '';
      }
    }
    yield n === 0 ? `${piece}]` : `${piece}\n ]`;
  }
  if (first) yield '{';
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;

/** Where the scanner is copying the text it walks. */
type Region = 'head' | 'entry' | 'between';

/**
 * Walks a manifest's JSON text in pieces: every element of the top-level `files` array is handed
 * to `onEntry` as its own text (parse it with JSON.parse), everything else is kept as the head,
 * whose `files` is left as `[]`. Only the structure is followed (strings, escapes, nesting);
 * JSON.parse of the head and of each entry judges the rest, so a text that is not JSON is still
 * refused. `where` names the manifest in errors.
 */
export class ManifestScanner {
  private readonly decoder = new StringDecoder('utf8');
  private readonly head: string[] = [];
  private entry: string[] = [];
  private region: Region = 'head';
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** The text of the current string at depth 1 (a member name, or a value), while it is read. */
  private topString: string | undefined;
  private lastTopString: string | undefined;
  private key: string | undefined;
  private filesSeen = false;
  private inFiles = false;
  entries = 0;

  constructor(
    private readonly where: string,
    private readonly onEntry: (text: string) => void,
  ) {}

  push(chunk: Buffer): void {
    this.scan(this.decoder.write(chunk));
  }

  /** The head's JSON text (its `files` empty) once the whole text was pushed. */
  end(): string {
    this.scan(this.decoder.end());
    if (this.depth !== 0 || this.inString) this.invalid('ends inside a value');
    return this.head.join('');
  }

  private invalid(why: string): never {
    throw new PgfleetError('RepoManifestInvalid', `manifest ${this.where} is not valid JSON: it ${why}`);
  }

  private scan(text: string): void {
    let mark = 0;
    const flush = (to: number, next: Region) => {
      if (to > mark) {
        if (this.region === 'head') this.head.push(text.slice(mark, to));
        else if (this.region === 'entry') this.entry.push(text.slice(mark, to));
      }
      mark = to;
      this.region = next;
    };
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) {
          this.inString = false;
          if (this.topString !== undefined) {
            this.lastTopString = this.topString + text.slice(this.topStart, i);
            this.topString = undefined;
          }
        }
        continue;
      }
      if (c === QUOTE) {
        this.inString = true;
        if (this.depth === 1) {
          this.topString = '';
          this.topStart = i + 1;
        }
        if (this.region === 'between') this.invalid('holds a file entry that is not an object');
        continue;
      }
      if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        if (this.region === 'between') {
          if (c !== OPEN_BRACE) this.invalid('holds a file entry that is not an object');
          flush(i, 'entry');
        } else if (this.depth === 1 && c === OPEN_BRACKET && this.key === 'files') {
          if (this.filesSeen) this.invalid("has two 'files' members");
          this.filesSeen = true;
          this.inFiles = true;
          flush(i + 1, 'between');
        }
        this.depth++;
        continue;
      }
      if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        this.depth--;
        if (this.depth < 0) this.invalid('closes more than it opens');
        if (this.inFiles && this.depth === 2 && this.region === 'entry') {
          flush(i + 1, 'between');
          this.onEntry(this.entry.join(''));
          this.entry = [];
          this.entries++;
        } else if (this.inFiles && this.depth === 1) {
          if (c !== CLOSE_BRACKET) this.invalid('closes its file list with a brace');
          this.inFiles = false;
          flush(i, 'head');
        }
        continue;
      }
      if (this.depth === 1 && c === COLON) this.key = this.lastTopString;
      else if (this.region === 'between' && c !== COMMA && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09)
        this.invalid('holds a file entry that is not an object');
    }
    if (this.topString !== undefined) {
      this.topString += text.slice(this.topStart);
      this.topStart = 0;
    }
    flush(text.length, this.region);
  }

  private topStart = 0;
}

/** Parses one `files[]` element's text (ManifestScanner): an object, or RepoManifestInvalid. */
export function parseManifestEntry(text: string, where: string): ManifestFile {
  let f: unknown;
  try {
    f = JSON.parse(text);
  } catch (err) {
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (f === null || typeof f !== 'object' || Array.isArray(f))
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where} holds a file entry that is not an object`);
  return f as ManifestFile;
}

/**
 * A manifest opened as a stream (Repository.openManifest): its head parsed and checked, its file
 * entries checked once and read again, one at a time, whenever `files()` is iterated. The
 * authenticated text is kept from the one read of the object until `close()`, in memory while it
 * is small (up to SPOOL_MEMORY_BYTES, a few thousand files: verify opens every manifest of a
 * repository, and a temporary directory per small one cost more than the rest of its reading),
 * else in a private local file (0600 in a 0700 directory of the system's temporary directory):
 * entries are never used before the whole text's MAC matched, and the repository's copy may
 * change meanwhile without changing what is read.
 */
export class ManifestReader {
  private constructor(
    /** Everything but the file entries. */
    readonly head: ManifestHead,
    /** Files the manifest lists. */
    readonly fileCount: number,
    /** Other backups whose objects its entries read (entryBackups), in key order. */
    readonly readsFrom: readonly string[],
    private readonly spool: Spool,
    private readonly where: string,
    /** Whether the text carried a MAC (it matched): false only when opened with `allowUnsigned`. */
    readonly signed: boolean,
  ) {}

  /**
   * Reads a manifest's stored text through `read` (chunks of the authenticated stream), checking
   * the MAC as it goes (ManifestMacStream: ManifestUnauthenticated; `unsigned` says what to throw
   * for a manifest without one, unless `allowUnsigned`: the one route that adopts those,
   * Repository.adoptManifest), then parses the head and checks every entry (paths, labels,
   * chunk keys, block figures; manifest.ts) before anything is returned.
   */
  static async open(o: {
    read: (onChunk: (chunk: Buffer) => Promise<void>) => Promise<void>;
    mac: ManifestMacStream;
    unsigned: () => Error;
    allowUnsigned?: boolean;
    where: string;
    checkHead: (head: BackupManifest) => void;
  }): Promise<ManifestReader> {
    const spool = new Spool();
    try {
      await o.read(async (chunk) => {
        const out = o.mac.push(chunk);
        if (out.length > 0) await spool.write(out);
      });
      const { signed, rest: tail } = o.mac.end();
      if (!signed && !o.allowUnsigned) throw o.unsigned();
      // What the MAC covers is the head without its closing brace: the reader parses it with one.
      // An unsigned text is whole as it was read.
      await spool.write(signed ? Buffer.concat([tail, Buffer.from('\n}')]) : tail);
      await spool.finish();
      const headText = await scanSpool(spool, o.where, () => {});
      const head = parseManifestHead(headText, o.where);
      o.checkHead(head);
      const check = manifestFileChecker(head, o.where);
      let count = 0;
      const reads = new Set<string>();
      await scanSpool(spool, o.where, (text) => {
        const f = parseManifestEntry(text, o.where);
        check(f);
        count++;
        for (const b of entryBackups(f)) if (b !== head.label) reads.add(b);
      });
      const { files: _files, ...rest } = head;
      return new ManifestReader(rest, count, [...reads].sort(), spool, o.where, signed);
    } catch (err) {
      await spool.remove();
      throw err;
    }
  }

  /** The file entries, in the manifest's order, read again from the local copy. */
  async *files(): AsyncGenerator<ManifestFile> {
    const queue: ManifestFile[] = [];
    const scanner = new ManifestScanner(this.where, (text) => queue.push(parseManifestEntry(text, this.where)));
    for await (const chunk of this.spool.chunks()) {
      scanner.push(chunk as Buffer);
      yield* queue.splice(0);
    }
    scanner.end();
    yield* queue.splice(0);
  }

  /** Every entry at once: for callers that need the whole manifest (small backups, tools). */
  async manifest(): Promise<BackupManifest> {
    const files: ManifestFile[] = [];
    for await (const f of this.files()) files.push(f);
    return { ...this.head, files } as BackupManifest;
  }

  /** Removes the local copy; the reader is unusable afterwards. */
  async close(): Promise<void> {
    await this.spool.remove();
  }
}

const SPOOL = 'manifest.json';
const SPOOL_READ_BYTES = 256 << 10;

/** Manifest text up to this size is held in memory by its reader, larger text in a local file. */
const SPOOL_MEMORY_BYTES = 1 << 20;

/** A manifest's authenticated text as its reader keeps it: in memory while small, else in a private local file. */
class Spool {
  private held: Buffer[] | undefined = [];
  private heldBytes = 0;
  private dir: string | undefined;
  private fh: FileHandle | undefined;

  async write(b: Buffer): Promise<void> {
    if (this.held) {
      // A copy: the MAC stream may hand out views of buffers its reader reuses.
      this.held.push(Buffer.from(b));
      this.heldBytes += b.length;
      if (this.heldBytes <= SPOOL_MEMORY_BYTES) return;
      this.dir = await mkdtemp(join(tmpdir(), 'pgfleet-manifest-'));
      this.fh = await open(join(this.dir, SPOOL), 'wx', 0o600);
      for (const c of this.held) await this.fh.write(c);
      this.held = undefined;
      return;
    }
    await this.fh!.write(b);
  }

  /** Written to the end: the text is read from now on. */
  async finish(): Promise<void> {
    if (this.held) this.held = [Buffer.concat(this.held)];
    await this.fh?.close();
    this.fh = undefined;
  }

  async *chunks(): AsyncGenerator<Buffer> {
    if (this.held) {
      yield* this.held;
      return;
    }
    for await (const chunk of createReadStream(join(this.dir!, SPOOL), { highWaterMark: SPOOL_READ_BYTES }))
      yield chunk as Buffer;
  }

  async remove(): Promise<void> {
    this.held = [];
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** One pass of a ManifestScanner over the local copy; the head's text. */
async function scanSpool(spool: Spool, where: string, onEntry: (text: string) => void): Promise<string> {
  const scanner = new ManifestScanner(where, onEntry);
  for await (const chunk of spool.chunks()) scanner.push(chunk);
  return scanner.end();
}
