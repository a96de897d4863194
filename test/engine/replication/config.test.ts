// Tests of the resource file: both forms, defaults, every validation rule, syntax positions, quorum, and a fuzz.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  ConfigError, MIN_SECRET_BITS, loadResource, nodeByName, parseResource, parseSize, quorumVotes, secretProblem, type ResourceConfig,
} from '../../../engine/replication/config.js';
import { MAX_GRANULARITY, MIN_AL_EXTENTS, MIN_GRANULARITY } from '../../../engine/replication/limits.js';
import { AL_MAX_EXTENTS, Metadata, MetadataError, metadataSize } from '../../../engine/replication/metadata.js';
import { resourceJsonSchema } from '../../../engine/replication/config.js';
import { seededRandom } from '../../harness/random.js';

const FILE = '/srv/td/r0.json';
/** Strong enough for the rule (secretProblem): 24 letters and digits, about 142 bits. */
const SECRET = 'Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5';
const EXAMPLE = `{ "resource": "r0", "protocol": "C", "secret": "Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5", "quorum": "off",
  "nodes": { "alpha": { "address": "127.0.0.1:7789", "disk": "alpha.img", "socket": "alpha.sock" },
             "beta":  { "address": "127.0.0.1:7790", "disk": "beta.img",  "socket": "beta.sock" },
             "gamma": { "address": "127.0.0.1:7791", "disk": null, "socket": "gamma.sock" } } }`;
const TEXT = `# the example resource, drbd.conf style
resource r0 {
  protocol C;
  secret "Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5";   # quoted
  quorum off;
  on alpha { address 127.0.0.1:7789; disk alpha.img; socket alpha.sock; }
  on beta  { address 127.0.0.1:7790; disk "beta.img"; socket beta.sock; }
  on gamma { address 127.0.0.1:7791; disk none; socket gamma.sock; }
}
`;

type Json = Record<string, any>;

/** The example as an object, changed by `edit`, as JSON text. */
function json(edit: (o: Json) => void = () => {}): string {
  const o = JSON.parse(EXAMPLE) as Json;
  edit(o);
  return JSON.stringify(o, null, 2);
}

