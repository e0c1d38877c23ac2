/**
 * A small seeded pseudo-random generator (sfc32, seeded through splitmix32). Deterministic code
 * (the Raft core, the simulator) takes one of these instead of `Math.random`, so the seed alone
 * decides a run.
 */

export interface Prng {
  /** A uniformly distributed unsigned 32-bit integer. */
  nextU32(): number;
  /** A float in [0, 1). */
  nextFloat(): number;
  /** An integer in [minInclusive, maxExclusive). */
  nextInt(minInclusive: number, maxExclusive: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  /** An independent generator derived from this one (for sub-components). */
  fork(): Prng;
}

function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

class Sfc32 implements Prng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number) {
    const mix = splitmix32(seed);
    this.a = mix();
    this.b = mix();
    this.c = mix();
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  nextFloat(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  nextInt(minInclusive: number, maxExclusive: number): number {
    if (!(maxExclusive > minInclusive)) {
      throw new RangeError(`nextInt: empty range [${minInclusive}, ${maxExclusive})`);
    }
    return minInclusive + Math.floor(this.nextFloat() * (maxExclusive - minInclusive));
  }

  chance(p: number): boolean {
    return this.nextFloat() < p;
  }

  fork(): Prng {
    return new Sfc32(this.nextU32());
  }
}

/** A generator whose whole sequence is decided by `seed` (any integer). */
export function createPrng(seed: number): Prng {
  return new Sfc32(seed);
}
