/**
 * Turns concurrent sends into few Raft entries. Sends that arrive together (in one turn of the
 * event loop, or while `proposalsInFlightMax` proposals are in flight; see group-commit.ts) are
 * packed into message-batch payloads of up to `entryBytesMax` and proposed together; the Raft
 * driver in turn persists and replicates everything proposed while its previous round was in
 * flight, so under load one fsync and one network write serve many sends.
 *
 * The messages of one send always travel in one entry, so a send is stored whole or not at all:
 * nothing partially written is ever acknowledged or delivered.
 *
 * Bounded: at most `pendingMessagesMax` messages and `pendingBytesMax` bytes wait for commit;
 * beyond that a send is refused with BUSY at once.
 */
import { RaftmqError } from '../common/errors';
import type { StoredMessage } from '../store/message-format';
import { encodeSizedMessageInto, encodedMessageSize } from '../store/message-codec';
import {
  MESSAGE_BATCH_HEADER_BYTES,
  PAYLOAD_KIND_MESSAGES,
  indexFieldsOf,
  noteEncodedBatch,
} from '../store/message-batch';
import type { MessageIndexFields } from '../store/message-codec';
import type { DispatchedBatch } from '../store/message-store';
import { GroupCommitQueue, proposeSafely, takeLive } from './group-commit';
import type { ProposeAck } from './raft-waiters';

export interface SendBatcherOptions {
  /** Target payload size of one entry (a single larger send gets an entry of its own). */
  entryBytesMax: number;
  /** Largest payload of one send (the CommitLog's payload limit). */
  sendBytesMax: number;
  /** Entries proposed in one call, at most (the Raft core's batchEntriesMax). */
  entriesPerProposalMax: number;
  pendingMessagesMax: number;
  pendingBytesMax: number;
  /** Proposals outstanding at once; later sends wait and share the next one. */
  proposalsInFlightMax: number;
}

export const SEND_BATCHER_DEFAULTS: Readonly<SendBatcherOptions> = Object.freeze({
  entryBytesMax: 512 * 1024,
  sendBytesMax: 16 * 1024 * 1024,
  entriesPerProposalMax: 256,
  pendingMessagesMax: 200_000,
  pendingBytesMax: 256 * 1024 * 1024,
  proposalsInFlightMax: 2,
});

export interface SendBatcherDeps {
  propose(payloads: readonly Uint8Array[]): Promise<ProposeAck>;
  /** The clock of submitters' deadlines. */
  nowMs(): number;
  /** The dispatch outcome of an applied entry, taken once. */
  takeMessages(index: number): DispatchedBatch | undefined;
}

/**
 * Where a send's messages went: the entry's Raft index, and where each message of the entry
 * went; this send's messages are `batch` messages `[from, from + count)`, in order.
 */
export interface PlacedSend {
  readonly index: number;
  readonly batch: DispatchedBatch;
  readonly from: number;
  readonly count: number;
}

/** Messages and bytes waiting for commit, shared by the batcher and its sends. */
interface PendingCount {
  messages: number;
  bytes: number;
}

/**
 * One submitted send. A class, so that settling it (and giving back its share of the pending
 * bound) is one method for all sends, not two closures made per send: V8 optimizes each
 * instance of a hot closure on its own, and those were compiled again and again under load.
 */
class PendingSend {
  constructor(
    readonly messages: readonly StoredMessage[],
    readonly deadlineMs: number,
    readonly sizes: readonly number[],
    readonly bytes: number,
    private readonly count: PendingCount,
    private readonly onPlaced: (placed: PlacedSend) => void,
    private readonly onFailed: (err: Error) => void,
  ) {}

  private settled = false;

  /** Settles the send once; a later resolve or reject does nothing. */
  resolve(placed: PlacedSend): void {
    if (this.release()) this.onPlaced(placed);
  }

  reject(err: Error): void {
    if (this.release()) this.onFailed(err);
  }

  /** Gives back the send's share of the pending bound, once: false when already settled. */
  private release(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.count.messages -= this.messages.length;
    this.count.bytes -= this.bytes;
    return true;
  }
}

export class SendBatcher {
  private readonly queue: GroupCommitQueue<PendingSend>;
  private readonly count: PendingCount = { messages: 0, bytes: 0 };
  private closed = false;

  constructor(
    private readonly deps: SendBatcherDeps,
    readonly options: Readonly<SendBatcherOptions> = SEND_BATCHER_DEFAULTS,
  ) {
    this.queue = new GroupCommitQueue((sends) => this.flush(sends), options.proposalsInFlightMax);
  }

  /** Messages and bytes waiting for commit. */
  get pending(): { messages: number; bytes: number } {
    return { messages: this.count.messages, bytes: this.count.bytes };
  }

