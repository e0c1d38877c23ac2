/**
 * One gRPC channel per NameServer address, opened on first use, for the broker-side clients
 * (namesrv-client.ts, namesrv-lookup.ts). The protocol file is loaded on the first call, so
 * construction is synchronous and cannot fail on IO.
 */
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from '../common/errors';
import { methodOf, NAMESRV_CHANNEL_OPTIONS, serviceOf, unaryCall } from './namesrv-grpc';
import { loadNamesrvProto, NAMESRV_SERVICE } from './namesrv-wire';

/** The NameServer RPCs. */
export type NameServerRpc = 'Register' | 'Unregister' | 'GetRoute' | 'GetCluster';

/** Most NameServer addresses a client takes. */
export const NAMESRV_ADDRESSES_MAX = 64;

/**
 * Checks a list of NameServer addresses (`host:port`, IPv6 hosts in brackets): 1 to
 * {@link NAMESRV_ADDRESSES_MAX}, no duplicates. Throws INVALID_OPTION naming `field`.
 */
export function checkNamesrvAddresses(addresses: unknown, field: string): readonly string[] {
  const fail = (message: string): never => {
    throw new RaftmqError('INVALID_OPTION', `${field}: ${message}`, { details: { option: field } });
  };
  if (!Array.isArray(addresses) || addresses.length === 0) fail('must be a non-empty array');
  const list = addresses as unknown[];
  if (list.length > NAMESRV_ADDRESSES_MAX) fail(`at most ${NAMESRV_ADDRESSES_MAX} addresses`);
  for (const address of list) {
    const match =
      typeof address === 'string'
        ? /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):([0-9]{1,5})$/.exec(address)
        : null;
    const port = Number(match?.[2]);
    if (match === null || port < 1 || port > 65_535) {
      fail(`${JSON.stringify(address)} is not host:port with port in [1, 65535]`);
    }
  }
  if (new Set(list).size !== list.length) fail('has duplicates');
  return Object.freeze([...(list as string[])]);
}

/** Channels to a fixed set of NameServers. */
export class NameServerChannels {
  private readonly clients = new Map<string, grpc.Client>();
  private service: Promise<protoLoader.ServiceDefinition> | undefined;
  private closed = false;

  constructor(
    readonly addresses: readonly string[],
    private readonly protoDir = '',
  ) {}

  /**
   * Calls `rpc` on the NameServer at `address`; rejects with the gRPC (or load) error, or with
   * CANCELLED once `signal` is aborted.
   */
  async call(
    address: string,
    rpc: NameServerRpc,
    request: object,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const service = await this.loadService();
    if (this.closed) throw new RaftmqError('INTERNAL', 'NameServer channels are closed');
    let client = this.clients.get(address);
    if (client === undefined) {
      if (!this.addresses.includes(address)) {
        throw new RaftmqError('INTERNAL', `${address} is not a configured NameServer`);
      }
      client = new grpc.Client(address, grpc.credentials.createInsecure(), {
        ...NAMESRV_CHANNEL_OPTIONS,
      });
      this.clients.set(address, client);
    }
    return unaryCall(client, methodOf(service, rpc), request, timeoutMs, signal);
  }

  /** Closes every channel; later calls reject. Idempotent. */
  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  private loadService(): Promise<protoLoader.ServiceDefinition> {
    if (this.service === undefined) {
      const loading = loadNamesrvProto(this.protoDir).then((d) => serviceOf(d, NAMESRV_SERVICE));
      this.service = loading;
      // A failed load is not kept, so the next call tries again.
      loading.catch(() => {
        if (this.service === loading) this.service = undefined;
      });
    }
    return this.service;
  }
}
