/**
 * ConsumeQueue options: the type, frozen defaults and their checked resolution, shared by a
 * single queue and a ConsumeQueueSet; and the check that a topic and queue id are safe to use as
 * directory names.
 */
import { assert } from '../common/assert';
import { intInRange, resolveOptions, type OptionSpec } from '../common/options';
import { CQ_RECORD_BYTES } from './consume-queue-record';

export interface ConsumeQueueOptions {
  /** Records per file (RocketMQ `mappedFileSizeConsumeQueue` / 20: 300,000, ~5.72 MB). */
  entriesPerFile: number;
  /** Appended records not yet written, per queue; beyond it `append` refuses with BUSY. */
  pendingBytesMax: number;
  /** Most records one `readRange` returns. */
  readCountMax: number;
  /** Open file descriptors shared by all queues of a ConsumeQueueSet. */
  openFilesMax: number;
  /** Queues a ConsumeQueueSet keeps open; idle ones are closed beyond it. */
  queuesOpenMax: number;
}

export const CONSUME_QUEUE_DEFAULTS: Readonly<ConsumeQueueOptions> = Object.freeze({
  entriesPerFile: 300_000,
  pendingBytesMax: 1024 * 1024,
  readCountMax: 4096,
  openFilesMax: 256,
  queuesOpenMax: 4096,
});

const SPEC: OptionSpec<ConsumeQueueOptions> = {
  entriesPerFile: intInRange(1, 1 << 26),
  pendingBytesMax: intInRange(CQ_RECORD_BYTES, 2 ** 31),
  readCountMax: intInRange(1, 1 << 20),
  openFilesMax: intInRange(2, 100_000),
  queuesOpenMax: intInRange(1, 1 << 20),
};

/** Checks and freezes ConsumeQueue options; throws INVALID_OPTION naming the field. */
export function resolveConsumeQueueOptions(
  input?: Partial<ConsumeQueueOptions>,
): Readonly<ConsumeQueueOptions> {
  return resolveOptions('consumeQueue', CONSUME_QUEUE_DEFAULTS, SPEC, input);
}

/** Asserts a topic and queue id are safe as path components (the broker validates names). */
export function assertQueueName(topic: string, queueId: number): void {
  assert(
    topic.length > 0 &&
      topic !== '.' &&
      topic !== '..' &&
      !topic.includes('/') &&
      !topic.includes('\0'),
    () => `unsafe topic name ${JSON.stringify(topic)}`,
  );
  assert(Number.isSafeInteger(queueId) && queueId >= 0, () => `bad queue id ${queueId}`);
}
