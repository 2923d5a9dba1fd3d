/**
 * The floor of controller memory per agent connection (issue 16): a bare grpc-js server (the
 * keepalive and limit options of packages/rpc createServer) holding N bidi streams, one per HTTP/2
 * connection, opened by N clients in a child process; prints the server's growth per stream.
 * What pgfleet's controller adds per agent on top is the rest of bench/fleet-scale's figure.
 *
 *   node --expose-gc bench/grpc-session-memory.mjs default|nochannelz|smallh2|smallh2nochannelz [N=1000]
 *   MALLOC_ARENA_MAX=2 node --expose-gc --max-semi-space-size=2 bench/grpc-session-memory.mjs default
 * (the environment and the node flags apply to the server, the process measured).
 */
import { createRequire } from 'node:module';
import { fork } from 'node:child_process';
const require = createRequire(new URL('../packages/rpc/package.json', import.meta.url));
const grpc = require('@grpc/grpc-js');
const id = (b) => b;
const def = {
  Stream: {
    path: '/x.S/Stream',
    requestStream: true,
    responseStream: true,
    requestSerialize: id,
    requestDeserialize: id,
    responseSerialize: id,
    responseDeserialize: id,
  },
};
const [mode, nStr] = process.argv.slice(2);
const N = Number(nStr ?? 1000);
if (mode === 'client') {
  const port = process.argv[4];
  const C = grpc.makeGenericClientConstructor(def);
  let open = 0;
  for (let i = 0; i < N; i++) {
    const c = new C(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    const s = c.Stream();
    s.on('data', () => {
      if (++open === N) process.send('ready');
    });
    s.on('error', () => {});
    s.write(Buffer.from('hello'));
    if (i % 100 === 0) await new Promise((r) => setTimeout(r, 50));
  }
  process.on('message', () => process.exit(0));
} else {
  const base = {
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.max_concurrent_streams': 100,
    'grpc.max_connection_idle_ms': 120_000,
    'grpc.max_receive_message_length': 4 * 1024 * 1024,
  };
  const variants = {
    default: base,
    nochannelz: { ...base, 'grpc.enable_channelz': 0 },
    // HTTP/2 settings of the agent-facing server (what packages/rpc createServer can apply to
    // grpc-js's node servers): small HPACK tables and a small initial stream window.
    smallh2: base,
    smallh2nochannelz: { ...base, 'grpc.enable_channelz': 0 },
  };
  if (!(mode in variants)) throw new Error(`variant ${mode}: one of ${Object.keys(variants).join(', ')}`);
  const server = new grpc.Server(variants[mode]);
  if (mode.startsWith('smallh2')) {
    // grpc-js passes its commonServerOptions to http2.createServer at bind: private, so checked.
    const common = server.commonServerOptions;
    if (!common) throw new Error('grpc-js no longer has commonServerOptions');
    common.maxDeflateDynamicTableSize = 256;
    common.settings = { ...common.settings, headerTableSize: 256, initialWindowSize: 16 * 1024 };
  }
  const held = [];
  server.addService(def, {
    Stream: (call) => {
      held.push(call);
      call.on('data', () => call.write(Buffer.from('ok')));
      call.on('error', () => {});
    },
  });
  const port = await new Promise((r, j) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))),
  );
  global.gc?.();
  const m0 = process.memoryUsage();
  const child = fork(new URL(import.meta.url).pathname, ['client', String(N), String(port)]);
  await new Promise((r) => child.on('message', r));
  await new Promise((r) => setTimeout(r, 3000));
  global.gc?.();
  global.gc?.();
  const m1 = process.memoryUsage();
  const kb = (k) => ((m1[k] - m0[k]) / N / 1024).toFixed(1);
  console.log(
    `${mode} N=${N}: per stream rss ${kb('rss')} KB, heapUsed ${kb('heapUsed')} KB, external ${kb('external')} KB, arrayBuffers ${kb('arrayBuffers')} KB (rss total ${(m1.rss / 1e6).toFixed(0)} MB)`,
  );
  child.send('stop');
  process.exit(0);
}
