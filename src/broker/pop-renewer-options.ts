/**
 * Options of the leader's renewal of auto-renewing deliveries (pop-renewer.ts): the lease, how
 * early and how often leases are renewed, for how long, and the bounds.
 */
import { checkOption, intInRange, type OptionSpec, resolveOptions } from '../common/options';
import { COMMANDS_PER_ENTRY_MAX } from './broker-command';

export interface PopRenewerOptions {
  /** Invisibility of an auto-renewing delivery and of each renewal (the proxy: 60 s). */
  invisibleMs: number;
  /** A lease is renewed once it has this long left (the proxy: 10 s). */
  renewAheadMs: number;
  /** How often leases are looked at. */
  scanIntervalMs: number;
  /** No lease is given past this long after the delivery (the proxy's max renew time, 3 h). */
  renewTotalMsMax: number;
  /** Invisibility left to a terminated client's deliveries (the proxy: 1 s). */
  releaseInvisibleMs: number;
  /** A client with no open stream counts as alive this long after it was last heard from. */
  clientSilenceMsMax: number;
  /** Deliveries renewed for one client, at most (receives in progress count). */
  deliveriesPerClientMax: number;
  /** Deliveries renewed in all, at most. */
  deliveriesMax: number;
  /** Renewals one round proposes, at most (the soonest to run out first). */
  renewalsPerRoundMax: number;
  /** Deadline of one round's proposal. */
  roundTimeoutMs: number;
}

const HOUR_MS = 3600 * 1000;

export const POP_RENEWER_DEFAULTS: Readonly<PopRenewerOptions> = Object.freeze({
  invisibleMs: 60_000,
  renewAheadMs: 10_000,
  scanIntervalMs: 1_000,
  renewTotalMsMax: 3 * HOUR_MS,
  releaseInvisibleMs: 1_000,
  // Three missed heartbeats of the official clients (every 10 s).
  clientSilenceMsMax: 30_000,
  // The official push consumers cache at most 1,024 messages.
  deliveriesPerClientMax: 4_096,
  deliveriesMax: 100_000,
  // 100,000 leases of 60 s renewed 10 s early need 2,000 renewals a second.
  renewalsPerRoundMax: 4_096,
  roundTimeoutMs: 5_000,
});

const OPTION_SPEC: OptionSpec<PopRenewerOptions> = {
  invisibleMs: intInRange(1_000, 12 * HOUR_MS),
  renewAheadMs: intInRange(1, 12 * HOUR_MS),
  scanIntervalMs: intInRange(1, 60_000),
  renewTotalMsMax: intInRange(1_000, 12 * HOUR_MS),
  releaseInvisibleMs: intInRange(0, 60_000),
  clientSilenceMsMax: intInRange(1_000, HOUR_MS),
  deliveriesPerClientMax: intInRange(1, 1_000_000),
  deliveriesMax: intInRange(1, 10_000_000),
  renewalsPerRoundMax: intInRange(1, COMMANDS_PER_ENTRY_MAX),
  roundTimeoutMs: intInRange(1, 60_000),
};

/**
 * Checks `input` over the defaults; throws INVALID_OPTION naming a bad or unknown field. Left
 * out, `renewAheadMs` (at most a third of the invisibility), `scanIntervalMs` (at most a quarter
 * of that) and `roundTimeoutMs` (at most `renewAheadMs`) scale down with a short `invisibleMs`.
 */
export function resolvePopRenewerOptions(
  input?: Partial<PopRenewerOptions>,
): Readonly<PopRenewerOptions> {
  const d = POP_RENEWER_DEFAULTS;
  const invisibleMs = input?.invisibleMs ?? d.invisibleMs;
  const renewAheadMs =
    input?.renewAheadMs ?? Math.max(1, Math.min(d.renewAheadMs, Math.floor(invisibleMs / 3)));
  const defaults: PopRenewerOptions = {
    ...d,
    renewAheadMs,
    scanIntervalMs: Math.max(1, Math.min(d.scanIntervalMs, Math.floor(renewAheadMs / 4))),
    roundTimeoutMs: Math.max(1, Math.min(d.roundTimeoutMs, renewAheadMs)),
  };
  const o = resolveOptions('autoRenew', defaults, OPTION_SPEC, input);
  checkOption(
    o.renewAheadMs < o.invisibleMs,
    'autoRenew.renewAheadMs',
    'must be below invisibleMs',
  );
  checkOption(
    o.scanIntervalMs * 2 <= o.renewAheadMs,
    'autoRenew.scanIntervalMs',
    'must be at most half of renewAheadMs (a lease must be seen before it runs out)',
  );
  return o;
}
