/**
 * Test helper: a view of a metadata store that stops working when fenced, so the promises a
 * crashed incarnation leaves behind cannot write into the next one's metadata.
 */
import type { MetaStore } from '../../src/store/meta';

export function fencedMeta(store: MetaStore): { meta: MetaStore; fence: () => void } {
  let fenced = false;
  const check = (): void => {
    if (fenced) throw new Error('metadata fenced: process crashed');
  };
  const meta: MetaStore = {
    get: async (key) => { check(); return store.get(key); },
    batch: async (ops, options) => { check(); return store.batch(ops, options); },
    batchWith: store.batchWith === undefined ? undefined
      : async (build, options) => { check(); return store.batchWith?.(build, options); },
    scan: async (prefix, options) => { check(); return store.scan(prefix, options); },
    close: async () => { check(); return store.close(); },
  };
  return { meta, fence: () => { fenced = true; } };
}
