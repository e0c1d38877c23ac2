/**
 * Finds a key given twice in one object of a JSON text. `JSON.parse` keeps the last of them
 * without a word, so a configuration file with `"port"` twice would run on whichever came
 * last; raftmq's config readers refuse it instead, as `--peers` refuses a node listed twice.
 * A small scanner of our own (no dependency): it reads only texts `JSON.parse` accepted.
 */
import { RaftmqError } from '../common/errors';

/** Objects and arrays nested deeper than this are refused (no configuration comes close). */
export const JSON_NESTING_DEPTH_MAX = 256;

/**
 * The path (`peers.n1.raft`, `list[2].name`) of the first key that appears twice in the same
 * object of `text`, or undefined when there is none. `text` must be valid JSON.
 */
export function findDuplicateJsonKey(text: string): string | undefined {
  const scanner = new Scanner(text);
  return scanner.value('', 0);
}

class Scanner {
  private at = 0;

  constructor(private readonly text: string) {}

  value(path: string, depth: number): string | undefined {
    this.skipSpace();
    const c = this.text[this.at];
    if (c === '{' || c === '[') {
      if (depth >= JSON_NESTING_DEPTH_MAX) {
        throw new RaftmqError(
          'INVALID_OPTION',
          `${path === '' ? 'the top' : path} is nested too deeply`,
        );
      }
      return c === '{' ? this.object(path, depth + 1) : this.array(path, depth + 1);
    }
    if (c === '"') {
      this.string();
      return undefined;
    }
    // A number, true, false or null: up to the next delimiter.
    while (this.at < this.text.length && !/[\s,\]}]/.test(this.text[this.at] as string)) {
      this.at++;
    }
    return undefined;
  }

  private object(path: string, depth: number): string | undefined {
    this.at++; // {
    const keys = new Set<string>();
    for (;;) {
      this.skipSpace();
      if (this.at >= this.text.length) return undefined; // not JSON: JSON.parse said why
      if (this.text[this.at] === '}') {
        this.at++;
        return undefined;
      }
      if (this.text[this.at] === ',') {
        this.at++;
        continue;
      }
      if (this.text[this.at] !== '"') return undefined; // not JSON: JSON.parse said why
      const key = JSON.parse(this.string()) as string;
      const keyPath = path === '' ? key : `${path}.${key}`;
      if (keys.has(key)) return keyPath;
      keys.add(key);
      this.skipSpace();
      this.at++; // :
      const found = this.value(keyPath, depth);
      if (found !== undefined) return found;
    }
  }

  private array(path: string, depth: number): string | undefined {
    this.at++; // [
    for (let index = 0; ;) {
      this.skipSpace();
      if (this.at >= this.text.length) return undefined; // not JSON: JSON.parse said why
      if (this.text[this.at] === ']') {
        this.at++;
        return undefined;
      }
      if (this.text[this.at] === ',') {
        this.at++;
        continue;
      }
      const found = this.value(`${path}[${index}]`, depth);
      if (found !== undefined) return found;
      index++;
    }
  }

  /** Consumes a string literal; returns its text, quotes included. */
  private string(): string {
    const start = this.at;
    this.at++; // opening quote
    while (this.at < this.text.length && this.text[this.at] !== '"') {
      this.at += this.text[this.at] === '\\' ? 2 : 1;
    }
    this.at++;
    return this.text.slice(start, this.at);
  }

  private skipSpace(): void {
    while (/\s/.test(this.text[this.at] ?? '')) this.at++;
  }
}
