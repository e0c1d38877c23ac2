/**
 * raftmq's producer: the RocketMQ 5 protocol (`SendMessage`, `QueryRoute`) with what the
 * official Node client lacks — many messages in one request, and failover that follows the
 * group's leader. It asks the access point (a NameServer or any broker) for the topic's route,
 * sends to the leader of a group (Broker id 0), and on a "not leader", unavailable or timed-out
 * answer refreshes the route and tries again until the send's deadline, so a leader change
 * costs a send the election time and no error.
 *
 * SendMessage does not go through grpc-js but over raftmq's own HTTP/2 calls
 * (`raw-unary-channel.ts`), the same bytes on the wire for about half the CPU per send; the
 * route queries stay grpc-js calls.
 *
 * A send of several messages is stored whole or not at all (one Raft entry). Retrying a send
 * whose answer was lost may store it twice (at-least-once, as in RocketMQ); message ids are
 * kept across retries so consumers can de-duplicate.
 */
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { RaftmqError } from '../common/errors';
import { newMessageId } from './message-id';
import { RawUnaryChannel } from './raw-unary-channel';
import {
  codeName,
  loadClientCtor,
  type Stub,
  type StubCtor,
  type UnaryFn,
  type WireStatus,
} from './rmq-client';
import { decodeSendReply, encodeSendRequest, type SendReply } from './send-wire';

export interface ProducerOptions {
  /** Access point, `host:port` of a NameServer or a broker. */
  endpoint: string;
  /** Deadline of one send, retries included. */
  sendTimeoutMs: number;
  /** Deadline of one RPC attempt. */
  attemptTimeoutMs: number;
  /** Sent as `x-mq-client-id`. */
  clientId: string;
}

export interface OutgoingMessage {
  body: Uint8Array;
  tag?: string;
  keys?: readonly string[];
  properties?: ReadonlyMap<string, string>;
  /** Set for FIFO messages: one group keeps its order. */
  messageGroup?: string;
  messageId?: string;
}

export interface SendResult {
  messageId: string;
  /** Queue offset the broker assigned. */
  offset: number;
}

interface RouteQueue {
  broker?: {
    name?: string;
    id?: number;
    endpoints?: { addresses?: { host: string; port: number }[] };
  };
}

const RETRYABLE_STATUS = new Set([
  'HA_NOT_AVAILABLE',
  'PROXY_TIMEOUT',
  'TOO_MANY_REQUESTS',
  'INTERNAL_ERROR',
  'MASTER_PERSISTENCE_TIMEOUT',
]);
const RETRY_DELAY_MS = 50;
const SEND_PATH = '/apache.rocketmq.v2.MessagingService/SendMessage';
/** A send's answer larger than this is refused (grpc-js's default receive limit, as before). */
const SEND_REPLY_BYTES_MAX = 4 * 1024 * 1024;
/**
 * The SendMessage sessions: keepalive pings every 30 s (answered within 10 s) while connected,
 * so that a broker gone without closing its connection is noticed between sends; the receive
 * window only carries answers.
 */
const SEND_KEEPALIVE_TIME_MS = 30_000;
const SEND_KEEPALIVE_TIMEOUT_MS = 10_000;
const SEND_WINDOW_BYTES = 1024 * 1024;

let clientCount = 0;
/** `born_host` of every message sent (asked of the OS once: a call per message cost 5% here). */
const BORN_HOST = os.hostname();

export class Producer {
  readonly options: Readonly<ProducerOptions>;
  /** grpc-js stubs, for QueryRoute. */
  private readonly stubs = new Map<string, Stub>();
  /** SendMessage goes over raftmq's own HTTP/2 calls (raw-unary-channel.ts), per endpoint. */
  private readonly channels = new Map<string, RawUnaryChannel>();
  /** The headers of every call: this client's id and the protocol. */
  private readonly metadata: Readonly<Record<string, string>>;
  private closed = false;
  private readonly leaders = new Map<string, string[]>();
  private next = 0;