  /**
   * Stores `messages` (already checked and given their queues) in one entry; resolves with where
   * each went, in order, once committed and applied here. Each message is checked and sized
   * once, here: encoding errors reject before anything is proposed. The messages must not be
   * changed until the promise settles.
   */
  submit(
    messages: readonly StoredMessage[],
    deadlineMs = Number.POSITIVE_INFINITY,
  ): Promise<PlacedSend> {
    if (this.closed) return Promise.reject(new RaftmqError('STORE_CLOSED', 'broker is stopping'));
    if (messages.length === 0) {
      return Promise.reject(new RaftmqError('INVALID_ARGUMENT', 'a send needs a message'));
    }
    const sizes = new Array<number>(messages.length);
    let bytes = 0;
    try {
      for (let i = 0; i < messages.length; i++) {
        const size = encodedMessageSize(messages[i] as StoredMessage);
        sizes[i] = size;
        bytes += size;
      }
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (bytes + MESSAGE_BATCH_HEADER_BYTES > this.options.sendBytesMax) {
      return Promise.reject(
        new RaftmqError(
          'RECORD_TOO_LARGE',
          `a send of ${bytes} bytes exceeds ${this.options.sendBytesMax}; send fewer messages`,
        ),
      );
    }
    const count = this.count;
    if (
      count.messages + messages.length > this.options.pendingMessagesMax ||
      count.bytes + bytes > this.options.pendingBytesMax
    ) {
      return Promise.reject(
        new RaftmqError('BUSY', 'too many messages waiting for commit; retry shortly'),
      );
    }
    count.messages += messages.length;
    count.bytes += bytes;
    return new Promise<PlacedSend>((resolve, reject) => {
      this.queue.push(new PendingSend(messages, deadlineMs, sizes, bytes, count, resolve, reject));
    });
  }

  /** Refuses new sends; those in flight still finish (or fail with the driver). */
  close(): void {
    this.closed = true;
  }

  private flush(group: readonly PendingSend[]): Promise<unknown> {
    const sends = takeLive(group, this.deps.nowMs());
    // Pack whole sends into entries, then entries into proposals.
    let entries: PendingSend[][] = [];
    let current: PendingSend[] = [];
    let currentBytes = MESSAGE_BATCH_HEADER_BYTES;
    for (const s of sends) {
      if (current.length > 0 && currentBytes + s.bytes > this.options.entryBytesMax) {
        entries.push(current);
        current = [];
        currentBytes = MESSAGE_BATCH_HEADER_BYTES;
      }
      current.push(s);
      currentBytes += s.bytes;
    }
    if (current.length > 0) entries.push(current);
    const proposals: Promise<void>[] = [];
    while (entries.length > 0) {
      const chunk = entries.slice(0, this.options.entriesPerProposalMax);
      entries = entries.slice(chunk.length);
      proposals.push(this.propose(chunk));
    }
    return Promise.all(proposals);
  }

  private propose(entries: PendingSend[][]): Promise<void> {
    let payloads: Buffer[];
    try {
      payloads = entries.map((sends) => encodeEntry(sends));
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      for (const sends of entries) for (const s of sends) s.reject(e);
      return Promise.resolve();
    }
    return proposeSafely(() => this.deps.propose(payloads)).then(
      (ack) => {
        for (let k = 0; k < entries.length; k++) {
          const sends = entries[k] as PendingSend[];
          try {
            this.complete(ack.firstIndex + k, sends);
          } catch (err) {
            // A throwing dispatch lookup must not strand the sends (and their share of the
            // bound) forever: they fail, the other entries go on.
            const e = new RaftmqError('INTERNAL', `entry ${ack.firstIndex + k}: ${String(err)}`);
            for (const s of sends) s.reject(e);
          }
        }
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const sends of entries) for (const s of sends) s.reject(e);
      },
    );
  }

  private complete(index: number, sends: readonly PendingSend[]): void {
    const placed = this.deps.takeMessages(index);
    let expected = 0;
    for (const s of sends) expected += s.messages.length;
    if (placed === undefined || placed.count !== expected) {
      const err = new RaftmqError(
        'INTERNAL',
        `entry ${index}: dispatch outcome missing or of the wrong size`,
      );
      for (const s of sends) s.reject(err);
      return;
    }
    let at = 0;
    for (const s of sends) {
      s.resolve({ index, batch: placed, from: at, count: s.messages.length });
      at += s.messages.length;
    }
  }
}

function encodeEntry(sends: readonly PendingSend[]): Buffer {
  let bytes = MESSAGE_BATCH_HEADER_BYTES;
  let count = 0;
  for (const s of sends) {
    bytes += s.bytes;
    count += s.messages.length;
  }
  const buf = Buffer.allocUnsafe(bytes);
  buf[0] = PAYLOAD_KIND_MESSAGES;
  buf.writeUInt32BE(count, 1);
  let offset = MESSAGE_BATCH_HEADER_BYTES;
  const fields = new Array<MessageIndexFields>(count);
  let noted = 0;
  for (const s of sends) {
    for (let i = 0; i < s.messages.length; i++) {
      // Sized (and so checked) by submit; messages are not changed while they wait.
      const message = s.messages[i] as StoredMessage;
      const sizeBytes = encodeSizedMessageInto(message, buf, offset, s.sizes[i] as number);
      const f = indexFieldsOf(message, sizeBytes);
      if (f !== undefined) fields[noted++] = f;
      offset += sizeBytes;
    }
  }
  noteEncodedBatch(buf, noted === count ? fields : undefined);
  return buf;
}
