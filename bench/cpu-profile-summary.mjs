// Top self-time functions of V8 CPU profiles (node --cpu-prof, e.g. bench/run.mjs --agent-cpu-prof
// DIR): the text form of a flame graph's widest leaves, for docs/performance.md.
//   node bench/cpu-profile-summary.mjs [--top 25] FILE.cpuprofile...   (several files: summed)
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  options: { top: { type: 'string', default: '25' } },
  allowPositionals: true,
});
if (positionals.length === 0) {
  console.error('usage: node bench/cpu-profile-summary.mjs [--top N] FILE.cpuprofile...');
  process.exit(2);
}
const self = new Map();
let total = 0;
for (const file of positionals) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  // timeDeltas[i] is the time before sample i: charge each sample's node with it.
  for (let i = 0; i < prof.samples.length; i++) {
    const node = byId.get(prof.samples[i]);
    const us = prof.timeDeltas[i] ?? 0;
    const cf = node.callFrame;
    const where = cf.url ? `${basename(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + us);
    total += us;
  }
}
const idle = self.get('(idle)') ?? 0;
const busy = total - idle;
console.log(
  `sampled ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s`,
);
console.log('| self s | % of busy | function |');
console.log('|---:|---:|---|');
const rows = [...self.entries()].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]);
for (const [k, us] of rows.slice(0, Number(values.top)))
  console.log(`| ${(us / 1e6).toFixed(2)} | ${((100 * us) / busy).toFixed(1)}% | \`${k}\` |`);