  private constructor(
    private readonly Ctor: StubCtor,
    options: ProducerOptions,
  ) {
    this.options = options;
    this.metadata = { 'x-mq-client-id': options.clientId, 'x-mq-protocol': 'v2' };
  }

  static async create(options: Partial<ProducerOptions> & { endpoint: string }): Promise<Producer> {
    const Ctor = await loadClientCtor('', {});
    return new Producer(Ctor, {
      sendTimeoutMs: 10_000,
      attemptTimeoutMs: 3_000,
      clientId: `${os.hostname()}@${process.pid}@raftmq${clientCount++}@${Date.now().toString(36)}`,
      ...options,
    });
  }

  /** Sends `messages` to `topic` in one request; resolves once stored on a majority. */
  async send(topic: string, messages: readonly OutgoingMessage[]): Promise<SendResult[]> {
    this.requireOpen();
    if (messages.length === 0) throw new RaftmqError('INVALID_ARGUMENT', 'nothing to send');
    if (typeof topic !== 'string') throw invalid('topic', 'must be a string');
    const nowMs = Date.now();
    // Loops, not callbacks: V8 optimizes each instance of a hot closure on its own, and closures
    // made per send (called once per message) were compiled again and again under load.
    const ids = new Array<string>(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i] as OutgoingMessage;
      checkOutgoing(m, i);
      ids[i] = m.messageId ?? newMessageId(nowMs);
    }
    // Encoded once: a retry resends the same bytes (and so the same message ids).
    const request = encodeSendRequest(
      { topic, bornTimestampMs: nowMs, bornHost: BORN_HOST },
      messages,
      ids,
    );
    const deadlineMs = nowMs + this.options.sendTimeoutMs;
    let lastError: Error | undefined;
    for (let attempt = 0; Date.now() < deadlineMs; attempt++) {
      try {
        const endpoint = await this.pickLeader(topic, attempt > 0, deadlineMs);
        const res = await this.sendOnce(endpoint, request, deadlineMs);
        if (res.status === undefined) throw malformedAnswer(endpoint, 'it has no status');
        const status = firstFailure(res) ?? res.status;
        if (codeName(status) === 'OK') return results(res, ids, endpoint);
        lastError = new RaftmqError(
          RETRYABLE_STATUS.has(codeName(status)) ? 'NOT_LEADER' : 'INVALID_ARGUMENT',
          `send failed: ${codeName(status)}: ${status?.message ?? ''}`,
          { details: { status: codeName(status) } },
        );
        if (!RETRYABLE_STATUS.has(codeName(status))) throw lastError;
      } catch (err) {
        if (err instanceof RaftmqError && !err.retryable) throw err;
        lastError = err instanceof Error ? err : new Error(String(err));
      }
      this.leaders.delete(topic);
      const pauseMs = Math.min(RETRY_DELAY_MS * (attempt + 1), 200, deadlineMs - Date.now());
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      this.requireOpen();
    }
    throw lastError ?? new RaftmqError('TIMEOUT', 'send timed out');
  }

  /** The endpoint of a group leader for `topic` (round-robin over groups). */
  private async pickLeader(topic: string, refresh: boolean, deadlineMs: number): Promise<string> {
    let leaders = refresh ? undefined : this.leaders.get(topic);
    if (leaders === undefined || leaders.length === 0) {
      const res = await this.call(
        this.options.endpoint,
        'QueryRoute',
        { topic: { name: topic } },
        deadlineMs,
      );
      const status = res.status as WireStatus | undefined;
      if (codeName(status) !== 'OK') {
        throw new RaftmqError(
          codeName(status) === 'TOPIC_NOT_FOUND' ? 'TOPIC_NOT_FOUND' : 'NOT_LEADER',
          `route of ${topic}: ${codeName(status)}: ${status?.message ?? ''}`,
        );
      }
      const found = new Set<string>();
      for (const q of (res.messageQueues ?? []) as RouteQueue[]) {
        const a = q.broker?.endpoints?.addresses?.[0];
        if (q.broker?.id === 0 && a) found.add(`${a.host}:${a.port}`);
      }
      leaders = [...found];
      if (leaders.length === 0) throw new RaftmqError('NOT_LEADER', `no leader for ${topic} yet`);
      this.leaders.set(topic, leaders);
    }
    return leaders[this.next++ % leaders.length] as string;
  }

  /**
   * One SendMessage attempt of the encoded `request`. Any failure (the call's status, or an
   * answer that does not decode) is a retryable NOT_LEADER, as a failed grpc-js call was.
   */
  private async sendOnce(
    endpoint: string,
    request: Buffer,
    deadlineMs: number,
  ): Promise<SendReply> {
    this.requireOpen();
    let channel = this.channels.get(endpoint);
    if (channel === undefined) {
      this.dropUnusedChannels();
      channel = new RawUnaryChannel(endpoint, {
        connectTimeoutMs: this.options.attemptTimeoutMs,
        keepaliveTimeMs: SEND_KEEPALIVE_TIME_MS,
        keepaliveTimeoutMs: SEND_KEEPALIVE_TIMEOUT_MS,
        windowBytes: SEND_WINDOW_BYTES,
      });
      this.channels.set(endpoint, channel);
    }
    const result = await channel.call(
      {
        path: SEND_PATH,
        metadata: this.metadata,
        message: request,
        timeoutMs: this.options.attemptTimeoutMs,
        responseBytesMax: SEND_REPLY_BYTES_MAX,
      },
      deadlineMs,
    );
    if (!result.ok) {
      const { code, details } = result.end;
      throw new RaftmqError(
        'NOT_LEADER',
        `SendMessage to ${endpoint}: ${code} ${grpc.status[code] ?? 'UNKNOWN'}: ${details}`,
      );
    }
    try {
      return decodeSendReply(result.message);
    } catch (err) {
      throw new RaftmqError(
        'NOT_LEADER',
        `SendMessage to ${endpoint}: an answer that does not decode: ${String(err)}`,
      );
    }
  }

  /**
   * Closes the channels to endpoints that no cached route names as a leader and that have no
   * call in flight: run when a new leader endpoint is first used, so that a long-lived producer
   * holds sessions to the current leaders, not to every node that was ever one (nodes replaced
   * with new addresses would otherwise add a session each, for good).
   */
  private dropUnusedChannels(): void {
    const current = new Set<string>();
    for (const endpoints of this.leaders.values()) for (const e of endpoints) current.add(e);
    for (const [endpoint, channel] of this.channels) {
      if (current.has(endpoint) || !channel.idle) continue;
      channel.close();
      this.channels.delete(endpoint);
    }
  }

  /** One grpc-js unary call; `T` is what the method's response deserializer makes. */
  private call<T = Record<string, unknown>>(
    endpoint: string,
    method: string,
    request: object,
    deadlineMs: number,
  ): Promise<T> {
    this.requireOpen();
    let stub = this.stubs.get(endpoint);
    if (stub === undefined) {
      stub = new this.Ctor(endpoint, grpc.credentials.createInsecure());
      this.stubs.set(endpoint, stub);
    }
    const md = new grpc.Metadata();
    for (const [key, value] of Object.entries(this.metadata)) md.set(key, value);
    const fn = (stub[method] as UnaryFn).bind(stub);
    const deadline = Math.min(deadlineMs, Date.now() + this.options.attemptTimeoutMs);
    return new Promise((resolve, reject) => {
      fn(request, md, { deadline }, (err, res) => {
        if (err) reject(new RaftmqError('NOT_LEADER', `${method} to ${endpoint}: ${err.message}`));
        else resolve((res ?? {}) as T);
      });
    });
  }

  private requireOpen(): void {
    if (this.closed) throw closedError();
  }

  /**
   * Closes the producer: sends in flight fail (none is retried, nothing new connects), and
   * later sends are refused with STORE_CLOSED.
   */
  close(): void {
    this.closed = true;
    for (const s of this.stubs.values()) s.close();
    this.stubs.clear();
    for (const c of this.channels.values()) c.close();
    this.channels.clear();
  }
}

