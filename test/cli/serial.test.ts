// The disk serial the guest sees (GET_ID): one function for `serve` (by image path) and `up` (by
// resource), unchanged from the two it replaces, and never longer than virtio-blk's 20 bytes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import { SERIAL_BYTES, serialFor } from '../../engine/serial.js';

test('serialFor: the same serials as before, at most 20 bytes', () => {
  const image = 'demo/alpha.img';
  assert.equal(serialFor({ image }), 'twindisk-' + createHash('sha1').update(path.resolve(image)).digest('hex').slice(0, 11));
  assert.equal(serialFor({ image: path.resolve(image) }), serialFor({ image }), 'relative and absolute paths name one image');
  assert.equal(serialFor({ resource: 'r0' }), 'td-' + createHash('sha1').update('r0').digest('hex').slice(0, 17));
  assert.equal(serialFor({ resource: 'r0' }), 'td-23f83465a763f9790');
  assert.notEqual(serialFor({ resource: 'r1' }), serialFor({ resource: 'r0' }));
  for (const s of [serialFor({ image }), serialFor({ resource: 'x'.repeat(64) })]) {
    assert.equal(Buffer.byteLength(s), SERIAL_BYTES);
    assert.match(s, /^(twindisk|td)-[0-9a-f]+$/);
  }
});
