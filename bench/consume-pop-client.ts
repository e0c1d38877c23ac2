/**
 * The batched receivers of the consume benchmark (consume-bench.ts), both receiving with a
 * large batch and acknowledging with one AckMessage of many entries, which the official Node
 * client never sends (it receives 32 at a time and acks one message per call):
 *
 * - {@link PopClient}: a raw gRPC client of RocketMQ 5 ReceiveMessage and AckMessage. Requests
 *   are plain objects encoded by proto-loader from the project's `.proto` files; the delivered
 *   messages are decoded whole (body, properties, ids) by raftmq's SDK decoder
 *   (src/client/pull-wire.ts), as a client that consumes them would.
 * - {@link SdkReceiver}: raftmq's SDK SimpleConsumer (ReceiveStored, then AckMessage).
 */
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  decodePullFrame,
  decodeReceiveStoredReply,
  type PullFrame,
  type ReceiveStoredReply,
} from '../src/client/pull-wire';
import { decodeMessage } from '../src/store/message-decode';
import type { ReceivedMessage, SimpleConsumer } from '../src/client/simple-consumer';
import { RmqCode } from '../src/common/errors';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../src/common/proto-files';

const SERVICE_PROTO = 'apache/rocketmq/v2/service.proto';
const FETCH_PROTO = 'fetch.proto';
/** A receive of 1024 messages of 1 KiB is about 1.2 MiB; room for larger bodies. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};

interface WireStatus {
  readonly code?: string | number;
  readonly message?: string;
}

type Reply = Record<string, unknown>;
type UnaryFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Reply) => void,
) => grpc.ClientUnaryCall;
type StreamFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<PullFrame>;
type Stub = grpc.Client & {
  ReceiveMessage: StreamFn;
  AckMessage: UnaryFn;
  ReceiveStored: (
    req: object,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: ReceiveStoredReply) => void,
  ) => grpc.ClientUnaryCall;
};
type StubCtor = new (address: string, creds: grpc.ChannelCredentials, opts?: object) => Stub;

/** One message a receive handed out: what an ack needs. */
export interface ReceiptEntry {
  readonly messageId: string;
  readonly receiptHandle: string;
}

/** What a receive answered: its status name and the messages' receipts. */
export interface ReceiveResult<R extends ReceiptEntry = ReceiptEntry> {
  readonly status: string;
  readonly statusMessage: string;
  readonly receipts: R[];
}

/** What an ack answered: entries settled (OK) and the first other status, if any. */
export interface AckResult {
  readonly ackedCount: number;
  readonly firstFailure: string | undefined;
}

/** Parameters of one receive. */
export interface ReceiveSpec {
  /** Messages asked for (the broker clamps it to its maximum, 1024 by default). */
  readonly batchSize: number;
  readonly invisibleMs: number;
  /** How long the broker may wait for a message when none is ready. */
  readonly longPollMs: number;
  /** Deadline of the call, after the long poll. */
  readonly timeoutMs: number;
}

/** The status codes a receive answers with, by number (the decoder gives numbers). */
const CODE_NAMES: Readonly<Record<number, string>> = {
  [RmqCode.OK]: 'OK',
  [RmqCode.MESSAGE_NOT_FOUND]: 'MESSAGE_NOT_FOUND',
};

let loaded: Promise<StubCtor> | undefined;

function loadStubCtor(): Promise<StubCtor> {
  loaded ??= (async () => {
    const def = await protoLoader.load(SERVICE_PROTO, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [findProtoDir(SERVICE_PROTO)],
    });
    const fetchDef = await protoLoader.load(FETCH_PROTO, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [findProtoDir(FETCH_PROTO)],
    });
    const service = def['apache.rocketmq.v2.MessagingService'] as grpc.ServiceDefinition;
    const fetch = fetchDef['raftmq.fetch.v1.Fetch'] as grpc.ServiceDefinition;
    const receive = service.ReceiveMessage as grpc.MethodDefinition<object, PullFrame>;
    const stored = fetch.ReceiveStored as grpc.MethodDefinition<object, ReceiveStoredReply>;
    return grpc.makeGenericClientConstructor(
      {
        ...service,
        ReceiveMessage: { ...receive, responseDeserialize: decodePullFrame },
        ReceiveStored: { ...stored, responseDeserialize: decodeReceiveStoredReply },
      },
      'MessagingService',
    ) as unknown as StubCtor;
  })();
  return loaded;
}

const durationOf = (ms: number): { seconds: number; nanos: number } => ({
  seconds: Math.floor(ms / 1000),
  nanos: (ms % 1000) * 1e6,
});

let clientCount = 0;

/** Receives messages in batches and acknowledges them; what a batched load drives. */
export interface BatchedReceiver<R extends ReceiptEntry = ReceiptEntry> {
  receive(spec: ReceiveSpec): Promise<ReceiveResult<R>>;
  ack(entries: readonly R[], timeoutMs: number): Promise<AckResult>;
  close(): void;
}

/** Receives and acks one topic for one consumer group on one node; see the file comment. */
export class PopClient implements BatchedReceiver {
  private readonly clientId = `${os.hostname()}@${process.pid}@bench-pop${clientCount++}`;

  private constructor(
    private readonly stub: Stub,
    readonly endpoint: string,
    private readonly group: string,
    private readonly topic: string,
  ) {}

