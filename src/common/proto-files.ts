/**
 * Finding and loading raftmq's `.proto` files at run time, shared by the broker, the NameServer
 * and the client SDK (which may not import the broker).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from './errors';

/** Environment variable naming the directory of the `.proto` files (overrides the lookup). */
export const PROTO_DIR_ENV = 'RAFTMQ_PROTO_DIR';

/** How far {@link findProtoDir} walks up from this file looking for the package root. */
const PACKAGE_ROOT_SEARCH_DEPTH_MAX = 8;

/**
 * The directory holding `fileName`: `override` when non-empty, else `$RAFTMQ_PROTO_DIR`, else
 * `proto/` under the package root, found by walking up from this file to the first directory
 * with a `package.json` (works from `src/broker/` under ts-node and from `dist/src/broker/`).
 * Throws INVALID_OPTION when the file is not there.
 */
export function findProtoDir(fileName: string, override = ''): string {
  const fromEnv = process.env[PROTO_DIR_ENV] ?? '';
  const given = override !== '' ? override : fromEnv;
  if (given !== '') {
    const dir = path.resolve(given);
    if (!fs.existsSync(path.join(dir, fileName))) {
      throw new RaftmqError('INVALID_OPTION', `proto directory ${dir} has no ${fileName}`, {
        details: { option: override !== '' ? 'protoDir' : PROTO_DIR_ENV, dir },
      });
    }
    return dir;
  }
  let dir = __dirname;
  for (let depth = 0; depth < PACKAGE_ROOT_SEARCH_DEPTH_MAX; depth++) {
    const candidate = path.join(dir, 'proto');
    if (
      fs.existsSync(path.join(dir, 'package.json')) &&
      fs.existsSync(path.join(candidate, fileName))
    ) {
      return candidate;
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new RaftmqError(
    'INVALID_OPTION',
    `cannot find proto/${fileName} above ${__dirname}; set ${PROTO_DIR_ENV} or protoDir`,
    { details: { option: 'protoDir' } },
  );
}

/** proto-loader settings used by every raftmq service: camelCase fields, numbers for uint64. */
export const PROTO_LOADER_OPTIONS: Readonly<protoLoader.Options> = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

const loaded = new Map<string, Promise<protoLoader.PackageDefinition>>();

/** Loads (once per file) the package definition of `protoFile`. */
export function loadProto(protoFile: string): Promise<protoLoader.PackageDefinition> {
  let definition = loaded.get(protoFile);
  if (definition === undefined) {
    definition = protoLoader.load(protoFile, { ...PROTO_LOADER_OPTIONS });
    loaded.set(protoFile, definition);
    // A failed load is not cached, so a corrected file can be loaded later.
    definition.catch(() => loaded.delete(protoFile));
  }
  return definition;
}
