/**
 * Preloaded (`NODE_OPTIONS=--require .../cpu-prof-preload.js`) into the children of the produce
 * benchmark when it runs with `--cpu-prof DIR`: Node refuses `--cpu-prof` in NODE_OPTIONS, and
 * LocalCluster takes no execArgv, so this profiles the process through the inspector and writes
 * `<DIR>/<argv basename>-<pid>.cpuprofile` when it exits (a clean stop; a process killed by
 * SIGKILL writes nothing). DIR comes from `RAFTMQ_CPU_PROF_DIR`.
 */
import * as fs from 'node:fs';
import * as inspector from 'node:inspector';
import * as path from 'node:path';

const dir = process.env.RAFTMQ_CPU_PROF_DIR ?? '';
if (dir !== '') {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  process.on('exit', () => {
    // The in-process session answers synchronously, so this runs before the process ends.
    session.post('Profiler.stop', (err, result) => {
      if (err !== null) {
        process.stderr.write(`cpu profile not written: ${err.message}\n`);
        return;
      }
      const name = `${path.basename(process.argv[1] ?? 'node', '.js')}-${process.pid}.cpuprofile`;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, name), JSON.stringify(result.profile));
    });
  });
}
