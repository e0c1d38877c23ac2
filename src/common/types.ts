/**
 * Branded number types for values that are easy to mix up. They cost nothing at run time; the
 * `as*` helpers are the only place a plain number becomes one.
 */

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** A Raft term. */
export type Term = Brand<number, 'Term'>;
/** A position in the Raft log (1-based; 0 means "before the first entry"). */
export type LogIndex = Brand<number, 'LogIndex'>;
/** A broker node's id within its group. */
export type NodeId = Brand<string, 'NodeId'>;
/** An offset within one ConsumeQueue (0-based record number). */
export type QueueOffset = Brand<number, 'QueueOffset'>;
/** A byte position in the CommitLog (global across segments). */
export type LogPosition = Brand<number, 'LogPosition'>;

export const asTerm = (n: number): Term => n as Term;
export const asLogIndex = (n: number): LogIndex => n as LogIndex;
export const asNodeId = (s: string): NodeId => s as NodeId;
export const asQueueOffset = (n: number): QueueOffset => n as QueueOffset;
export const asLogPosition = (n: number): LogPosition => n as LogPosition;
