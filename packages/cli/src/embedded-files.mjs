// The CLI bundle's replacement for protobuf-es's fileDesc() (bundle-cli.mjs, issue 16): the
// generated `_pb.js` files embed each proto file's descriptor as base64 of its binary form, and
// every CLI process decoded the four files' descriptors again (base64, protobuf-es's reflective
// binary reader, the JSON names restored) before the first call. The build decodes them once and
// writes each as the JavaScript literal of the same FileDescriptorProto message (the same own
// properties, the same per-type prototypes of defaults that protobuf-es gives a decoded proto2
// message), and this turns it into the DescFile as fileDesc() does from there.
// `embedded-files.test.ts` compares both forms of every file the CLI embeds.
import { createFileRegistry } from '@bufbuild/protobuf';
import { protoCamelCase } from '@bufbuild/protobuf/reflect';

const prototypes = new Map();

/** One message of an embedded descriptor: `own` over the shared prototype of its type's defaults. */
export function embeddedMessage(typeName, defaults, own) {
  let proto = prototypes.get(typeName);
  if (proto === undefined) {
    proto = defaults;
    prototypes.set(typeName, proto);
  }
  return Object.assign(Object.create(proto), own);
}

/**
 * fileDesc(b64, imports) for a FileDescriptorProto already decoded: `build(embeddedMessage,
 * defaults)` makes it (fileDescriptorLiteral). A function, not the message itself, so that the
 * call stays free of side effects and esbuild drops the files nothing uses, as it does fileDesc's.
 */
export function embeddedFile(build, defaults, imports) {
  const root = build(embeddedMessage, defaults);
  root.dependency = imports?.map((f) => f.proto.name) ?? [];
  const reg = createFileRegistry(root, (name) => imports?.find((f) => f.proto.name === name));
  return reg.getFile(root.name);
}

/** What fileDesc() does to a decoded file before building it: JSON names given where protoc left them out. */
export function restoreJsonNames(message) {
  for (const f of message.field) {
    if (!(Object.prototype.hasOwnProperty.call(f, 'jsonName') && f.jsonName !== undefined))
      f.jsonName = protoCamelCase(f.name);
  }
  message.nestedType.forEach(restoreJsonNames);
}

/**
 * The first two arguments of embeddedFile() that rebuild `root` (a decoded FileDescriptorProto,
 * JSON names restored), as JavaScript. Fails on a value it cannot write exactly.
 */
export function fileDescriptorLiteral(root) {
  const defaults = new Map(); // type name -> [index, the prototype's literal]
  const obj = (o) =>
    `{${Object.keys(o)
      .map((k) => `${JSON.stringify(k)}:${write(o[k])}`)
      .join(',')}}`;
  const write = (v) => {
    if (typeof v === 'string' || typeof v === 'boolean') return JSON.stringify(v);
    if (typeof v === 'number') {
      if (!Number.isFinite(v) || Object.is(v, -0)) throw new Error(`cannot embed the number ${v}`);
      return String(v);
    }
    if (v === undefined) return 'undefined';
    if (Array.isArray(v)) return `[${v.map(write).join(',')}]`;
    if (v !== null && typeof v === 'object' && typeof v.$typeName === 'string') {
      if (Object.getOwnPropertySymbols(v).length > 0) throw new Error(`${v.$typeName}: symbol properties`);
      const proto = Object.getPrototypeOf(v);
      if (Object.getPrototypeOf(proto) !== Object.prototype)
        throw new Error(`${v.$typeName}: unexpected prototype chain`);
      const literal = obj(proto);
      let entry = defaults.get(v.$typeName);
      if (entry === undefined) defaults.set(v.$typeName, (entry = [defaults.size, literal]));
      else if (entry[1] !== literal) throw new Error(`${v.$typeName}: two prototypes`);
      return `m(${JSON.stringify(v.$typeName)},p[${entry[0]}],${obj(v)})`;
    }
    throw new Error(`cannot embed ${Object.prototype.toString.call(v)}`);
  };
  const expr = write(root);
  return `(m, p) => ${expr}, [${[...defaults.values()].map(([, l]) => l).join(',')}]`;
}