/** The error of a send made on, or still in flight when, the producer was closed. */
function closedError(): RaftmqError {
  return new RaftmqError('STORE_CLOSED', 'the producer is closed');
}

/**
 * An OK answer that does not account for the send (no status, entries that do not match the
 * messages sent): not retried, since the broker may have stored the messages.
 */
function malformedAnswer(endpoint: string, why: string): RaftmqError {
  return new RaftmqError('INTERNAL', `SendMessage to ${endpoint}: a malformed answer: ${why}`);
}

function invalid(field: string, what: string): RaftmqError {
  return new RaftmqError('INVALID_ARGUMENT', `${field} ${what}`, { details: { field } });
}

/**
 * Checks the types of a message from a caller that TypeScript does not check (plain
 * JavaScript): the encoder writes strings and bytes as they are. A null tag, group or id is
 * taken as absent.
 */
function checkOutgoing(m: OutgoingMessage, i: number): void {
  const at = `messages[${i}]`;
  if (typeof m !== 'object' || m === null) throw invalid(at, 'must be an object');
  if (!(m.body instanceof Uint8Array)) throw invalid(`${at}.body`, 'must be a Uint8Array');
  if (!isOptionalString(m.tag)) throw invalid(`${at}.tag`, 'must be a string');
  if (!isOptionalString(m.messageGroup)) throw invalid(`${at}.messageGroup`, 'must be a string');
  if (!isOptionalString(m.messageId)) throw invalid(`${at}.messageId`, 'must be a string');
  if (typeof m.messageId === 'string' && !isWellFormed(m.messageId)) {
    // Sent as UTF-8, a lone surrogate becomes U+FFFD: the broker would echo another id.
    throw invalid(`${at}.messageId`, 'must be well-formed text (no lone surrogates)');
  }
  if (m.keys !== undefined) {
    if (!Array.isArray(m.keys)) throw invalid(`${at}.keys`, 'must be an array of strings');
    for (const key of m.keys) {
      if (typeof key !== 'string') throw invalid(`${at}.keys`, 'must be an array of strings');
    }
  }
  if (m.properties !== undefined) {
    if (!(m.properties instanceof Map)) {
      throw invalid(`${at}.properties`, 'must be a Map of strings to strings');
    }
    for (const [k, v] of m.properties) {
      if (typeof k !== 'string' || typeof v !== 'string') {
        throw invalid(`${at}.properties`, 'must be a Map of strings to strings');
      }
    }
  }
}

