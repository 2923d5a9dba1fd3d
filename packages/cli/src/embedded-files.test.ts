/**
 * The CLI bundle embeds each proto file's descriptor as a JavaScript literal instead of
 * protobuf-es's base64 (bundle-cli.mjs, embedded-files.mjs). Both forms must give the same
 * FileDescriptorProto message, down to which fields are set and the defaults behind them, and the
 * same descriptors: the CLI's encoding, decoding and JSON come from them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fromBinary, type DescFile } from '@bufbuild/protobuf';
import { base64Decode } from '@bufbuild/protobuf/wire';
import { FileDescriptorProtoSchema, file_google_protobuf_timestamp } from '@bufbuild/protobuf/wkt';
import {
  file_pgfleet_v1_admin,
  file_pgfleet_v1_agent,
  file_pgfleet_v1_common,
  file_pgfleet_v1_events,
} from '@pgfleet/proto';

interface EmbeddedFiles {
  embeddedFile(build: unknown, defaults: unknown, imports?: DescFile[]): DescFile;
  restoreJsonNames(message: unknown): void;
  fileDescriptorLiteral(root: unknown): string;
}
const helper = (await import(new URL('../src/embedded-files.mjs', import.meta.url).href)) as EmbeddedFiles;

// protobuf-es's own generated file of the one well-known type the CLI embeds (its ES module build).
const timestampSource = createRequire(import.meta.url)
  .resolve('@bufbuild/protobuf/wkt')
  .replace('/cjs/', '/esm/')
  .replace(/index\.js$/, 'google/protobuf/timestamp_pb.js');

/** Own properties, their values, and the prototype's, all the way down. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(shape);
  if (v === null || typeof v !== 'object') return v;
  const own = Object.fromEntries(Object.keys(v).map((k) => [k, shape((v as Record<string, unknown>)[k])]));
  const proto = Object.getPrototypeOf(v) as object;
  return { own, proto: proto === Object.prototype ? null : shape({ ...proto }) };
}

/** What a user of the descriptors reads: every message's fields and every service's methods. */
function descriptors(file: DescFile): unknown {
  return {
    messages: file.messages.map((m) => ({
      name: m.typeName,
      fields: m.fields.map((f) => [
        f.name,
        f.number,
        f.fieldKind,
        f.jsonName,
        f.localName,
        f.oneof?.name,
        f.proto.label,
      ]),
      nested: m.nestedMessages.map((n) => [n.typeName, n.fields.map((f) => [f.name, f.jsonName])]),
    })),
    enums: file.enums.map((e) => [e.typeName, e.values.map((v) => [v.name, v.number])]),
    services: file.services.map((s) => [
      s.typeName,
      s.methods.map((m) => [m.name, m.input.typeName, m.output.typeName]),
    ]),
  };
}

test('every embedded descriptor is the same message and gives the same descriptors as fileDesc()', async () => {
  const pgfleet = new URL('../../proto/dist/gen/pgfleet/v1/', import.meta.url).pathname;
  const sources: [string, DescFile][] = [
    [timestampSource, file_google_protobuf_timestamp],
    [`${pgfleet}common_pb.js`, file_pgfleet_v1_common],
    [`${pgfleet}agent_pb.js`, file_pgfleet_v1_agent],
    [`${pgfleet}events_pb.js`, file_pgfleet_v1_events],
    [`${pgfleet}admin_pb.js`, file_pgfleet_v1_admin],
  ];
  for (const [path, real] of sources) {
    const b64 = /\bfileDesc\("([A-Za-z0-9+/=]+)"/.exec(await readFile(path, 'utf8'))?.[1];
    assert.ok(b64, `${path}: a fileDesc("...") call`);
    const decoded = fromBinary(FileDescriptorProtoSchema, base64Decode(b64));
    decoded.messageType.forEach((m) => helper.restoreJsonNames(m));
    const [build, defaults] = new Function(`return [${helper.fileDescriptorLiteral(decoded)}]`)() as [
      (m: unknown, p: unknown) => unknown,
      unknown,
    ];
    const embedded = helper.embeddedFile(build, defaults, real.dependencies);
    assert.deepEqual(shape(embedded.proto), shape(real.proto), real.name);
    assert.deepEqual(descriptors(embedded), descriptors(real), real.name);
  }
});
