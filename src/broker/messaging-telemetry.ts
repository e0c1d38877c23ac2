/**
 * The Telemetry stream (contract §4) and the two liveness calls, Heartbeat and
 * NotifyClientTermination.
 *
 * Telemetry: every Settings command is answered on the same stream with
 * `{status OK, settings: <reply>}` (rmq-settings.ts) and recorded in the client registry,
 * which has the stream send its reply again about 1 s and 5 s later and on each Heartbeat (the
 * Node client loses a reply that arrives during its startup route queries). A Settings that
 * cannot be served (an unknown client type, a malformed group, a SQL92 subscription filter) is
 * answered with a status-only command, which makes the client's startup fail with that code;
 * the refusal is sent again at the same delays as a Settings reply, for the same race, until a
 * later Settings is served. `print_thread_stack_trace_command` gets a stack-less answer,
 * `verify_message_command` an UNSUPPORTED result; the client's own replies are ignored. When
 * the client half-closes, the call is ended with OK at once: a client that removed its
 * listeners would otherwise crash on the CANCELLED a later disconnect brings (§3.6).
 *
 * Bounded: at most `telemetryStreamsMax` streams are open (one more is refused with
 * RESOURCE_EXHAUSTED), and a stream on which no Settings were served within
 * `telemetrySettingsWaitMs` is ended with INVALID_ARGUMENT, so a peer that opens streams and
 * sends nothing, or nothing valid, holds nothing for long.
 *
 * Writes respect backpressure: when `write()` returns false, later commands wait for 'drain'
 * in a bounded queue (a pending Settings re-send is replaced, not queued twice); a command that
 * does not fit is dropped with a warning.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import { RaftmqError, RmqCode } from '../common/errors';
import { statusError } from './grpc-util';
import {
  type ClosableSession,
  CLIENT_ID_HEADER,
  headerValue,
  namespaceHeader,
  requireClientId,
  type ServiceContext,
} from './messaging-call';
import { groupLookupOf } from './messaging-options';
import { okStatus, toStatus } from './rmq-convert';
import { buildSettingsReply, consumerGroupOf } from './rmq-settings';
import { effectiveNamespace } from './rmq-validate';
import type { WireSettings, WireTelemetryCommand } from './rmq-wire';
import type { TelemetryPeer } from './client-registry';

/** What a FrameWriter writes to (a server stream). */
export interface FrameSink {
  write(frame: unknown): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

/**
 * Writes frames in order, holding them while the sink asks to wait ('drain'); at most
 * `pendingMax` wait. A frame with a `coalesceKey` replaces a waiting frame with the same key.
 */
export class FrameWriter {
  private readonly pending: { frame: unknown; key: string | undefined }[] = [];
  private waitingForDrain = false;
  private closed = false;

  constructor(
    private readonly sink: FrameSink,
    private readonly pendingMax: number,
  ) {}

  /** Frames waiting for 'drain'. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** Writes or queues `frame`; false when it was dropped (queue full or writer closed). */
  write(frame: unknown, coalesceKey?: string): boolean {
    if (this.closed) return false;
    if (!this.waitingForDrain) {
      this.writeNow(frame);
      return true;
    }
    const same =
      coalesceKey === undefined ? -1 : this.pending.findIndex((p) => p.key === coalesceKey);
    if (same >= 0) {
      this.pending[same] = { frame, key: coalesceKey };
      return true;
    }
    if (this.pending.length >= this.pendingMax) return false;
    this.pending.push({ frame, key: coalesceKey });
    return true;
  }

  /** Drops what waits; writes nothing more. */
  close(): void {
    this.closed = true;
    this.pending.length = 0;
  }

  private writeNow(frame: unknown): void {
    if (!this.sink.write(frame)) {
      this.waitingForDrain = true;
      this.sink.once('drain', () => this.flush());
    }
  }

