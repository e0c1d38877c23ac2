#!/usr/bin/env node
/*
 * Builds native/page-cache.c into dist/native/page-cache.node with the system C compiler and
 * the headers of the Node.js that runs this script (no node-gyp, no download: the build works
 * offline). The addon is optional: without a compiler, headers or Linux, this prints why and
 * exits 0, and the store runs without releasing page-cache pages (docs/storage.md).
 * `RAFTMQ_NATIVE=off` skips the build; `RAFTMQ_NATIVE=required` makes a failed build an error.
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

/** Directories that may hold node_api.h: beside this Node.js, then npm's configured nodedir. */
function headerDir() {
  const candidates = [path.resolve(path.dirname(process.execPath), '..', 'include', 'node')];
  const nodedir = process.env.npm_config_nodedir;
  if (nodedir) candidates.push(path.join(nodedir, 'include', 'node'));
  return candidates.find((dir) => fs.existsSync(path.join(dir, 'node_api.h')));
}

function upToDate() {
  try {
    return fs.statSync(output).mtimeMs >= fs.statSync(source).mtimeMs;
  } catch {
    return false;
  }
}

if (mode === 'off') skip('RAFTMQ_NATIVE=off');
if (process.platform !== 'linux') skip(`posix_fadvise is used on Linux only (${process.platform})`);
if (!upToDate()) {
  const include = headerDir();
  if (include === undefined) skip('no Node.js headers (node_api.h) found');
  fs.mkdirSync(outDir, { recursive: true });
  const compiler = process.env.CC || 'cc';
  const args = ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-I', include, source, '-o', output];
  const run = spawnSync(compiler, args, { stdio: 'inherit' });
  if (run.error) skip(`${compiler}: ${run.error.message}`);
  if (run.status !== 0) skip(`${compiler} exited with ${run.status}`);
}