  /** A client of `endpoint` (`host:port`); connects lazily. */
  static async create(endpoint: string, group: string, topic: string): Promise<PopClient> {
    const Ctor = await loadStubCtor();
    const stub = new Ctor(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    return new PopClient(stub, endpoint, group, topic);
  }

  /** One ReceiveMessage call: the receipts of the messages it handed out. */
  receive(spec: ReceiveSpec): Promise<ReceiveResult> {
    const request = {
      group: { resourceNamespace: '', name: this.group },
      messageQueue: { topic: { resourceNamespace: '', name: this.topic }, id: 0 },
      filterExpression: { type: 'TAG', expression: '*' },
      batchSize: spec.batchSize,
      invisibleDuration: durationOf(spec.invisibleMs),
      autoRenew: false,
      longPollingTimeout: durationOf(spec.longPollMs),
    };
    const deadline = Date.now() + spec.longPollMs + spec.timeoutMs;
    return new Promise((resolve, reject) => {
      const receipts: ReceiptEntry[] = [];
      let status: { code: number; message: string } | undefined;
      const call = this.stub.ReceiveMessage(request, this.metadata(), { deadline });
      call.on('data', (frame: PullFrame) => {
        if (frame.status !== undefined) status = frame.status;
        const m = frame.message;
        if (m?.receiptHandle !== undefined) {
          receipts.push({ messageId: m.messageId, receiptHandle: m.receiptHandle });
        }
      });
      call.on('error', reject);
      call.on('end', () =>
        resolve({
          status:
            status === undefined ? 'NO_STATUS' : (CODE_NAMES[status.code] ?? String(status.code)),
          statusMessage: status?.message ?? '',
          receipts,
        }),
      );
    });
  }

  /**
   * One ReceiveStored call (raftmq's Fetch protocol): the messages as stored, each checked and
   * decoded as the SDK does, and their receipts.
   */
  receiveStored(spec: ReceiveSpec): Promise<ReceiveResult> {
    const request = {
      group: this.group,
      topic: this.topic,
      batchSize: spec.batchSize,
      invisibleMs: spec.invisibleMs,
      tagExpression: '*',
      awaitMs: spec.longPollMs,
      bytesMax: 0,
    };
    const deadline = Date.now() + spec.longPollMs + spec.timeoutMs;
    return new Promise((resolve, reject) => {
      this.stub.ReceiveStored(request, this.metadata(), { deadline }, (err, res) => {
        if (err !== null || res === undefined) {
          reject(err ?? new Error('no reply'));
          return;
        }
        const receipts: ReceiptEntry[] = [];
        for (let i = 0; i < res.records.length; i++) {
          const m = decodeMessage(res.records[i] as Buffer, undefined, true);
          receipts.push({ messageId: m.messageId, receiptHandle: res.receiptHandles[i] ?? '' });
        }
        const status = res.status;
        resolve({
          status:
            status === undefined ? 'NO_STATUS' : (CODE_NAMES[status.code] ?? String(status.code)),
          statusMessage: status?.message ?? '',
          receipts,
        });
      });
    });
  }

  /** One AckMessage call settling `entries` (the broker takes at most 1024). */
  ack(entries: readonly ReceiptEntry[], timeoutMs: number): Promise<AckResult> {
    const request = {
      group: { resourceNamespace: '', name: this.group },
      topic: { resourceNamespace: '', name: this.topic },
      entries,
    };
    return new Promise((resolve, reject) => {
      this.stub.AckMessage(
        request,
        this.metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => {
          if (err !== null) {
            reject(err);
            return;
          }
          const results = (res?.entries ?? []) as { status?: WireStatus }[];
          let ackedCount = 0;
          let firstFailure: string | undefined;
          for (const e of results) {
            if (String(e.status?.code) === 'OK') ackedCount++;
            else firstFailure ??= `${String(e.status?.code)}: ${e.status?.message ?? ''}`;
          }
          resolve({ ackedCount, firstFailure });
        },
      );
    });
  }

  close(): void {
    this.stub.close();
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('x-mq-client-id', this.clientId);
    md.set('x-mq-protocol', 'v2');
    return md;
  }
}

/** The SDK SimpleConsumer as a batched receiver of one topic (it closes the consumer). */
export class SdkReceiver implements BatchedReceiver<ReceivedMessage> {
  constructor(
    private readonly consumer: SimpleConsumer,
    private readonly topic: string,
  ) {}

  async receive(spec: ReceiveSpec): Promise<ReceiveResult<ReceivedMessage>> {
    const receipts = await this.consumer.receive(this.topic, {
      batchSize: spec.batchSize,
      invisibleMs: spec.invisibleMs,
      awaitMs: spec.longPollMs,
    });
    const status = receipts.length > 0 ? 'OK' : 'MESSAGE_NOT_FOUND';
    return { status, statusMessage: '', receipts };
  }

  async ack(entries: readonly ReceivedMessage[]): Promise<AckResult> {
    const result = await this.consumer.ack(entries);
    const failure = result.failures[0];
    return {
      ackedCount: result.acked,
      firstFailure: failure === undefined ? undefined : failure.error.message,
    };
  }

  close(): void {
    this.consumer.close();
  }
}