  private flush(): void {
    this.waitingForDrain = false;
    while (!this.closed && !this.waitingForDrain) {
      const next = this.pending.shift();
      if (next === undefined) return;
      this.writeNow(next.frame);
    }
  }
}

const STACK_TRACE_TEXT = 'raftmq broker (Node.js): thread stack traces are not available';
const SETTINGS_KEY = 'settings';

/** One open Telemetry call. */
class TelemetrySession implements TelemetryPeer, ClosableSession {
  private readonly clientId: string | undefined;
  private readonly writer: FrameWriter;
  private settings: WireSettings | undefined;
  private done = false;
  /** Ends the stream unless Settings are served in time; cleared once they are. */
  private settingsWait: NodeJS.Timeout | undefined;
  /** Pending re-sends of the latest refusal of a Settings. */
  private refusalResends: NodeJS.Timeout[] = [];

  constructor(
    private readonly ctx: ServiceContext,
    private readonly call: grpc.ServerDuplexStream<unknown, unknown>,
  ) {
    this.clientId = headerValue(call.metadata, CLIENT_ID_HEADER);
    this.writer = new FrameWriter(call, ctx.options.telemetryPendingMax);
  }

  start(): void {
    const { telemetryStreamsMax, telemetrySettingsWaitMs } = this.ctx.options;
    if (this.ctx.sessions.size >= telemetryStreamsMax) {
      const why = `too many Telemetry streams open (${telemetryStreamsMax}); retry later`;
      this.call.emit('error', statusError(GrpcStatus.RESOURCE_EXHAUSTED, why));
      return;
    }
    this.ctx.sessions.add(this);
    this.settingsWait = setTimeout(() => {
      this.settingsWait = undefined;
      if (this.done || this.settings !== undefined) return;
      const why = `no Settings served on this Telemetry stream within ${telemetrySettingsWaitMs} ms`;
      this.finish(false);
      this.call.emit('error', statusError(GrpcStatus.INVALID_ARGUMENT, why));
    }, telemetrySettingsWaitMs);
    this.settingsWait.unref();
    this.call.on('data', (command: WireTelemetryCommand) => this.onCommand(command));
    // The client half-closed: end the call with OK at once (contract §3.6).
    this.call.on('end', () => this.finish(true));
    this.call.on('cancelled', () => this.finish(false));
    this.call.on('error', (err: Error) => {
      this.ctx.log.debug({ err, clientId: this.clientId }, 'telemetry stream failed');
      this.finish(false);
    });
  }

  resendSettings(): void {
    if (this.done || this.settings === undefined) return;
    try {
      this.send({ status: okStatus(), settings: this.reply(this.settings) }, SETTINGS_KEY);
    } catch (err) {
      // The same Settings were served before; a group lookup failing now changes nothing the
      // client needs, so the re-send is skipped.
      this.ctx.log.warn({ err, clientId: this.clientId }, 'settings re-send skipped');
    }
  }

  close(): void {
    this.finish(true);
  }

  private onCommand(command: WireTelemetryCommand): void {
    if (this.done) return;
    if (command.settings !== undefined && command.settings !== null) {
      this.onSettings(command.settings);
    } else if (command.printThreadStackTraceCommand !== undefined) {
      const nonce = command.printThreadStackTraceCommand.nonce;
      this.send({
        status: okStatus(),
        threadStackTrace: { nonce, threadStackTrace: STACK_TRACE_TEXT },
      });
    } else if (command.verifyMessageCommand !== undefined) {
      const nonce = command.verifyMessageCommand.nonce;
      this.send({
        status: { code: RmqCode.UNSUPPORTED, message: 'raftmq does not verify messages' },
        verifyMessageResult: { nonce },
      });
    } else {
      this.ctx.log.debug(
        { clientId: this.clientId, command: command.command },
        'telemetry command ignored',
      );
    }
  }

  private onSettings(settings: WireSettings): void {
    try {
      const clientId = requireClientId(this.call.metadata);
      const reply = this.reply(settings);
      const nsHeader = namespaceHeader(this.call.metadata);
      this.ctx.registry.onSettings(
        clientId,
        {
          clientType: settings.clientType ?? 'CLIENT_TYPE_UNSPECIFIED',
          group: consumerGroupOf(settings, nsHeader),
          namespace: effectiveNamespace(nsHeader),
          settings,
        },
        this,
      );
      this.settings = settings;
      clearTimeout(this.settingsWait);
      this.settingsWait = undefined;
      this.cancelRefusalResends();
      this.send({ status: okStatus(), settings: reply }, SETTINGS_KEY);
    } catch (err) {
      this.refuse({ status: toStatus(err, this.ctx.log) });
    }
  }

