#!/usr/bin/env node
/*
 * Builds native/page-cache.c into dist/native/page-cache.node with the system C compiler and
 * the headers of the Node.js that runs this script (no node-gyp, no download: the build works
 * offline; it takes a fraction of a second, so it runs every time). The addon is optional at
 * run time: without a compiler, headers or Linux, this prints why and exits 0, and the store
 * runs without releasing page-cache pages (docs/storage.md, "Page cache").
 * `RAFTMQ_NATIVE=off` skips the build (and removes an addon built before);
 * `RAFTMQ_NATIVE=required` makes a failed build an error and compiles with -Werror.
 * `CC` names the compiler, with arguments if any (`CC="ccache gcc"`); `cc` by default.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const source = path.join(__dirname, 'page-cache.c');
const outDir = path.join(root, 'dist', 'native');
const output = path.join(outDir, 'page-cache.node');
const mode = process.env.RAFTMQ_NATIVE ?? 'optional';

function skip(reason) {
  const message = `native/build.js: page-cache addon not built: ${reason}`;
  if (mode === 'required') {
    console.error(message);
    process.exit(1);
  }
  console.warn(`${message} (the store runs without releasing page-cache pages)`);
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
fs.rmSync(output, { force: true });
if (mode === 'off') skip('RAFTMQ_NATIVE=off');
if (process.platform !== 'linux') skip(`posix_fadvise is used on Linux only (${process.platform})`);
const include = headerDir();
if (include === undefined) skip('no Node.js headers (node_api.h) found');
fs.mkdirSync(outDir, { recursive: true });
const [compiler, ...compilerArgs] = (process.env.CC || 'cc').trim().split(/\s+/);
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
  source,
  '-o',
  output,
];
const run = spawnSync(compiler, args, { stdio: 'inherit' });
if (run.error) skip(`${compiler}: ${run.error.message}`);
if (run.status !== 0) skip(`${compiler} exited with ${run.status ?? run.signal}`);
