/**
 * A broker state machine on a simulated machine, for the BrokerState tests: a real MessageStore
 * and BrokerState over SimMachine's disk and metadata, entries appended to the CommitLog and
 * applied as the Raft driver would, and the driver's replay on start.
 */
import { BrokerState, type BrokerStateOptions } from '../../src/broker/broker-state';
import type { TopicConfig } from '../../src/broker/broker-types';
import { silentLogger } from '../../src/common/logger';
import { EntryType, type LogEntry } from '../../src/store/log-record';
import type { StoredMessage } from '../../src/store/message-format';
import { MessageStore } from '../../src/store/message-store';
import { MetaKeys } from '../../src/store/meta';
import { SimMachine } from '../store/sim-machine';
import { PLAIN_MESSAGE_FIELDS } from '../store/stored-message-fields';

/** Message `n` of `topic`'s queue `queueId`, with every field set from `n`. */
export function message(n: number, topic: string, queueId: number): StoredMessage {
  return {
    topic,
    queueId,
    body: Buffer.from(`body-${n}`),
    bodyEncoding: 'IDENTITY',
    tag: 'T',
    keys: [`k${n}`],
    userProperties: new Map([['n', String(n)]]),
    messageId: `id-${n}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    storeTimestampMs: 1_700_000_000_000 + n * 10,
    bornHost: 'h',
    storeHost: 's',
    ...PLAIN_MESSAGE_FIELDS,
  };
}

export const TOPIC: TopicConfig = {
  name: 'orders',
  queueCount: 2,
  perm: 'READ_WRITE',
  messageTypes: ['NORMAL'],
};

export class StateNode extends SimMachine {
  store!: MessageStore;
  state!: BrokerState;
  private readonly term = 1;

  constructor(
    seed: number,
    private readonly options: Partial<BrokerStateOptions> = { checkpointIntervalMs: 0 },
  ) {
    super(seed);
  }

  async open(): Promise<void> {
    const inc = this.incarnation();
    this.store = await MessageStore.open('/node', inc);
    this.state = await BrokerState.open(
      this.store,
      inc.meta,
      this.clock,
      silentLogger(),
      this.options,
    );
  }

  /** The applied index as stored in the metadata. */
  async storedApplied(): Promise<number | undefined> {
    const bytes = await this.meta.get(MetaKeys.applyIndex);
    return bytes === undefined ? undefined : Number(Buffer.from(bytes).toString('utf8'));
  }

  /** Re-applies what the log holds after the applied index, as the driver does on start. */
  async replay(): Promise<void> {
    const log = this.store.commitLog;
    const from = this.state.appliedIndex + 1;
    if (from > log.lastIndex()) return;
    await this.state.apply(await log.readRange(from, log.lastIndex() - from + 1, 1 << 24));
  }

  /** Appends payloads as committed entries and applies them; returns their indexes. */
  async commit(payloads: Uint8Array[]): Promise<number[]> {
    const log = this.store.commitLog;
    const entries: LogEntry[] = payloads.map((payload, i) => ({
      index: log.lastIndex() + i + 1,
      term: this.term,
      type: EntryType.NORMAL,
      payload,
    }));
    log.append(entries);
    await log.flush();
    await this.state.apply(entries);
    return entries.map((e) => e.index);
  }

  async close(): Promise<void> {
    await this.state.close();
    await this.store.close();
  }
}
