/**
 * Entry payloads whose bytes are known to be the bytes their encoder wrote, while they are
 * alive. Applying one skips the CRC32C of each message inside (message-batch.ts
 * `readMessageBatchIndexFields`), which on a follower was three quarters of its checksum work:
 * one native call per message. A payload is verified when
 *
 * - this process encoded it (the leader's message batches): its bytes crossed no disk and no
 *   network; or
 * - it arrived in an Append with the sender's record checksum, and the checksum computed here
 *   over the received bytes matched (raft-append-decode.ts). A sender attaches its checksum only
 *   to payloads verified on its side, so the trust runs back to the node that encoded them.
 *
 * Every other payload is checked message by message: one read back from disk, a copy of a
 * verified one, one that came without a checksum. Held weakly: nothing is kept alive by it.
 */
const VERIFIED = new WeakSet<Uint8Array>();

/** Marks `payload` as verified (see the file comment). */
export function notePayloadVerified(payload: Uint8Array): void {
  VERIFIED.add(payload);
}

/** True when `payload` (this very object) was marked verified. */
export function isPayloadVerified(payload: Uint8Array): boolean {
  return VERIFIED.has(payload);
}
