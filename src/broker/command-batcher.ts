/**
 * Turns concurrent broker commands into few Raft entries. Commands submitted together (acks,
 * invisibility changes, receives of many consumers: in one turn of the event loop, or while
 * `proposalsInFlightMax` proposals are in flight; see group-commit.ts) are packed into command
 * entries of at most `commandsPerEntryMax` commands, so acknowledging at full speed costs one
 * Raft round per batch, not per message. Each submitter gets its own command's result, taken
 * from the entry's outcome once it is applied on this node.
 *
 * Bounded: at most `pendingMax` commands wait for commit; beyond that a submit is refused with
 * BUSY at once.
 */
import { RaftmqError } from '../common/errors';
import {
  COMMANDS_PER_ENTRY_MAX,
  type BrokerCommand,
  type CommandResult,
  encodeCommands,
} from './broker-command';
import { GroupCommitQueue, proposeSafely, takeLive } from './group-commit';
import type { ProposeAck } from './raft-waiters';

export interface CommandBatcherOptions {
  commandsPerEntryMax: number;
  pendingMax: number;
  /** Proposals outstanding at once; later commands wait and share the next one. */
  proposalsInFlightMax: number;
}

export const COMMAND_BATCHER_DEFAULTS: Readonly<CommandBatcherOptions> = Object.freeze({
  commandsPerEntryMax: 1024,
  pendingMax: 100_000,
  proposalsInFlightMax: 2,
});

export interface CommandBatcherDeps {
  propose(payloads: readonly Uint8Array[]): Promise<ProposeAck>;
  /** The clock of submitters' deadlines. */
  nowMs(): number;
  /** The results of an applied command entry, taken once. */
  takeResults(index: number): readonly CommandResult[] | undefined;
}

interface Pending {
  readonly command: BrokerCommand;
  readonly deadlineMs: number;
  readonly resolve: (result: CommandResult) => void;
  readonly reject: (err: Error) => void;
}

export class CommandBatcher {
  private readonly queue: GroupCommitQueue<Pending>;
  private pending = 0;
  private closed = false;

  constructor(
    private readonly deps: CommandBatcherDeps,
    readonly options: Readonly<CommandBatcherOptions> = COMMAND_BATCHER_DEFAULTS,
  ) {
    if (!(
      options.commandsPerEntryMax >= 1 && options.commandsPerEntryMax <= COMMANDS_PER_ENTRY_MAX
    )) {
      throw new RaftmqError(
        'INVALID_OPTION',
        `commandsPerEntryMax must be in [1, ${COMMANDS_PER_ENTRY_MAX}]`,
        { details: { option: 'commandsPerEntryMax' } },
      );
    }
    this.queue = new GroupCommitQueue((all) => this.flush(all), options.proposalsInFlightMax);
  }

  /** Commands waiting for commit. */
  get pendingCount(): number {
    return this.pending;
  }

  /**
   * Resolves with the command's result once its entry is committed and applied here. A command
   * still waiting for a proposal at `deadlineMs` is refused with TIMEOUT and never proposed.
   */
  submit(command: BrokerCommand, deadlineMs = Number.POSITIVE_INFINITY): Promise<CommandResult> {
    return this.submitAll([command], deadlineMs).then((results) => results[0] as CommandResult);
  }

  /**
   * Submits `commands` together (they share the next proposals, in order) and resolves with
   * their results once all are applied here: one promise for many commands (an AckMessage of a
   * thousand entries). Rejects as a whole when any is refused or its entry fails.
   */
  submitAll(
    commands: readonly BrokerCommand[],
    deadlineMs = Number.POSITIVE_INFINITY,
  ): Promise<CommandResult[]> {
    if (this.closed) return Promise.reject(new RaftmqError('STORE_CLOSED', 'broker is stopping'));
    if (commands.length === 0) return Promise.resolve([]);
    if (this.pending + commands.length > this.options.pendingMax) {
      return Promise.reject(
        new RaftmqError('BUSY', 'too many commands waiting for commit; retry shortly'),
      );
    }
    this.pending += commands.length;
    return new Promise<CommandResult[]>((resolve, reject) => {
      const results = new Array<CommandResult>(commands.length);
      let left = commands.length;
      let failed = false;
      commands.forEach((command, i) => {
        this.queue.push({
          command,
          deadlineMs,
          resolve: (r) => {
            this.pending -= 1;
            results[i] = r;
            if (--left === 0 && !failed) resolve(results);
          },
          reject: (err) => {
            this.pending -= 1;
            if (!failed) reject(err);
            failed = true;
          },
        });
      });
    });
  }

  /** Refuses new commands; those in flight still finish (or fail with the driver). */
  close(): void {
    this.closed = true;
  }

  private flush(group: readonly Pending[]): Promise<void> {
    const all = takeLive(group, this.deps.nowMs());
    if (all.length === 0) return Promise.resolve();
    const max = this.options.commandsPerEntryMax;
    const entries: Pending[][] = [];
    const payloads: Uint8Array[] = [];
    try {
      for (let i = 0; i < all.length; i += max) packEntry(all.slice(i, i + max), entries, payloads);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      for (const p of all) p.reject(e);
      return Promise.resolve();
    }
    return proposeSafely(() => this.deps.propose(payloads)).then(
      (ack) => {
        entries.forEach((entry, e) => {
          const index = ack.firstIndex + e;
          const results = this.deps.takeResults(index);
          entry.forEach((p, i) => {
            const r = results?.[i];
            if (r === undefined) {
              p.reject(new RaftmqError('INTERNAL', `command entry ${index}: outcome missing`));
            } else {
              p.resolve(r);
            }
          });
        });
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const p of all) p.reject(e);
      },
    );
  }
}

/**
 * Encoded bytes of one command entry, at most (a single command larger than this still gets an
 * entry of its own). Counting commands alone did not bound an entry: pop receives of a thousand
 * messages each, hundreds of them gathered while proposals were in flight, made an entry over
 * the CommitLog's 16 MiB payload limit, whose refusal stopped the Raft driver.
 */
export const COMMAND_ENTRY_BYTES_MAX = 4 * 1024 * 1024;

/** Encodes `group` as one entry, or as halves (recursively) while it is over the byte bound. */
function packEntry(group: Pending[], entries: Pending[][], payloads: Uint8Array[]): void {
  const payload = encodeCommands(group.map((p) => p.command));
  if (payload.length > COMMAND_ENTRY_BYTES_MAX && group.length > 1) {
    const half = Math.ceil(group.length / 2);
    packEntry(group.slice(0, half), entries, payloads);
    packEntry(group.slice(half), entries, payloads);
    return;
  }
  entries.push(group);
  payloads.push(payload);
}