/** The errors parseResource reports for `text`; fails if it accepts it or throws anything else. */
function errorsOf(text: string, file = FILE): string[] {
  try {
    parseResource(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.ok(e.errors.length > 0);
    assert.equal(e.message, e.errors.join('\n'));
    return e.errors;
  }
  assert.fail('accepted a file with mistakes');
}

/** Asserts that some error starts with `r0.json: <path>: ` and contains every one of `parts`. */
function hasError(errors: string[], path: string, ...parts: string[]): void {
  const prefix = `r0.json: ${path}: `;
  const hit = errors.find((e) => e.startsWith(prefix) && parts.every((p) => e.includes(p)));
  assert.ok(hit !== undefined, `no error "${prefix}..." containing ${JSON.stringify(parts)} in:\n${errors.join('\n')}`);
}

function check(edit: (o: Json) => void, path: string, ...parts: string[]): void {
  hasError(errorsOf(json(edit)), path, ...parts);
}

function accepts(edit: (o: Json) => void): ResourceConfig {
  return parseResource(json(edit), FILE);
}

test('the example parses with the defaults filled in, ids 0,1,2 and paths relative to the file', () => {
  const cfg = parseResource(EXAMPLE, FILE);
  const node = (name: string, id: number, port: number, disk: string | null) => ({
    name, id, host: '127.0.0.1', port, address: `127.0.0.1:${port}`, disk, raid: null, metaDisk: 'internal',
    socket: `/srv/td/${name}.sock`, iscsi: null, iscsiAdvertise: null, control: `/srv/td/.r0.${name}.ctl`, queues: 1,
  });
  assert.deepEqual(cfg, {
    file: FILE, dir: '/srv/td', resource: 'r0', protocol: 'C', secret: SECRET, quorum: 'off', onNoQuorum: 'io-error',
    allowTwoPrimaries: false, iscsiTarget: 'iqn.2026-12.io.twindisk:r0', afterSb0pri: 'disconnect', afterSb1pri: 'disconnect', afterSb2pri: 'disconnect',
    resyncRate: 250 * 2 ** 20, cMinRate: 4 * 2 ** 20, csumsAlg: null,
    bitmapGranularity: 4096, alExtents: 1237, blockSize: 512, tls: null,
    nodes: [node('alpha', 0, 7789, '/srv/td/alpha.img'), node('beta', 1, 7790, '/srv/td/beta.img'), node('gamma', 2, 7791, null)],
    warnings: [],
  });
});

test('the text form of the same resource gives the same result', () => {
  const a = parseResource(EXAMPLE, FILE);
  const b = parseResource(TEXT, '/srv/td/r0.res');
  assert.deepEqual({ ...b, file: FILE }, a);
});

test('the text form: DRBD sections, flags, node-id, meta-disk, address families, tls, comments', () => {
  const text = `resource r0 {
    net {
      protocol A;            # asynchronous
      secret "a secret with spaces that is long enough";
      after-sb-0pri discard-node-beta;
      after-sb-1pri consensus;
    }
    options { quorum 2; on-no-quorum suspend-io; }
    disk { on-io-error detach; resync-rate 100M; c-min-rate 1M; al-extents 2001; bitmap-granularity 64K; }
    csums-alg xxh3;
    block-size 4096;
    tls { cert tls/cert.pem; key "tls/key.pem"; ca /etc/ca.pem; }
    on alpha { address ipv4 10.0.0.1:7789; disk /dev/vg/r0; node-id 3; queues 4; iscsi 10.0.0.1:3260; }
    on beta { address ipv6 [fd00::2]:7789; disk /dev/vg/r0; meta-disk /dev/vg/r0-md; control /run/b.ctl; }
    on "gamma" { address gamma.example.com:7789; disk none; }
  }`;
  const cfg = parseResource(text, '/etc/twindisk/r0.res');
  assert.equal(cfg.protocol, 'A');
  assert.equal(cfg.secret, 'a secret with spaces that is long enough');
  assert.equal(cfg.afterSb0pri, 'discard-node-beta');
  assert.equal(cfg.afterSb1pri, 'consensus');
  assert.equal(cfg.quorum, 2);
  assert.equal(cfg.onNoQuorum, 'suspend-io');
  assert.equal(cfg.resyncRate, 100 * 2 ** 20);
  assert.equal(cfg.cMinRate, 2 ** 20);
  assert.equal(cfg.alExtents, 2001);
  assert.equal(cfg.bitmapGranularity, 65536);
  assert.equal(cfg.csumsAlg, 'xxh3');
  assert.equal(cfg.blockSize, 4096);
  assert.deepEqual(cfg.tls, { cert: '/etc/twindisk/tls/cert.pem', key: '/etc/twindisk/tls/key.pem', ca: '/etc/ca.pem' });
  assert.deepEqual(cfg.nodes.map((n) => [n.name, n.id]), [['beta', 0], ['gamma', 1], ['alpha', 3]]);
  const [beta, gamma, alpha] = cfg.nodes as [any, any, any];
  assert.deepEqual([alpha.host, alpha.port, alpha.queues, alpha.iscsi], ['10.0.0.1', 7789, 4, { host: '10.0.0.1', port: 3260 }]);
  assert.deepEqual([beta.host, beta.address, beta.metaDisk, beta.control], ['fd00::2', '[fd00::2]:7789', '/dev/vg/r0-md', '/run/b.ctl']);
  assert.deepEqual([gamma.host, gamma.disk, gamma.socket], ['gamma.example.com', null, null]);
  // The same disk path on different hosts is normal in drbd.conf.
  assert.equal(alpha.disk, beta.disk);

  const flag = parseResource(TEXT.replace('quorum off;', 'allow-two-primaries;'), '/srv/td/r0.res');
  assert.equal(flag.allowTwoPrimaries, true);
  const yes = parseResource(TEXT.replace('quorum off;', 'allow-two-primaries yes;'), '/srv/td/r0.res');
  assert.equal(yes.allowTwoPrimaries, true);
  assert.equal(parseResource(TEXT.replace('quorum off;', 'allow-two-primaries no;'), '/srv/td/r0.res').allowTwoPrimaries, false);
});

test('loadResource reads a file, resolves paths against its directory, and reports a missing file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'twindisk-config-'));
  try {
    writeFileSync(join(dir, 'r0.json'), EXAMPLE);
    const cfg = loadResource(join(dir, 'r0.json'));
    assert.equal(cfg.dir, dir);
    assert.equal(cfg.nodes[0]!.disk, join(dir, 'alpha.img'));
    assert.equal(cfg.nodes[0]!.control, join(dir, '.r0.alpha.ctl'));
    writeFileSync(join(dir, 'r0.res'), TEXT);
    assert.deepEqual(loadResource(join(dir, 'r0.res')).nodes, cfg.nodes);
    assert.throws(() => loadResource(join(dir, 'nope.json')), (e: unknown) => e instanceof ConfigError && /nope\.json: no such file/.test(e.message));
    assert.throws(() => loadResource(dir), (e: unknown) => e instanceof ConfigError && /is a directory/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resource: required, a name of 1..64 safe characters', () => {
  check((o) => delete o.resource, 'resource', 'missing');
  check((o) => (o.resource = 'r 0'), 'resource', '"r 0" is not');
  check((o) => (o.resource = 'x'.repeat(65)), 'resource', 'is not 1..64');
  check((o) => (o.resource = 7), 'resource', 'expected a name string, got the number 7');
  assert.equal(accepts((o) => (o.resource = 'a.B_c-9')).resource, 'a.B_c-9');
});

test('protocol: A, B or C', () => {
  assert.equal(accepts((o) => delete o.protocol).protocol, 'C');
  assert.equal(accepts((o) => (o.protocol = 'A')).protocol, 'A');
  check((o) => (o.protocol = 'D'), 'protocol', '"D" is not one of "A", "B" or "C"');
  check((o) => (o.protocol = 'c'), 'protocol', 'did you mean "C"?');
  check((o) => (o.protocol = 3), 'protocol', 'expected "A", "B" or "C", got the number 3');
});

test('secret: required, and refused below 128 bits by the length x alphabet estimate, saying how to make one', () => {
  check((o) => delete o.secret, 'secret', 'missing', 'twindisk gen-secret');
  check((o) => (o.secret = ''), 'secret', 'is empty');
  check((o) => (o.secret = ['x']), 'secret', 'expected a string, got an array');
  // Short, or long but from a small alphabet: refused with the estimate and how to make a good one.
  check((o) => (o.secret = 'short'), 'secret', 'too weak: 5 characters', 'at most 23 bits', 'needs 128', 'twindisk gen-secret');
  check((o) => (o.secret = 'change-me'), 'secret', 'too weak');
  check((o) => (o.secret = 'test-secret-0123'), 'secret', 'too weak', 'alphabet of 69');
  check((o) => (o.secret = '0123456789abcdef0123456789abcde'), 'secret', 'too weak: 31 characters of hex digits carry at most 124 bits');
  check((o) => (o.secret = 'a'.repeat(40)), 'secret', 'too weak');
  check((o) => (o.secret = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1B'), 'secret', 'too weak: "a" makes up 40 of its 42 characters');
  // At the threshold: 32 hex digits (openssl rand -hex 16), 22 base64 characters of every kind, gen-secret's 43.
  assert.equal(accepts((o) => (o.secret = '0123456789abcdef0123456789abcdef')).warnings.length, 0);
  assert.equal(accepts((o) => (o.secret = 'q8+Zr1/Vx4Kp7Lm2Nt5Wb9')).secret, 'q8+Zr1/Vx4Kp7Lm2Nt5Wb9');
  assert.equal(accepts((o) => (o.secret = 'cVxv9HlEtMbT3J6fylXQ_rRx-uAD2qHJErHiF8GsfdQ')).secret.length, 43);
  assert.equal(secretProblem('q8+Zr1/Vx4Kp7Lm2Nt5Wb9'), null);
  assert.match(secretProblem('twindisk-demo-secret')!, /^too weak/);
  assert.equal(MIN_SECRET_BITS, 128);
});

test('quorum and on-no-quorum', () => {
  assert.equal(accepts((o) => (o.quorum = 'majority')).quorum, 'majority');
  assert.equal(accepts((o) => (o.quorum = 3)).quorum, 3);
  assert.equal(accepts((o) => delete o.quorum).quorum, 'off');
  check((o) => (o.quorum = 4), 'quorum', '4 is more than the 3 nodes');
  check((o) => (o.quorum = 0), 'quorum', '0 is not a positive integer');
  check((o) => (o.quorum = 1.5), 'quorum', 'not a positive integer');
  check((o) => (o.quorum = '2'), 'quorum', 'without quotes');
  check((o) => (o.quorum = 'all'), 'quorum', '"all" is not supported', '(3)');
  check((o) => (o.quorum = 'majorty'), 'quorum', 'did you mean "majority"?');
  check((o) => (o.quorum = true), 'quorum', 'got true');
  assert.equal(accepts((o) => (o['on-no-quorum'] = 'suspend-io')).onNoQuorum, 'suspend-io');
  check((o) => (o['on-no-quorum'] = 'freeze'), 'on-no-quorum', '"freeze" is not one of "io-error" or "suspend-io"');
  // Two nodes and a majority: allowed, with a warning that one node down loses quorum.
  const two = accepts((o) => {
    o.quorum = 'majority';
    delete o.nodes.gamma;
  });
  assert.match(two.warnings.join('\n'), /r0\.json: quorum: .*tie-breaker/);
});

test('allow-two-primaries: a boolean, and only with protocol C', () => {
  assert.equal(accepts((o) => (o['allow-two-primaries'] = true)).allowTwoPrimaries, true);
  check((o) => (o['allow-two-primaries'] = 'yes'), 'allow-two-primaries', 'expected true or false, got the string "yes"');
  check((o) => {
    o['allow-two-primaries'] = true;
    o.protocol = 'A';
  }, 'allow-two-primaries', 'protocol C');
});

test('after-sb-0pri, after-sb-1pri, after-sb-2pri', () => {
  for (const v of ['disconnect', 'discard-zero-changes', 'discard-younger-primary', 'discard-older-primary', 'discard-least-changes', 'discard-node-gamma']) {
    assert.equal(accepts((o) => (o['after-sb-0pri'] = v)).afterSb0pri, v);
  }
  check((o) => (o['after-sb-0pri'] = 'discard-node-delta'), 'after-sb-0pri', 'names no node', 'alpha, beta and gamma');
  check((o) => (o['after-sb-0pri'] = 'discard-everything'), 'after-sb-0pri', 'is not one of', '"discard-node-NAME"');
  check((o) => (o['after-sb-0pri'] = 1), 'after-sb-0pri', 'got the number 1');
  assert.equal(accepts((o) => (o['after-sb-1pri'] = 'discard-secondary')).afterSb1pri, 'discard-secondary');
  check((o) => (o['after-sb-1pri'] = 'call-pri-lost-after-sb'), 'after-sb-1pri', 'is not one of "disconnect", "discard-secondary" or "consensus"');
  check((o) => (o['after-sb-2pri'] = 'violently-as0p'), 'after-sb-2pri', 'not supported', '"disconnect"');
});

test('resync-rate and c-min-rate: sizes per second, 0 unlimited, with warnings for odd values', () => {
  assert.equal(accepts((o) => (o['resync-rate'] = '100M')).resyncRate, 100 * 2 ** 20);
  assert.equal(accepts((o) => (o['resync-rate'] = '100M/s')).resyncRate, 100 * 2 ** 20);
  assert.equal(accepts((o) => (o['resync-rate'] = 1048576)).resyncRate, 1048576);
  assert.equal(accepts((o) => (o['resync-rate'] = '0')).resyncRate, 0);
  assert.equal(accepts((o) => (o['resync-rate'] = 0)).resyncRate, 0);
  assert.equal(accepts((o) => (o['c-min-rate'] = '8M')).cMinRate, 8 * 2 ** 20);
  check((o) => (o['resync-rate'] = 'fast'), 'resync-rate', '"fast" is not a size');
  check((o) => (o['resync-rate'] = -1), 'resync-rate', 'is not a size');
  check((o) => (o['c-min-rate'] = {}), 'c-min-rate', 'expected a size', 'got an object');
  assert.match(accepts((o) => (o['resync-rate'] = 100)).warnings.join('\n'), /resync-rate: 100 bytes\/s is very slow/);
  assert.match(accepts((o) => (o['resync-rate'] = '1M')).warnings.join('\n'), /c-min-rate: .* above resync-rate/);
  assert.deepEqual(accepts((o) => (o['resync-rate'] = 0)).warnings, []);
});

test('csums-alg, verify-alg, on-io-error: only what the engine implements', () => {
  assert.equal(accepts((o) => (o['csums-alg'] = 'xxh3')).csumsAlg, 'xxh3');
  assert.equal(accepts((o) => (o['csums-alg'] = null)).csumsAlg, null);
  check((o) => (o['csums-alg'] = 'sha1'), 'csums-alg', '"sha1" is not supported', '"xxh3"');
  // verify always compares xxh3 hashes: the key is accepted with that value only, and not carried in the config.
  accepts((o) => (o['verify-alg'] = 'xxh3'));
  check((o) => (o['verify-alg'] = 'crc32c'), 'verify-alg', '"crc32c" is not supported', 'verify always compares xxh3 hashes');
  check((o) => (o['verify-alg'] = null), 'verify-alg', 'got null');
  // A failed local write always detaches the disk: DRBD's other policies are refused, saying so.
  accepts((o) => (o['on-io-error'] = 'detach'));
  check((o) => (o['on-io-error'] = 'pass_on'), 'on-io-error', '"pass_on" is not supported', 'always detaches a disk whose write failed', 'write "detach"');
  check((o) => (o['on-io-error'] = 'call-local-io-error'), 'on-io-error', 'is not supported', 'detach');
  check((o) => (o['on-io-error'] = 'Detach'), 'on-io-error', 'did you mean "detach"?');
  const text = errorsOf(TEXT.replace('quorum off;', 'disk { on-io-error pass_on; }'), '/srv/td/r0.res');
  assert.ok(text.some((e) => e.startsWith('r0.res: on-io-error: "pass_on" is not supported; ') && e.endsWith('(line 5)')), text.join('\n'));
  const cfg = accepts((o) => ((o['verify-alg'] = 'xxh3'), (o['on-io-error'] = 'detach')));
  assert.ok(!('verifyAlg' in cfg) && !('onIoError' in cfg));
});

test('bitmap-granularity, al-extents, block-size', () => {
  assert.equal(accepts((o) => (o['bitmap-granularity'] = '64K')).bitmapGranularity, 65536);
  assert.equal(accepts((o) => (o['bitmap-granularity'] = 8192)).bitmapGranularity, 8192);
  check((o) => (o['bitmap-granularity'] = 2048), 'bitmap-granularity', '2048 is not a power of two from 4096');
  check((o) => (o['bitmap-granularity'] = '12K'), 'bitmap-granularity', '12288 is not a power of two');
  assert.equal(accepts((o) => (o['al-extents'] = 7)).alExtents, 7);
  assert.equal(accepts((o) => (o['al-extents'] = 2016)).alExtents, 2016);
  check((o) => (o['al-extents'] = 6), 'al-extents', '6 is out of range 7..2016');
  check((o) => (o['al-extents'] = 65534), 'al-extents', 'out of range');
  check((o) => (o['al-extents'] = 7.5), 'al-extents', '7.5 is not an integer');
  check((o) => (o['al-extents'] = '100'), 'al-extents', 'without quotes');
  assert.equal(accepts((o) => (o['block-size'] = 4096)).blockSize, 4096);
  assert.equal(accepts((o) => (o['block-size'] = '4K')).blockSize, 4096);
  check((o) => (o['block-size'] = 1024), 'block-size', '1024 is not a logical block size; expected 512 or 4096');
});

test('limits shared with the engine: the file accepts exactly what the metadata accepts', () => {
  // al-extents: the activity log's cap (AL_MAX_EXTENTS, one transaction lists them all), in the engine's words.
  assert.equal(AL_MAX_EXTENTS, 2016);
  assert.equal(accepts((o) => (o['al-extents'] = AL_MAX_EXTENTS)).alExtents, AL_MAX_EXTENTS);
  const configSays = errorsOf(json((o) => (o['al-extents'] = AL_MAX_EXTENTS + 1))).find((e) => e.startsWith('r0.json: al-extents: '))!;
  assert.equal(configSays, `r0.json: al-extents: 2017 is out of range ${MIN_AL_EXTENTS}..2016 (one transaction must list them all)`);
  let engineSays = '';
  try {
    Metadata.create({ backingFile: '/nonexistent/r0.img', metaFile: null, nodeId: 0, peerIds: [1], alExtents: AL_MAX_EXTENTS + 1 });
  } catch (e) {
    assert.ok(e instanceof MetadataError);
    engineSays = e.message;
  }
  const limit = '..2016 (one transaction must list them all)';
  assert.ok(engineSays.includes(limit) && configSays.includes(limit), `${engineSays}\n${configSays}`);
  // bitmap-granularity: powers of two from 4K to 2G, where metadataSize draws the line too.
  assert.equal(accepts((o) => (o['bitmap-granularity'] = '2G')).bitmapGranularity, MAX_GRANULARITY);
  assert.equal(accepts((o) => (o['bitmap-granularity'] = '4K')).bitmapGranularity, MIN_GRANULARITY);
  check((o) => (o['bitmap-granularity'] = '4G'), 'bitmap-granularity', '4294967296 is not a power of two from 4096 (4K) up to 2147483648 (2G)');
  assert.ok(metadataSize(2 ** 40, 2, MAX_GRANULARITY) > 0);
  assert.ok(metadataSize(2 ** 40, 2, MIN_GRANULARITY) > 0);
  assert.throws(() => metadataSize(2 ** 40, 2, MAX_GRANULARITY * 2), MetadataError);
  assert.throws(() => metadataSize(2 ** 40, 2, MIN_GRANULARITY / 2), MetadataError);
});

test('the JSON Schema: every key with its type and the engine\'s limits, unknown keys refused', () => {
  const schema = resourceJsonSchema() as any;
  assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  assert.equal(schema.additionalProperties, false);
  assert.deepEqual(schema.required.sort(), ['nodes', 'resource', 'secret']);
  assert.equal(schema.properties['al-extents'].maximum, AL_MAX_EXTENTS);
  assert.equal(schema.properties['al-extents'].minimum, MIN_AL_EXTENTS);
  assert.deepEqual(schema.properties.protocol.enum, ['A', 'B', 'C']);
  assert.deepEqual(schema.properties['on-io-error'].enum, ['detach']);
  assert.deepEqual(schema.properties['verify-alg'].enum, ['xxh3']);
  const node = schema.properties.nodes.additionalProperties;
  assert.deepEqual(node.required.sort(), ['address', 'disk']);
  assert.equal(node.additionalProperties, false);
  assert.equal(node.properties.queues.maximum, 64);
  assert.equal(schema.properties.nodes.maxProperties, 32);
  for (const [k, v] of Object.entries<any>(schema.properties)) assert.ok(typeof v.description === 'string', `${k} has a description`);
});

test('tls: cert, key and ca together, resolved against the file', () => {
  const cfg = accepts((o) => (o.tls = { cert: 'c.pem', key: '/k.pem', ca: '../ca.pem' }));
  assert.deepEqual(cfg.tls, { cert: '/srv/td/c.pem', key: '/k.pem', ca: '/srv/ca.pem' });
  assert.equal(accepts((o) => (o.tls = null)).tls, null);
  const errs = errorsOf(json((o) => (o.tls = { cert: 'c.pem', crt: 'x' })));
  hasError(errs, 'tls.key', 'missing');
  hasError(errs, 'tls.ca', 'missing');
  hasError(errs, 'tls.crt', 'unknown key', 'did you mean "cert"?');
  check((o) => (o.tls = 'tls/'), 'tls', 'expected an object with "cert", "key" and "ca"');
  check((o) => (o.tls = { cert: 1, key: 'k', ca: 'c' }), 'tls.cert', 'expected a path string');
});

test('nodes: required, an object of 1..32 nodes with safe names', () => {
  check((o) => delete o.nodes, 'nodes', 'missing');
  check((o) => (o.nodes = {}), 'nodes', 'is empty');
  check((o) => (o.nodes = [o.nodes.alpha]), 'nodes', 'expected an object keyed by node name', 'got an array');
  check((o) => {
    for (let i = 0; i < 33; i++) o.nodes[`n${i}`] = { address: `10.0.0.${i + 1}:7789`, disk: null };
  }, 'nodes', '36 nodes; a resource has at most 32');
  check((o) => (o.nodes['bad name'] = { address: '127.0.0.1:7792', disk: null }), 'nodes["bad name"]', 'is not 1..64 characters');
  check((o) => (o.nodes.delta = 'x'), 'nodes.delta', 'expected an object', 'got the string "x"');
  const many = accepts((o) => {
    o.nodes = {};
    for (let i = 0; i < 32; i++) o.nodes[`n${i}`] = { address: `10.0.0.${i + 1}:7789`, disk: 'd.img' };
  });
  assert.deepEqual(many.nodes.map((n) => n.id), Array.from({ length: 32 }, (_, i) => i));
});

test('address: host:port with an IPv4, [IPv6] or hostname host', () => {
  // The example from the brief, word for word.
  hasError(errorsOf(json((o) => (o.nodes.beta.address = '127.0.0.1')), FILE), 'nodes.beta.address', '"127.0.0.1" has no port; write it as host:port, e.g. 127.0.0.1:7790');
  assert.ok(errorsOf(json((o) => (o.nodes.beta.address = '127.0.0.1')))
    .includes('r0.json: nodes.beta.address: "127.0.0.1" has no port; write it as host:port, e.g. 127.0.0.1:7790'));
  check((o) => delete o.nodes.beta.address, 'nodes.beta.address', 'missing');
  check((o) => (o.nodes.beta.address = 7790), 'nodes.beta.address', 'expected a "host:port" string');
  check((o) => (o.nodes.beta.address = ''), 'nodes.beta.address', 'is empty');
  check((o) => (o.nodes.beta.address = '127.0.0.1:0'), 'nodes.beta.address', 'port 0 is out of range 1..65535');
  check((o) => (o.nodes.beta.address = '127.0.0.1:65536'), 'nodes.beta.address', 'out of range');
  check((o) => (o.nodes.beta.address = '127.0.0.1:http'), 'nodes.beta.address', 'port "http" is not a number');
  check((o) => (o.nodes.beta.address = '300.1.1.1:7790'), 'nodes.beta.address', '"300.1.1.1" is not a valid IPv4 address');
  check((o) => (o.nodes.beta.address = 'foo_bar:7790'), 'nodes.beta.address', 'is not an IPv4 address, [IPv6] address or hostname');
  check((o) => (o.nodes.beta.address = '::1:7790'), 'nodes.beta.address', 'write IPv6 addresses in brackets, e.g. [::1]:7790');
  check((o) => (o.nodes.beta.address = '[::1'), 'nodes.beta.address', 'no closing "]"');
  check((o) => (o.nodes.beta.address = '[1.2.3.4]:7790'), 'nodes.beta.address', 'is not an IPv6 address');
  check((o) => (o.nodes.beta.address = '0.0.0.0:7790'), 'nodes.beta.address', 'not an address peers can connect to');
  check((o) => (o.nodes.beta.address = '[::]:7790'), 'nodes.beta.address', 'not an address peers can connect to');
  const v6 = accepts((o) => (o.nodes.beta.address = '[::1]:7790'));
  assert.deepEqual([v6.nodes[1]!.host, v6.nodes[1]!.port, v6.nodes[1]!.address], ['::1', 7790, '[::1]:7790']);
  const named = accepts((o) => (o.nodes.beta.address = 'beta.example.com:7790'));
  assert.equal(named.nodes[1]!.host, 'beta.example.com');
});

test('disk, meta-disk, socket, iscsi, control, queues', () => {
  check((o) => delete o.nodes.alpha.disk, 'nodes.alpha.disk', 'missing', 'null for a diskless node');
  check((o) => (o.nodes.alpha.disk = ''), 'nodes.alpha.disk', 'is empty');
  check((o) => (o.nodes.alpha.disk = 5), 'nodes.alpha.disk', 'expected a path string', 'got the number 5');
  assert.equal(accepts((o) => (o.nodes.alpha.disk = '/dev/vg/r0')).nodes[0]!.disk, '/dev/vg/r0');

  assert.equal(accepts((o) => (o.nodes.alpha['meta-disk'] = 'alpha.md')).nodes[0]!.metaDisk, '/srv/td/alpha.md');
  assert.equal(accepts((o) => (o.nodes.alpha['meta-disk'] = 'internal')).nodes[0]!.metaDisk, 'internal');
  assert.equal(accepts((o) => (o.nodes.gamma['meta-disk'] = null)).nodes[2]!.metaDisk, 'internal');
  check((o) => (o.nodes.gamma['meta-disk'] = 'gamma.md'), 'nodes.gamma.meta-disk', 'a diskless node has no meta-disk');
  check((o) => (o.nodes.alpha['meta-disk'] = 'alpha.img'), 'nodes.alpha.meta-disk', 'is already the disk of node alpha');
  check((o) => (o.nodes.alpha['meta-disk'] = false), 'nodes.alpha.meta-disk', 'expected a path string or "internal"');

  assert.equal(accepts((o) => (o.nodes.alpha.socket = null)).nodes[0]!.socket, null);
  assert.equal(accepts((o) => delete o.nodes.alpha.socket).nodes[0]!.socket, null);
  check((o) => (o.nodes.alpha.socket = 1), 'nodes.alpha.socket', 'expected a path string');
  const long = accepts((o) => (o.nodes.alpha.socket = '/' + 'x'.repeat(120)));
  assert.match(long.warnings.join('\n'), /nodes\.alpha\.socket: .* 121 bytes long; Unix socket paths are limited to 107/);

  const portal = accepts((o) => {
    o.nodes.alpha.iscsi = '127.0.0.1:3260';
    o.nodes.beta.iscsi = '127.0.0.2';
  });
  assert.deepEqual(portal.nodes[1]!.iscsi, { host: '127.0.0.2', port: 3260 });
  assert.deepEqual(portal.nodes[0]!.iscsi, { host: '127.0.0.1', port: 3260 });
  check((o) => (o.nodes.alpha.iscsi = 'nope:x'), 'nodes.alpha.iscsi', 'is not a number');
  check((o) => (o.nodes.alpha.iscsi = 3260), 'nodes.alpha.iscsi', 'expected an iSCSI portal');
  check((o) => {
    o.nodes.alpha.iscsi = '127.0.0.1:3260';
    o.nodes.beta.iscsi = '127.0.0.1:3260';
  }, 'nodes.beta.iscsi', 'is already the iscsi portal of node alpha');
  check((o) => (o.nodes.alpha.iscsi = '127.0.0.1:7790'), 'nodes.alpha.iscsi', 'is already the address of node beta');
  // The advertised portal: defaults to "iscsi"; needed when "iscsi" listens on every address; only with "iscsi".
  assert.deepEqual(portal.nodes[0]!.iscsiAdvertise, { host: '127.0.0.1', port: 3260 });
  assert.equal(portal.nodes[2]!.iscsiAdvertise, null);
  assert.equal(portal.iscsiTarget, 'iqn.2026-12.io.twindisk:r0');
  const nat = accepts((o) => {
    o.nodes.alpha.iscsi = '0.0.0.0:3261';
    o.nodes.alpha['iscsi-advertise'] = '10.0.2.2:3261';
    o['iscsi-target'] = 'iqn.2026-12.com.example:vm1';
  });
  assert.deepEqual(nat.nodes[0]!.iscsiAdvertise, { host: '10.0.2.2', port: 3261 });
  assert.equal(nat.iscsiTarget, 'iqn.2026-12.com.example:vm1');
  check((o) => (o.nodes.alpha.iscsi = '0.0.0.0:3260'), 'nodes.alpha.iscsi', 'listens on every address', 'iscsi-advertise');
  check((o) => (o.nodes.alpha['iscsi-advertise'] = '10.0.2.2:3261'), 'nodes.alpha.iscsi-advertise', 'has no "iscsi" portal');
  check((o) => (o['iscsi-target'] = 7), 'iscsi-target', 'expected an iSCSI name');

  assert.equal(accepts((o) => (o.nodes.alpha.control = 'ctl/a.sock')).nodes[0]!.control, '/srv/td/ctl/a.sock');
  check((o) => (o.nodes.alpha.control = []), 'nodes.alpha.control', 'expected a path string');
  check((o) => (o.nodes.beta.control = 'alpha.sock'), 'nodes.beta.control', 'is already the socket of node alpha');

  assert.equal(accepts((o) => (o.nodes.alpha.queues = 64)).nodes[0]!.queues, 64);
  check((o) => (o.nodes.alpha.queues = 0), 'nodes.alpha.queues', '0 is out of range 1..64');
  check((o) => (o.nodes.alpha.queues = 65), 'nodes.alpha.queues', 'out of range 1..64');
});

test('ids: explicit ids are kept, the others follow order of appearance, skipping taken ones; nodes sorted by id', () => {
  const cfg = accepts((o) => (o.nodes.beta.id = 0));
  assert.deepEqual(cfg.nodes.map((n) => [n.name, n.id]), [['beta', 0], ['alpha', 1], ['gamma', 2]]);
  const sparse = accepts((o) => (o.nodes.alpha.id = 31));
  assert.deepEqual(sparse.nodes.map((n) => [n.name, n.id]), [['beta', 0], ['gamma', 1], ['alpha', 31]]);
  // Integer-like names keep file order (plain JS objects would list them first).
  const numeric = parseResource('{ "resource": "r0", "secret": "Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5", "nodes": { "b": { "address": "h:1", "disk": "b" }, "2": { "address": "h:2", "disk": "2" }, "1": { "address": "h:3", "disk": null } } }', FILE);
  assert.deepEqual(numeric.nodes.map((n) => [n.name, n.id]), [['b', 0], ['2', 1], ['1', 2]]);
  const numericText = parseResource('resource r0 { secret Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5; on b { address h:1; disk b; } on 2 { address h:2; disk 2; } on 1 { address h:3; disk none; } }', '/srv/td/r0.res');
  assert.deepEqual(numericText.nodes.map((n) => n.name), ['b', '2', '1']);
  check((o) => (o.nodes.alpha.id = 32), 'nodes.alpha.id', '32 is out of range 0..31');
  check((o) => (o.nodes.alpha.id = -1), 'nodes.alpha.id', 'out of range 0..31');
  check((o) => (o.nodes.alpha.id = 'one'), 'nodes.alpha.id', 'expected an integer 0..31');
  check((o) => {
    o.nodes.alpha.id = 4;
    o.nodes.gamma.id = 4;
  }, 'nodes.gamma.id', '4 is already the id of node alpha');
});

test('checks across nodes: unique addresses, disks and sockets on one machine, and at least one disk', () => {
  check((o) => (o.nodes.beta.address = '127.0.0.1:7789'), 'nodes.beta.address', '127.0.0.1:7789 is already the address of node alpha');
  check((o) => (o.nodes.beta.address = 'LOCALHOST:7789', o.nodes.alpha.address = 'localhost:7789'), 'nodes.beta.address', 'already the address of node alpha');
  // One endpoint written two ways: compared as the sockets they bind, not as text.
  check((o) => (o.nodes.beta.address = 'localhost:7789'), 'nodes.beta.address', 'localhost:7789 is the same endpoint as 127.0.0.1:7789, already the address of node alpha', 'give each its own port');
  check((o) => (o.nodes.alpha.address = 'localhost:7789', o.nodes.beta.address = '127.0.0.1:7789'), 'nodes.beta.address', '127.0.0.1:7789 is the same endpoint as localhost:7789');
  check((o) => (o.nodes.alpha.address = 'localhost:7789', o.nodes.beta.address = '[::1]:7789'), 'nodes.beta.address', '[::1]:7789 is the same endpoint as localhost:7789');
  check((o) => (o.nodes.alpha.address = '[::1]:7789', o.nodes.beta.address = '[0:0:0:0:0:0:0:1]:7789'), 'nodes.beta.address', 'same endpoint as [::1]:7789');
  check((o) => (o.nodes.beta.address = '[::ffff:127.0.0.1]:7789'), 'nodes.beta.address', 'same endpoint as 127.0.0.1:7789');
  check((o) => (o.nodes.alpha.address = 'db.localhost:7789', o.nodes.beta.address = '127.0.0.1:7789'), 'nodes.beta.address', 'same endpoint as db.localhost:7789');
  check((o) => (o.nodes.alpha.address = 'alpha.example:7789', o.nodes.beta.address = 'Alpha.Example:7789'), 'nodes.beta.address', 'Alpha.Example:7789 is already the address of node alpha');
  check((o) => (o.nodes.alpha.iscsi = 'localhost:7790'), 'nodes.alpha.iscsi', 'same endpoint as 127.0.0.1:7790, already the address of node beta');
  // Distinct sockets: other ports, other loopback addresses, IPv4 and IPv6 loopback apart, 0.0.0.0 refused.
  accepts((o) => (o.nodes.alpha.address = 'localhost:7789', o.nodes.beta.address = '127.0.0.1:7790'));
  accepts((o) => (o.nodes.alpha.address = '127.0.0.1:7789', o.nodes.beta.address = '127.0.0.2:7789', o.nodes.gamma.address = '[::1]:7789'));
  check((o) => (o.nodes.beta.address = '0.0.0.0:7790'), 'nodes.beta.address', 'is not an address peers can connect to');
  check((o) => (o.nodes.beta.disk = './alpha.img'), 'nodes.beta.disk', '/srv/td/alpha.img is already the disk of node alpha');
  check((o) => (o.nodes.gamma.socket = 'beta.sock'), 'nodes.gamma.socket', 'is already the socket of node beta');
  check((o) => (o.nodes.beta.socket = 'alpha.img'), 'nodes.beta.socket', 'is already the disk of node alpha');
  // 127.0.0.1 and localhost are one machine; distinct hosts are distinct machines.
  check((o) => (o.nodes.beta.address = 'localhost:7790', o.nodes.beta.disk = 'alpha.img'), 'nodes.beta.disk', 'already the disk of node alpha');
  const hosts = accepts((o) => {
    o.nodes.alpha.address = '10.0.0.1:7789';
    o.nodes.beta.address = '10.0.0.2:7789';
    o.nodes.beta.disk = 'alpha.img';
    o.nodes.beta.socket = 'alpha.sock';
  });
  assert.equal(hosts.nodes[0]!.disk, hosts.nodes[1]!.disk);
  check((o) => (o.nodes.alpha.disk = null, o.nodes.beta.disk = null), 'nodes', 'no node has a disk');
});

test('unknown keys are errors, with "did you mean" or a hint where one helps', () => {
  check((o) => (o.protcol = 'C'), 'protcol', 'unknown key; did you mean "protocol"?');
  check((o) => (o.qourum = 'off'), 'qourum', 'did you mean "quorum"?');
  check((o) => (o.allowTwoPrimaries = true), 'allowTwoPrimaries', 'did you mean "allow-two-primaries"?');
  check((o) => (o.on_io_error = 'detach'), 'on_io_error', 'did you mean "on-io-error"?');
  check((o) => (o.nodes.alpha.adress = 'x'), 'nodes.alpha.adress', 'did you mean "address"?');
  check((o) => (o.nodes.alpha.metadisk = 'x'), 'nodes.alpha.metadisk', 'did you mean "meta-disk"?');
  check((o) => (o.zzz = 1), 'zzz', 'unknown key; the keys here are "resource", "protocol"');
  check((o) => (o['shared-secret'] = 'x'), 'shared-secret', 'twindisk calls it "secret"');
  check((o) => (o.address = 'x'), 'address', 'per-node setting');
  check((o) => (o.nodes.alpha.protocol = 'C'), 'nodes.alpha.protocol', 'resource-wide setting');
  check((o) => (o.nodes.alpha['node-id'] = 1), 'nodes.alpha.node-id', 'written "id"');
  check((o) => (o.nodes.alpha.device = '/dev/drbd0'), 'nodes.alpha.device', 'no kernel block device');
});

test('several mistakes are all reported at once', () => {
  const errs = errorsOf(json((o) => {
    o.protcol = 'C';
    o.secret = 7;
    o.quorum = 9;
    o['al-extents'] = 1;
    o.nodes.alpha.address = 'nowhere';
    o.nodes.beta.disk = 'alpha.img';
    o.nodes.gamma.queues = 0;
    o.nodes.gamma.id = 40;
  }));
  hasError(errs, 'protcol', 'did you mean "protocol"?');
  hasError(errs, 'secret', 'expected a string');
  hasError(errs, 'quorum', 'more than the 3 nodes');
  hasError(errs, 'al-extents', 'out of range');
  hasError(errs, 'nodes.alpha.address', 'has no port');
  hasError(errs, 'nodes.beta.disk', 'already the disk of node alpha');
  hasError(errs, 'nodes.gamma.queues', 'out of range');
  hasError(errs, 'nodes.gamma.id', 'out of range');
  assert.equal(errs.length, 8);
  for (const e of errs) assert.ok(e.startsWith('r0.json: '), e);
  const msg = (() => {
    try {
      parseResource(json((o) => ((o.protcol = 'C'), (o.secret = 7))), FILE);
    } catch (e) {
      return (e as Error).message;
    }
    return '';
  })();
  assert.match(msg, /protcol: unknown key.*\n.*secret: expected a string/);
});

test('keys given twice are reported, in JSON and in the text form', () => {
  hasError(errorsOf('{ "resource": "r0", "resource": "r1", "secret": "Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5", "nodes": { "a": { "address": "h:1", "disk": "d" } } }'), 'resource', 'given twice');
  const errs = errorsOf(TEXT.replace('quorum off;', 'quorum off;\n  protocol A;'), '/srv/td/r0.res');
  assert.ok(errs.includes('r0.res: protocol: given twice; first at line 3 (line 6)'), errs.join('\n'));
  const nodes = errorsOf(TEXT.replace('on gamma', 'on beta'), '/srv/td/r0.res');
  assert.ok(nodes.some((e) => e.startsWith('r0.res: nodes.beta: given twice; first at line 7 (line 8)')), nodes.join('\n'));
});

test('JSON syntax errors give line and column', () => {
  const at = (text: string): string => errorsOf(text)[0]!;
  assert.equal(at('{\n  "resource": "r0",\n  "protocol": C\n}'), 'r0.json: line 3, column 15: unexpected "C"; JSON strings take double quotes');
  assert.equal(at('{ "resource": "r0",\n  "secret": "x" "nodes": {} }'), 'r0.json: line 2, column 17: missing "," before "nodes"');
  assert.equal(at('{ "resource": "r0", }'), 'r0.json: line 1, column 21: trailing comma before "}"');
  assert.equal(at('{ "resource": "r0"'), 'r0.json: line 1, column 1: unterminated object: missing "}"');
  assert.equal(at('{ "resource": "r0\n" }'), 'r0.json: line 1, column 15: unterminated string (a string cannot span lines)');
  assert.equal(at('{\n  // a comment\n}'), 'r0.json: line 2, column 3: JSON has no comments');
  assert.equal(at('{ resource: "r0" }'), 'r0.json: line 1, column 3: property names take double quotes, found "resource"');
  assert.equal(at('{ "a": 1 } x'), 'r0.json: line 1, column 12: unexpected "x" after the end of the JSON object');
  assert.equal(at('{ "a": [1, 2,] }'), 'r0.json: line 1, column 14: trailing comma before "]"');
  assert.equal(at('{ "a": "\\q" }'), 'r0.json: line 1, column 9: invalid escape "\\\\q" in a string');
  assert.match(at('{ "a": ' + '['.repeat(200) + ' }'), /nested too deeply/);
  assert.match(errorsOf('')[0]!, /^r0\.json: the file is empty/);
  assert.match(errorsOf('[1]')[0]!, /^r0\.json: line 1: expected "resource NAME \{"/);
  assert.match(errorsOf('5')[0]!, /^r0\.json: line 1: expected "resource NAME \{"/);
  // More of what jsonc-parser finds, worded the same way.
  assert.equal(at('{ "a": [1, 2'), 'r0.json: line 1, column 8: unterminated array: missing "]"');
  assert.equal(at('{ "a" 1 }'), 'r0.json: line 1, column 7: expected ":" after the property name "a", found "1"');
  assert.equal(at('{ "a": [1 2] }'), 'r0.json: line 1, column 11: expected "," or "]" after an array element, found "2"');
  assert.equal(at('{ "a": "x\u0001y" }'), 'r0.json: line 1, column 10: control character in a string; escape it');
  assert.equal(at("{ \"a\": 'x' }"), 'r0.json: line 1, column 8: JSON strings take double quotes');
  assert.equal(at('{ "a": }'), 'r0.json: line 1, column 8: unexpected "}"; expected a value');
  assert.equal(at('{ "a": 1 } { }'), 'r0.json: line 1, column 12: unexpected "{" after the end of the JSON object');
  assert.equal(at('{ "a": 1 /* c */ }'), 'r0.json: line 1, column 10: JSON has no comments');
});

test('text-form syntax errors give the line; validation errors in the text form carry it too', () => {
  const first = (text: string): string => errorsOf(text, '/srv/td/r0.res')[0]!;
  assert.equal(first(TEXT.replace('protocol C;', 'protocol C')), 'r0.res: line 3: missing ";" after "protocol C"');
  assert.equal(first(TEXT.replace('"Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5";', '"Zx7Kq2Vm9Lp4Rt8Wn3Bc6Hd5;')), 'r0.res: line 4: unterminated string: missing closing \'"\'');
  assert.equal(first(TEXT.replace(/}\s*$/, '')), 'r0.res: line 2: missing "}" to close "resource r0 {" opened here');
  assert.equal(first(TEXT.replace('on alpha {', 'on alpha')), 'r0.res: line 6: expected "{" after "on alpha", found "address"; one node per "on" section');
  assert.equal(first(TEXT + 'resource r1 { }\n'), 'r0.res: line 10: unexpected "resource" after the end of resource r0; a file holds one resource');
  assert.equal(first('volume 0 { }'), 'r0.res: line 1: expected "resource NAME {" (or a JSON object), found "volume"');
  assert.equal(first(TEXT.replace('quorum off;', 'quorum;')), 'r0.res: line 5: "quorum" needs a value');
  assert.equal(first(TEXT.replace('127.0.0.1:7789;', '127.0.0.1:7789')), 'r0.res: line 6: missing ";" before "disk" in "address 127.0.0.1:7789 disk alpha.img"');
  assert.equal(first(TEXT.replace('quorum off;', 'quorum off majority;')), 'r0.res: line 5: "quorum" takes one value, found 2: quorum off majority');
  assert.match(first(TEXT.replace('quorum off;', 'net { on x { } }')), /^r0\.res: line 5: "on NAME \{ \.\.\. \}" belongs directly inside "resource"/);

  const errs = errorsOf(TEXT.replace('quorum off;', 'qourum off;\n  handlers { split-brain "/bin/true"; }')
    .replace('address 127.0.0.1:7790;', 'address 127.0.0.1;')
    .replace('socket beta.sock;', 'socket beta.sock; node-di 1;'), '/srv/td/r0.res');
  assert.deepEqual(errs, [
    'r0.res: handlers: unknown section "handlers { }": the sections are on NAME, tls, net, disk and options (line 6)',
    'r0.res: qourum: unknown key; did you mean "quorum"? (line 5)',
    'r0.res: nodes.beta.node-di: unknown key; did you mean "node-id"? (line 8)',
    'r0.res: nodes.beta.address: "127.0.0.1" has no port; write it as host:port, e.g. 127.0.0.1:7790 (line 8)',
  ]);
  hasError(errorsOf(TEXT.replace('disk alpha.img;', ''), '/srv/td/r0.res').map((e) => e.replace('r0.res', 'r0.json')), 'nodes.alpha.disk', 'missing', '"disk none;"', '(line 6)');
});

test('quorumVotes: majority over all nodes, numeric quorum, off', () => {
  const withNodes = (n: number, quorum: unknown): ResourceConfig => accepts((o) => {
    o.quorum = quorum;
    o.nodes = {};
    for (let i = 0; i < n; i++) o.nodes[`n${i}`] = { address: `127.0.0.1:${7789 + i}`, disk: i === n - 1 && n > 2 ? null : `n${i}.img` };
  });
  assert.equal(quorumVotes(withNodes(2, 'majority')), 2);
  assert.equal(quorumVotes(withNodes(3, 'majority')), 2); // two with disks plus a diskless tie-breaker
  assert.equal(quorumVotes(withNodes(4, 'majority')), 3);
  assert.equal(quorumVotes(withNodes(5, 'majority')), 3);
  assert.equal(quorumVotes(withNodes(4, 2)), 2);
  assert.equal(quorumVotes(withNodes(3, 3)), 3);
  assert.equal(quorumVotes(withNodes(3, 'off')), 0);
  assert.equal(quorumVotes({ ...withNodes(2, 'off'), quorum: 3 }), Infinity);
});

test('parseSize: bytes and binary units', () => {
  const cases: [string | number, number][] = [
    [4096, 4096], ['4096', 4096], ['512K', 524288], ['512k', 524288], ['100M', 104857600], ['1G', 2 ** 30], ['2T', 2 ** 41],
    ['1.5G', 1.5 * 2 ** 30], ['64KiB', 65536], ['64KB', 65536], ['0', 0], [' 8M ', 8 * 2 ** 20], ['10B', 10],
  ];
  for (const [s, n] of cases) assert.equal(parseSize(s), n, String(s));
  for (const s of ['', 'M', '10X', '-1', '1e3', '0.1K', '1 G G', '99999999999P'] as const) {
    assert.throws(() => parseSize(s), (e: unknown) => e instanceof ConfigError && e.errors.length === 1, s);
  }
  for (const n of [-1, 1.5, NaN, Infinity]) assert.throws(() => parseSize(n), ConfigError);
});

test('nodeByName finds a node, or names the nodes there are', () => {
  const cfg = parseResource(EXAMPLE, FILE);
  assert.equal(nodeByName(cfg, 'beta').id, 1);
  assert.throws(() => nodeByName(cfg, 'bteа'), (e: unknown) => e instanceof ConfigError && /r0\.json: resource r0 has no node "bteа"; its nodes are alpha, beta and gamma/.test(e.message));
  assert.throws(() => nodeByName(cfg, 'btea'), /did you mean "beta"\?/);
});


/** parseResource must return or throw a ConfigError whose every error names the file; nothing else. */
function survives(text: string, file: string, what: string): void {
  try {
    const cfg = parseResource(text, file);
    assert.ok(cfg.nodes.length >= 1 && cfg.nodes.length <= 32, what);
  } catch (e) {
    if (!(e instanceof ConfigError)) assert.fail(`${what}: threw ${String(e)} for:\n${text}`);
    assert.ok(e.errors.length > 0, what);
    const base = file.slice(file.lastIndexOf('/') + 1);
    for (const m of e.errors) assert.ok(m.startsWith(`${base}: `), `${what}: ${m}`);
  }
}

test('fuzz: random mutations of the JSON and text examples never throw anything but ConfigError', () => {
  const rnd = seededRandom(0x7d15c);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const alphabet = ['{', '}', '[', ']', '"', ':', ',', ';', '#', '\\', '\n', ' ', '0', '9', '-', '.', 'a', 'none', 'null', 'on', '__proto__', 'é', '\u0000'];
  const mutateText = (s: string): string => {
    let t = s;
    for (let k = 1 + Math.floor(rnd() * 4); k > 0; k--) {
      const i = Math.floor(rnd() * (t.length + 1));
      const j = Math.min(t.length, i + Math.floor(rnd() * 8));
      switch (Math.floor(rnd() * 4)) {
        case 0: t = t.slice(0, i) + t.slice(j); break;
        case 1: t = t.slice(0, i) + pick(alphabet) + t.slice(i); break;
        case 2: t = t.slice(0, i) + t.slice(j, j + 6) + t.slice(i, j) + t.slice(j + 6); break;
        default: t = t.slice(0, i) + t.slice(Math.floor(rnd() * t.length), Math.floor(rnd() * t.length)) + t.slice(i);
      }
    }
    return t;
  };
  const values = [null, true, false, 0, -1, 1.5, 7789, 2 ** 60, '', 'x', 'none', 'internal', 'majority', '127.0.0.1', '[::1]:1', '64K', [], {}, { cert: 'a' }, ['a']];
  const keys = ['resource', 'protocol', 'secret', 'quorum', 'nodes', 'tls', 'address', 'disk', 'meta-disk', 'id', 'queues', 'iscsi', 'control', 'socket', 'after-sb-0pri', 'resync-rate', '__proto__', 'constructor', 'toString', 'hasOwnProperty'];
  const mutateJson = (): string => {
    const o = JSON.parse(EXAMPLE) as Json;
    for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
      const nodeNames = Object.keys(o.nodes ?? {});
      let target: Json = o;
      if (rnd() < 0.6 && nodeNames.length > 0 && typeof o.nodes === 'object' && o.nodes !== null) {
        const n = o.nodes[pick(nodeNames)];
        if (typeof n === 'object' && n !== null) target = n;
      }
      const key = pick(keys);
      if (rnd() < 0.2) delete target[key];
      else Object.defineProperty(target, key, { value: pick(values), enumerable: true, writable: true, configurable: true });
    }
    return JSON.stringify(o);
  };
  for (let i = 0; i < 2000; i++) {
    survives(mutateText(EXAMPLE), FILE, `json text mutation ${i}`);
    survives(mutateText(TEXT), '/srv/td/r0.res', `text mutation ${i}`);
    survives(mutateJson(), FILE, `json value mutation ${i}`);
  }
});
