/**
 * Text helpers. For error messages: a name a client sent is quoted in the reason it gets back
 * and in logs, so it is cut short: a 5 MiB topic name must not become a 5 MiB status message
 * (larger than the client's own receive limit) or a 5 MiB log line. For stored strings: whether
 * one survives UTF-8 unchanged.
 */

/** Characters of a quoted value kept by {@link quoteClipped}, by default. */
export const QUOTE_LENGTH_MAX = 80;

/** `value` as a JSON string literal, cut to `lengthMax` characters with `...` when longer. */
export function quoteClipped(value: string, lengthMax = QUOTE_LENGTH_MAX): string {
  return JSON.stringify(value.length <= lengthMax ? value : `${value.slice(0, lengthMax)}...`);
}

/**
 * `String.prototype.isWellFormed` (ES2024: in Node 20, not in our TypeScript lib): false when
 * `value` holds an unpaired UTF-16 surrogate, which UTF-8 would store as U+FFFD. A native scan:
 * a regular expression cost a tenth of a key-index put.
 */
export function isWellFormed(value: string): boolean {
  return (value as unknown as { isWellFormed(): boolean }).isWellFormed();
}
