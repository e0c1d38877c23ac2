/**
 * A TCP proxy on loopback for tests of what a connection does when its peer stops reading or
 * the connection is cut under it.
 */
import { strict as assert } from 'node:assert';
import * as net from 'node:net';

const HOST = '127.0.0.1';

export interface TcpProxy {
  readonly port: number;
  /** Stops reading from the connections accepted so far and later (their senders fill up). */
  stall(): void;
  /** Destroys every connection held; new ones are carried normally again. */
  cut(): void;
  close(): Promise<void>;
}

/** A proxy to `targetPort` on loopback, listening on a port of its own. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const accepted = new Set<net.Socket>();
  let stalled = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, HOST);
    for (const sock of [client, upstream]) {
      sockets.add(sock);
      sock.on('error', () => undefined);
      // One side gone (an error, a reset) takes the other with it, as a real cut would.
      sock.on('close', () => {
        sockets.delete(sock);
        client.destroy();
        upstream.destroy();
      });
    }
    accepted.add(client);
    client.on('close', () => accepted.delete(client));
    client.pipe(upstream);
    upstream.pipe(client);
    if (stalled) {
      client.unpipe();
      client.pause();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    port: address.port,
    stall(): void {
      stalled = true;
      for (const client of accepted) {
        client.unpipe();
        client.pause();
      }
    },
    cut(): void {
      stalled = false;
      for (const sock of sockets) sock.destroy();
    },
    async close(): Promise<void> {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