/** True when `s` survives UTF-8 unchanged (no lone surrogate). */
function isWellFormed(s: string): boolean {
  return Buffer.from(s, 'utf8').toString('utf8') === s;
}

function isOptionalString(v: unknown): boolean {
  return v === undefined || v === null || typeof v === 'string';
}

/** The status of the first entry that failed, if one did. */
function firstFailure(res: SendReply): WireStatus | undefined {
  for (const e of res.entries) if (codeName(e.status) !== 'OK') return e.status;
  return undefined;
}

/**
 * The results of an accepted send: one entry per message sent, in order, each with its status,
 * the message's id and a queue offset; anything else is a malformed answer.
 */
function results(res: SendReply, ids: readonly string[], endpoint: string): SendResult[] {
  if (res.entries.length !== ids.length) {
    throw malformedAnswer(endpoint, `${res.entries.length} entries for ${ids.length} messages`);
  }
  const out = new Array<SendResult>(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const entry = res.entries[i] as SendReply['entries'][number];
    if (entry.status === undefined) throw malformedAnswer(endpoint, `entry ${i} has no status`);
    if (entry.messageId !== ids[i]) {
      throw malformedAnswer(endpoint, `entry ${i} names message ${entry.messageId}, not ${ids[i]}`);
    }
    if (!Number.isSafeInteger(entry.offset) || entry.offset < 0) {
      throw malformedAnswer(endpoint, `entry ${i} has offset ${entry.offset}`);
    }
    out[i] = { messageId: ids[i] as string, offset: entry.offset };
  }
  return out;
}
