// Tests of the QMP line parser.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { QmpProtocolError, parseQmpLines } from '../../qemu-plugin/qmp.js';

test('complete lines parse, the unfinished tail is kept', () => {
  const r = parseQmpLines('{"QMP": {"version": {}}}\r\n{"return": {}, "id": "td-1"}\n{"event": "STOP", "da');
  assert.equal(r.messages.length, 2);
  assert.deepEqual(r.messages[1], { return: {}, id: 'td-1' });
  assert.equal(r.rest, '{"event": "STOP", "da');
  const r2 = parseQmpLines(r.rest + 'ta": {}}\n');
  assert.deepEqual(r2.messages, [{ event: 'STOP', data: {} }]);
  assert.equal(r2.rest, '');
});

test('garbage and non-objects are protocol errors', () => {
  assert.throws(() => parseQmpLines('not json\n'), QmpProtocolError);
  assert.throws(() => parseQmpLines('[1,2]\n'), QmpProtocolError);
  assert.throws(() => parseQmpLines('42\n'), QmpProtocolError);
});

test('fuzz: random byte strings parse or raise QmpProtocolError only', () => {
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  const alphabet = '{}[]":,\n \\abc01-truefalsnul';
  for (let i = 0; i < 5000; i++) {
    let s = '';
    for (let k = rnd(60); k > 0; k--) s += alphabet[rnd(alphabet.length)];
    try {
      const r = parseQmpLines(s);
      assert.ok(!r.rest.includes('\n'));
    } catch (e) {
      assert.ok(e instanceof QmpProtocolError, String(e));
    }
  }
});
