#!/usr/bin/env node
/*
 * Builds raftmq's native addons with the system C compiler and the headers of the Node.js that
 * runs this script (no node-gyp, no download: the build works offline; it takes a fraction of a
 * second, so it runs every time):
 * - native/page-cache.c -> dist/native/page-cache.node: posix_fadvise, so that the CommitLog can
 *   release page-cache pages (docs/storage.md, "Page cache");
 * - native/crc32c.c -> dist/native/crc32c.node: CRC32C with the CPU's instruction
 *   (src/common/crc32c.ts);
 * - native/timed-sync.c -> dist/native/timed-sync.node: fdatasync on the thread pool, timed on
 *   the thread that makes the call (src/store/timed-sync.ts).
 * All are optional at run time: without a compiler, headers or Linux, this prints why and exits
 * 0; the store then keeps what it writes cached, checksums come from the npm package, and sync
 * rounds are timed as a whole.
 * `RAFTMQ_NATIVE=off` skips the build (and removes addons built before);
 * `RAFTMQ_NATIVE=required` makes a failed build an error and compiles with -Werror.
 * `CC` names the compiler, with arguments if any (`CC="ccache gcc"`); `cc` by default.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'dist', 'native');
const mode = process.env.RAFTMQ_NATIVE ?? 'optional';
const ADDONS = [
  { name: 'page-cache', without: 'the store runs without releasing page-cache pages' },
  { name: 'crc32c', without: 'checksums are computed by @node-rs/crc32' },
  { name: 'timed-sync', without: 'fdatasync calls are not timed apart from their rounds' },
];

function skip(reason) {
  const message = `native/build.js: addons not built: ${reason}`;
  if (mode === 'required') {
    console.error(message);
    process.exit(1);
  }
  console.warn(`${message} (${ADDONS.map((a) => a.without).join('; ')})`);
  process.exit(0);
}

/** The directory holding node_api.h: beside this Node.js, else under npm's configured nodedir. */
function headerDir() {
  const candidates = [path.resolve(path.dirname(process.execPath), '..', 'include', 'node')];
  const nodedir = process.env.npm_config_nodedir;
  if (nodedir) candidates.push(path.join(nodedir, 'include', 'node'));
  return candidates.find((dir) => fs.existsSync(path.join(dir, 'node_api.h')));
}

if (!['optional', 'required', 'off'].includes(mode)) {
  console.error(`native/build.js: RAFTMQ_NATIVE must be optional, required or off, not ${mode}`);
  process.exit(1);
}
// A build that fails or is skipped must not leave an older addon to be loaded.
for (const addon of ADDONS) fs.rmSync(path.join(outDir, `${addon.name}.node`), { force: true });
if (mode === 'off') skip('RAFTMQ_NATIVE=off');
if (process.platform !== 'linux') skip(`they are built on Linux only (${process.platform})`);
const include = headerDir();
if (include === undefined) skip('no Node.js headers (node_api.h) found');
fs.mkdirSync(outDir, { recursive: true });
const [compiler, ...compilerArgs] = (process.env.CC || 'cc').trim().split(/\s+/);
let failed = 0;
for (const addon of ADDONS) {
  const args = [
    ...compilerArgs,
    '-O2',
    '-Wall',
    ...(mode === 'required' ? ['-Werror'] : []),
    '-D_FILE_OFFSET_BITS=64',
    '-shared',
    '-fPIC',
    '-I',
    include,
    path.join(__dirname, `${addon.name}.c`),
    '-o',
    path.join(outDir, `${addon.name}.node`),
  ];
  const run = spawnSync(compiler, args, { stdio: 'inherit' });
  const why = run.error
    ? `${compiler}: ${run.error.message}`
    : run.status !== 0
      ? `${compiler} exited with ${run.status ?? run.signal}`
      : undefined;
  if (why !== undefined) {
    failed += 1;
    console.warn(`native/build.js: ${addon.name} addon not built: ${why} (${addon.without})`);
  }
}
if (failed > 0 && mode === 'required') process.exit(1);
