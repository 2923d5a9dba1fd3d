// Bundles the console (app.js with Preact, htm and uPlot; app.css with uPlot's stylesheet) into
// the controller's dist/console-ui with esbuild, at build time: the controller serves these files
// and nothing is fetched from a CDN at run time. Run by the controller package's build script.
import { build } from 'esbuild';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '../../dist/console-ui');
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, 'app.js')],
  bundle: true,
  format: 'esm',
  minify: true,
  target: 'es2022',
  outfile: join(out, 'app.js'),
  logLevel: 'warning',
  legalComments: 'eof',
});
const uplotCss = await readFile(createRequire(import.meta.url).resolve('uplot/dist/uPlot.min.css'), 'utf8');
await writeFile(join(out, 'app.css'), `${uplotCss}\n${await readFile(join(here, 'app.css'), 'utf8')}`);
await copyFile(join(here, 'index.html'), join(out, 'index.html'));
