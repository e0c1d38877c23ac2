/**
 * The trace of a simulated run: one line per thing that happened (a message sent, delivered or
 * dropped, a fault, a role change, an acknowledged proposal). Every line feeds a running hash,
 * so two runs of one seed can be compared exactly; the last lines are kept for failure reports,
 * and a sink (the CLI's `--trace`) may print them all as they come.
 */

/** How many recent lines a trace keeps for reports. */
export const TRACE_TAIL_LINES_MAX = 200;

/** The trace; see the file comment. */
export class SimTrace {
  private hashLow = 0x811c9dc5;
  private hashHigh = 0x01000193;
  /** A ring of the last lines; `tailNext` is where the next one goes. */
  private readonly tail: string[] = [];
  private tailNext = 0;
  /** Lines recorded so far. */
  lineCount = 0;

  constructor(
    private readonly nowMs: () => number,
    private readonly sink?: (line: string) => void,
  ) {}

  /** Records one line, prefixed with the simulated time. */
  line(text: string): void {
    const line = `${this.nowMs().toString().padStart(7)} ${text}`;
    this.lineCount += 1;
    let low = this.hashLow;
    let high = this.hashHigh;
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      low = Math.imul(low ^ c, 0x01000193) >>> 0;
      high = Math.imul(high ^ (c + low), 0x5bd1e995) >>> 0;
    }
    this.hashLow = low;
    this.hashHigh = high;
    this.tail[this.tailNext] = line;
    this.tailNext = (this.tailNext + 1) % TRACE_TAIL_LINES_MAX;
    this.sink?.(line);
  }

  /** A digest of every line so far (and their count): equal runs have equal digests. */
  digest(): string {
    const hex = (n: number): string => n.toString(16).padStart(8, '0');
    return `${hex(this.hashHigh)}${hex(this.hashLow)}:${this.lineCount}`;
  }

  /** The most recent lines, oldest first. */
  recent(): string[] {
    return [...this.tail.slice(this.tailNext), ...this.tail.slice(0, this.tailNext)];
  }
}
