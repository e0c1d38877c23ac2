/*
 * The per-message checks of a send (src/broker/rmq-validate.ts) that take shortcuts on the hot
 * path: `checkTopic` remembers the last topic it accepted, and `checkMessageId` accepts plain
 * printable ASCII ids on sight. Each shortcut must answer exactly as the full check does: ids
 * are compared with a copy of the full rules, and each topic check with the same check made
 * right after an unrelated topic, on inputs drawn to sit on the edges (spaces, control
 * characters, non-ASCII, lone surrogates, the length limit, reserved names, namespaces).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import { checkMessageId, checkTopic, wrapNamespace } from '../../src/broker/rmq-validate';
import { MESSAGE_LIMITS } from '../../src/store/message-limits';
import { fcParams } from '../fc-params';

/** The full message-id rules, as `checkMessageId` applies them without its shortcut. */
function idIsValid(id: string): boolean {
  if (/^\s*$/.test(id)) return false;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) return false;
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(id)) {
    return false;
  }
  return Buffer.byteLength(id, 'utf8') <= MESSAGE_LIMITS.messageIdSizeBytesMax;
}

function accepts(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch (err) {
    assert.ok(isRaftmqError(err), `a typed error, not ${String(err)}`);
    return false;
  }
}

const max = MESSAGE_LIMITS.messageIdSizeBytesMax;
const idChar = fc.constantFrom(
  'a',
  'F',
  '0',
  '-',
  '~',
  ' ',
  '\t',
  '\u0000',
  '\u007f',
  'é',
  '\uD800',
  '\uDC00',
  '😀',
);
const idArb = fc.oneof(
  fc.stringMatching(/^[0-9A-F]{1,40}$/),
  fc.array(idChar, { maxLength: 8 }).map((cs) => cs.join('')),
  fc.integer({ min: max - 2, max: max + 2 }).map((n) => 'x'.repeat(n)),
  fc.integer({ min: max - 2, max: max + 2 }).map((n) => `${'x'.repeat(n - 1)}é`),
);

describe('rmq-validate shortcuts', () => {
  it('checkMessageId accepts exactly the ids the full rules accept', () => {
    fc.assert(
      fc.property(idArb, (id) => {
        assert.equal(
          accepts(() => checkMessageId(id)),
          idIsValid(id),
          JSON.stringify(id),
        );
      }),
      fcParams(500),
    );
  });

  it('checkTopic answers each call as it would with nothing remembered', () => {
    const names = fc.constantFrom('orders', 'Orders', '%RETRY%g', 'rmq_sys_x', 'bad name', '');
    const call = fc.record({
      name: names,
      ns: fc.constantFrom('', 'ns1', 'ns2'),
      field: fc.constantFrom('topic.name', 'message.topic'),
      allowReserved: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(call, { minLength: 2, maxLength: 12 }), (calls) => {
        const answer = (c: (typeof calls)[number]): string => {
          try {
            return checkTopic(c.name, c.ns, c.field, c.allowReserved);
          } catch (err) {
            assert.ok(isRaftmqError(err));
            return `error: ${err.message}`;
          }
        };
        // Each call right after another (the memo holds the other's answer) must answer as it
        // does right after an unrelated topic (nothing useful in the memo).
        for (let k = 1; k < calls.length; k++) {
          const c = calls[k] as (typeof calls)[number];
          answer(calls[k - 1] as (typeof calls)[number]);
          const got = answer(c);
          checkTopic('unrelated', '', 'topic.name');
          assert.equal(got, answer(c), JSON.stringify([calls[k - 1], c]));
        }
      }),
      fcParams(200),
    );
  });

  it('checkTopic keeps refusing a reserved topic after accepting it where reserved ones are allowed', () => {
    assert.equal(checkTopic('%RETRY%g', '', 'topic.name', true), '%RETRY%g');
    assert.throws(() => checkTopic('%RETRY%g', '', 'topic.name'), /reserved/);
    // The same name in another namespace is another topic, also right after the first.
    assert.equal(checkTopic('orders', 'ns1', 'topic.name'), 'ns1%orders');
    assert.equal(checkTopic('orders', 'ns1', 'topic.name'), 'ns1%orders');
    assert.equal(checkTopic('orders', 'ns2', 'topic.name'), 'ns2%orders');
  });

  it('names a topic given with its namespace prefix once, as RocketMQ does', () => {
    for (const [ns, name, stored] of [
      ['shop', 'orders', 'shop%orders'],
      ['shop', 'shop%orders', 'shop%orders'],
      ['', 'orders', 'orders'],
      ['shop', 'shopx%orders', 'shop%shopx%orders'],
    ] as const) {
      assert.equal(wrapNamespace(ns, name), stored, `${ns} ${name}`);
    }
  });
});
