/*
 * Every compiled module's `exports` object must keep V8's fast properties. TypeScript compiles a
 * value re-export (`export { x } from './m'`, or `export { x }` of an imported name) to an
 * accessor defined over a property it first set to `undefined`; V8 turns such an object into a
 * dictionary, and then every call made through the module from optimized code pays a generic
 * property load (docs/performance.md, "What V8 costs"). (`export *` defines its getters on new
 * properties, which V8 keeps fast.) The test loads each module under dist/src (the compiled
 * output the tests run from) and asks V8 with `%HasFastProperties`.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';

/** The compiled sources, from dist/test/common. */
const DIST_SRC = path.join(__dirname, '..', '..', 'src');

/** Not loaded here: `start.js` runs the local cluster when required. */
const SKIPPED = new Set(['cli/start.js']);

function modules(dir: string): string[] {
  const out: string[] = [];
  for (const name of fs.readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    if (fs.statSync(full).isDirectory()) out.push(...modules(full));
    else if (name.endsWith('.js')) out.push(full);
  }
  return out;
}

describe('compiled modules', () => {
  it('keep fast properties on their exports objects', () => {
    v8.setFlagsFromString('--allow-natives-syntax');
    // V8 parses natives syntax only in code compiled after the flag is set, hence a Function.
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (
      o: unknown,
    ) => boolean;
    v8.setFlagsFromString('--no-allow-natives-syntax');
    const files = modules(DIST_SRC).filter(
      (f) => !SKIPPED.has(path.relative(DIST_SRC, f).split(path.sep).join('/')),
    );
    assert.ok(files.length > 50, `found only ${files.length} modules under ${DIST_SRC}`);
    // Loaded by path, one by one: there is no static import of every module.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const slow = files.filter((f) => !hasFastProperties(require(f)));
    assert.deepEqual(
      slow.map((f) => path.relative(DIST_SRC, f)),
      [],
      'these modules have dictionary-mode exports (a value re-export?); import from the defining module',
    );
  });
});