  /**
   * Answers a Settings with a status-only `refusal`, now and again at the Settings re-send
   * delays: the Node client arms its wait only after its startup route queries, so a refusal
   * that arrives before would be lost as a reply would, and its startup would hang.
   */
  private refuse(refusal: object): void {
    // The refused Settings replace any served before: their reply is not sent again.
    this.settings = undefined;
    this.cancelRefusalResends();
    this.send(refusal, SETTINGS_KEY);
    for (const delayMs of this.ctx.options.registry.settingsResendDelaysMs) {
      const timer = setTimeout(() => {
        if (!this.done) this.send(refusal, SETTINGS_KEY);
      }, delayMs);
      timer.unref();
      this.refusalResends.push(timer);
    }
  }

  private cancelRefusalResends(): void {
    for (const timer of this.refusalResends) clearTimeout(timer);
    this.refusalResends = [];
  }

  private reply(settings: WireSettings): WireSettings {
    const { options } = this.ctx;
    return buildSettingsReply(settings, {
      maxBodyBytes: options.maxBodyBytes,
      namespaceHeader: namespaceHeader(this.call.metadata),
      groupLookup: groupLookupOf(this.ctx.backend),
      longPollingTimeoutMs: options.longPollingTimeoutMs,
      receiveBatchSize: options.receiveBatchSize,
      defaultMaxDeliveryAttempts: options.defaultMaxDeliveryAttempts,
    });
  }

  private send(command: object, coalesceKey?: string): void {
    if (!this.writer.write(command, coalesceKey)) {
      this.ctx.log.warn(
        { clientId: this.clientId, pendingMax: this.ctx.options.telemetryPendingMax },
        'telemetry client is not reading; command dropped',
      );
    }
  }

  private finish(endCall: boolean): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.settingsWait);
    this.cancelRefusalResends();
    this.writer.close();
    this.ctx.sessions.delete(this);
    if (this.clientId !== undefined) this.ctx.registry.detachStream(this.clientId, this);
    if (endCall) this.call.end();
  }
}

/** The Telemetry handler. */
export function telemetryHandler(
  ctx: ServiceContext,
): grpc.handleBidiStreamingCall<unknown, unknown> {
  return (call) => {
    if (ctx.closing.aborted) {
      call.end();
      return;
    }
    new TelemetrySession(ctx, call).start();
  };
}

interface HeartbeatRequest {
  readonly group?: { readonly resourceNamespace: string; readonly name: string };
  readonly clientType: string;
}

/** Heartbeat: records the client as alive and has its open streams re-send their Settings. */
export function heartbeat(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  const clientId = requireClientId(call.metadata);
  const request = call.request as HeartbeatRequest;
  const nsHeader = namespaceHeader(call.metadata);
  const ns = effectiveNamespace(nsHeader, request.group?.resourceNamespace);
  const group = consumerGroupOf(
    { subscription: { group: request.group, subscriptions: [] } },
    nsHeader,
  );
  if (ctx.closing.aborted) {
    throw new RaftmqError('BUSY', 'the broker is shutting down');
  }
  ctx.registry.onHeartbeat(clientId, { clientType: request.clientType, group, namespace: ns });
  return Promise.resolve({ status: okStatus() });
}

/**
 * NotifyClientTermination: forgets the client, and the leader stops renewing its auto-renewed
 * deliveries and makes them visible again soon (pop-renewer.ts `terminate`, in the background:
 * the answer does not wait for it). Always OK (a gRPC error breaks the client's shutdown).
 */
export function notifyClientTermination(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  const clientId = headerValue(call.metadata, CLIENT_ID_HEADER);
  // Its Telemetry streams stay open until the client half-closes them: ending them here would
  // make the client reconnect a second later, after its own shutdown.
  if (clientId !== undefined) {
    ctx.registry.unregister(clientId);
    void ctx.renewer?.terminate(clientId);
  }
  return Promise.resolve({ status: okStatus() });
}
