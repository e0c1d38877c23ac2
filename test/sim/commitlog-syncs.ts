/*
 * Test hook: every CommitLog fsync of a simulated group first awaits `before(id)` of its node
 * (a delay, a gate held by the test, a check). Other files of the node are left alone.
 */
import type { NodeId } from '../../src/common/types';
import type { SimCluster } from '../../src/sim/sim-cluster';
import type { DiskFile } from '../../src/store/disk';

export function beforeCommitLogSyncs(
  cluster: SimCluster,
  before: (id: NodeId) => Promise<void>,
): void {
  for (const id of cluster.ids) {
    const node = cluster.node(id);
    const open = node.disk.open.bind(node.disk);
    node.disk.open = async (path: string, create: boolean): Promise<DiskFile> => {
      const file = await open(path, create);
      if (!path.includes('commitlog')) return file;
      const sync = file.sync.bind(file);
      file.sync = async () => {
        await before(id);
        return sync();
      };
      return file;
    };
  }
}
