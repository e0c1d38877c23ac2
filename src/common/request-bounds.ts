/**
 * Per-RPC bounds on request bytes, checked before a request is decoded, by the broker's
 * services (broker/messaging-proto.ts) and the NameServer's (namesrv/namesrv-grpc.ts), which
 * may not import each other. protobuf.js turns a request into objects of up to some 30 times
 * its size (a repeated field of empty messages costs about 65 bytes of heap per 2 bytes on the
 * wire), and gRPC inflates a compressed request before it is decoded: without a bound, one
 * request of a few KiB on the wire could exhaust the heap.
 */

/** Why a request of `bytes` is not decoded, or undefined when it is within `bytesMax`. */
export function overBound(rpc: string, bytes: number, bytesMax: number): string | undefined {
  return bytes > bytesMax
    ? `a request of ${bytes} bytes is over the ${bytesMax}-byte limit of ${rpc}`
    : undefined;
}
