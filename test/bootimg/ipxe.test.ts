// bootimg/ipxe.ts: target parsing, SAN URIs and the exact iPXE scripts, and `twindisk ipxe` end to end.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { IpxeTargetError, ipxeScript, parseIscsiTarget, sanbootUri, type IscsiTarget } from '../../bootimg/ipxe.js';
import { cli } from '../harness/serve.js';

function twindisk(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The script every target gets, byte for byte, with its sanboot URI and initiator line filled in. */
function expected(iqn: string, uri: string, initiator = 'iqn.2026-12.io.twindisk:initiator-${net0/mac:hexhyp}'): string {
  return '#!ipxe\n'
    + `# Boot from twindisk's iSCSI volume ${iqn} (printed by \`twindisk ipxe\`).\n`
    + 'dhcp || dhcp || goto dhcp_failed\n'
    + `set initiator-iqn ${initiator}\n`
    + `sanboot ${uri} || goto sanboot_failed\n`
    + ':sanboot_failed\n'
    + `echo twindisk: sanboot ${uri} failed: is the target running and reachable from \${net0/ip}?\n`
    + 'shell\n'
    + 'exit 1\n'
    + ':dhcp_failed\n'
    + 'echo twindisk: dhcp failed twice: no network configuration (is a DHCP server answering on this network?)\n'
    + 'shell\n';
}

test('parseIscsiTarget: the URL form, defaults port 3260 and LUN 0', () => {
  assert.deepEqual(parseIscsiTarget('iscsi://10.0.0.1/iqn.2026-12.com.example:vm1'),
    { host: '10.0.0.1', port: 3260, lun: 0, iqn: 'iqn.2026-12.com.example:vm1' });
  assert.deepEqual(parseIscsiTarget('iscsi://Storage.Example.com:3261/iqn.2026-12.com.example'),
    { host: 'storage.example.com', port: 3261, lun: 0, iqn: 'iqn.2026-12.com.example' });
  assert.deepEqual(parseIscsiTarget('iscsi://[2001:DB8::1]:3262/eui.0123456789ABCDEF'),
    { host: '2001:db8::1', port: 3262, lun: 0, iqn: 'eui.0123456789ABCDEF' });
});

test('parseIscsiTarget: the RFC 4173 form (protocol empty or 6, LUN in hex, target name may hold colons)', () => {
  assert.deepEqual(parseIscsiTarget('iscsi:10.253.235.1::::iqn.2010-04.org.ipxe:rabbit'),
    { host: '10.253.235.1', port: 3260, lun: 0, iqn: 'iqn.2010-04.org.ipxe:rabbit' });
  assert.deepEqual(parseIscsiTarget('iscsi:192.168.0.1:6:3261:1f:iqn.1986-03.com.sun:02:e9abf4cd'),
    { host: '192.168.0.1', port: 3261, lun: 31, iqn: 'iqn.1986-03.com.sun:02:e9abf4cd' });
  assert.deepEqual(parseIscsiTarget('iscsi:[fe80::1]::3260:2:iqn.2026-12.com.example:a:b'),
    { host: 'fe80::1', port: 3260, lun: 2, iqn: 'iqn.2026-12.com.example:a:b' });
});

test('sanbootUri and parseIscsiTarget round trip, both forms', () => {
  const targets: IscsiTarget[] = [
    { host: '10.0.0.1', port: 3260, lun: 0, iqn: 'iqn.2026-12.com.example:vm1' },
    { host: 'san.example.com', port: 13260, lun: 255, iqn: 'iqn.2026-12.com.example:vm1:disk-0.a' },
    { host: '::1', port: 3260, lun: 10, iqn: 'eui.02004567A425678D' },
    { host: 'fe80::1:2', port: 65535, lun: 1, iqn: 'iqn.1991-05.com.microsoft' },
  ];
  for (const t of targets) {
    const uri = sanbootUri(t);
    assert.deepEqual(parseIscsiTarget(uri), t, uri);
    assert.equal(sanbootUri(parseIscsiTarget(uri)), uri);
    if (t.lun === 0) {
      const host = t.host.includes(':') ? `[${t.host}]` : t.host;
      assert.deepEqual(parseIscsiTarget(`iscsi://${host}:${t.port}/${t.iqn}`), t);
    }
  }
  assert.equal(sanbootUri(targets[2]!), 'iscsi:[::1]::3260:a:eui.02004567A425678D');
  assert.equal(sanbootUri(targets[1]!), 'iscsi:san.example.com::13260:ff:iqn.2026-12.com.example:vm1:disk-0.a');
});

test('ipxeScript: the exact script for a few targets', () => {
  assert.equal(ipxeScript({ target: parseIscsiTarget('iscsi://10.0.0.1/iqn.2026-12.com.example:vm1') }),
    expected('iqn.2026-12.com.example:vm1', 'iscsi:10.0.0.1::3260:0:iqn.2026-12.com.example:vm1'));
  assert.equal(ipxeScript({ target: parseIscsiTarget('iscsi:[2001:db8::5]::3261:3:eui.0123456789abcdef'), initiator: 'iqn.2026-12.com.example:client7' }),
    expected('eui.0123456789abcdef', 'iscsi:[2001:db8::5]::3261:3:eui.0123456789abcdef', 'iqn.2026-12.com.example:client7'));
  assert.equal(ipxeScript({ target: { host: 'san.example.com', port: 3260, lun: 12, iqn: 'iqn.2026-12.com.example' } }),
    expected('iqn.2026-12.com.example', 'iscsi:san.example.com::3260:c:iqn.2026-12.com.example'));
});

test('every refusal, with its message', () => {
  const FORMS = 'write it as iscsi://HOST[:PORT]/IQN or iscsi:HOST::[PORT]:[LUN]:IQN';
  const cases: [string, string][] = [
    ['http://10.0.0.1/iqn.2026-12.com.example', `"http://10.0.0.1/iqn.2026-12.com.example" is not an iSCSI target; ${FORMS}`],
    ['iscsi://10.0.0.1/iqn.2026-12.com.example:my disk', `"iscsi://10.0.0.1/iqn.2026-12.com.example:my disk" contains white space; ${FORMS}`],
    ['iscsi://10.0.0.1', `"iscsi://10.0.0.1" has no target name after the host; ${FORMS}`],
    ['iscsi://10.0.0.1/', `the target name is empty; ${FORMS}`],
    ['iscsi:///iqn.2026-12.com.example', `"iscsi:///iqn.2026-12.com.example" has no host; ${FORMS}`],
    ['iscsi://10.0.0.1:/iqn.2026-12.com.example', `"iscsi://10.0.0.1:/iqn.2026-12.com.example": the ':' after the host has no port`],
    ['iscsi://10.0.0.1:0/iqn.2026-12.com.example', `"iscsi://10.0.0.1:0/iqn.2026-12.com.example": port "0" is not a TCP port 1..65535`],
    ['iscsi://10.0.0.1:65536/iqn.2026-12.com.example', `"iscsi://10.0.0.1:65536/iqn.2026-12.com.example": port "65536" is not a TCP port 1..65535`],
    ['iscsi://10.0.0.1:x1/iqn.2026-12.com.example', `"iscsi://10.0.0.1:x1/iqn.2026-12.com.example": port "x1" is not a TCP port 1..65535`],
    ['iscsi://10.0.0.300/iqn.2026-12.com.example', `"iscsi://10.0.0.300/iqn.2026-12.com.example": "10.0.0.300" is not an IPv4 address`],
    ['iscsi://bad_host/iqn.2026-12.com.example', `"iscsi://bad_host/iqn.2026-12.com.example": "bad_host" is not a host name or IP address (letters, digits, '-' and '.'; an IPv6 address goes in brackets)`],
    ['iscsi://[fe80::1/iqn.2026-12.com.example', `"iscsi://[fe80::1/iqn.2026-12.com.example": the IPv6 address "[fe80::1" has no closing ']'`],
    ['iscsi://[10.0.0.1]/iqn.2026-12.com.example', `"iscsi://[10.0.0.1]/iqn.2026-12.com.example": "10.0.0.1" in brackets is not an IPv6 address`],
    ['iscsi:fe80::1::::iqn.2026-12.com.example', '"iscsi:fe80::1::::iqn.2026-12.com.example": write the IPv6 address in brackets, [fe80::1]'],
    ['iscsi://fe80::1/iqn.2026-12.com.example', '"iscsi://fe80::1/iqn.2026-12.com.example": write the IPv6 address in brackets, [fe80::1]'],
    ['iscsi://h]:1/iqn.2026-12.com.example', '"iscsi://h]:1/iqn.2026-12.com.example": "h]:1" is not HOST[:PORT] (an IPv6 address goes in brackets)'],
    ['iscsi:[fe80::1::::iqn.2026-12.com.example', `"iscsi:[fe80::1::::iqn.2026-12.com.example": the IPv6 address has no closing ']'`],
    ['iscsi:[fe80::1]::::', `the target name is empty; ${FORMS}`],
    ['iscsi:[fe80::1]x::::iqn.2026-12.com.example', `"iscsi:[fe80::1]x::::iqn.2026-12.com.example": expected ':' after "[fe80::1]"; ${FORMS}`],
    ['iscsi:10.0.0.1', `"iscsi:10.0.0.1" has too few fields; ${FORMS}`],
    ['iscsi:10.0.0.1:::iqn.2026-12.com.example', `"iscsi:10.0.0.1:::iqn.2026-12.com.example" has too few fields; ${FORMS}`],
    ['iscsi:10.0.0.1:17:::iqn.2026-12.com.example', `"iscsi:10.0.0.1:17:::iqn.2026-12.com.example": protocol "17" is not TCP; leave it empty or write 6`],
    ['iscsi:10.0.0.1:::100:iqn.2026-12.com.example', `"iscsi:10.0.0.1:::100:iqn.2026-12.com.example": LUN "100" is not a hexadecimal LUN 0..ff`],
    ['iscsi:10.0.0.1:::g:iqn.2026-12.com.example', `"iscsi:10.0.0.1:::g:iqn.2026-12.com.example": LUN "g" is not a hexadecimal LUN 0..ff`],
    ['iscsi:::::iqn.2026-12.com.example', `"iscsi:::::iqn.2026-12.com.example" has no host; ${FORMS}`],
    // The target name (RFC 3720 section 3.2.6.3).
    ['iscsi://h/iqn.2026-12.com.example:a${x}', `the target name "iqn.2026-12.com.example:a\${x}" contains '$'; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`],
    ['iscsi://h/iqn.2026-12.com.example#1', `the target name "iqn.2026-12.com.example#1" contains '#'; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`],
    ['iscsi://h/iqn.2026-12.com.example:a||b', `the target name "iqn.2026-12.com.example:a||b" contains '|'; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`],
    ['iscsi://h/iqn.2026-12.com.Example', `the target name "iqn.2026-12.com.Example" has upper-case letters; iSCSI names are lower case (RFC 3722), write "iqn.2026-12.com.example"`],
    ['iscsi://h/iqn.2026-13.com.example', `the target name "iqn.2026-13.com.example" has month 13; the date is YYYY-MM with a month 01..12`],
    ['iscsi://h/iqn.2026-00.com.example', `the target name "iqn.2026-00.com.example" has month 00; the date is YYYY-MM with a month 01..12`],
    ['iscsi://h/iqn.26-12.com.example', `the target name "iqn.26-12.com.example" is not an IQN: write iqn.YYYY-MM.reversed.domain[:unique] (e.g. iqn.2026-12.com.example:disk1) or eui. and 16 hex digits`],
    ['iscsi://h/naa.52004567ba64678d', `the target name "naa.52004567ba64678d" is not an IQN: write iqn.YYYY-MM.reversed.domain[:unique] (e.g. iqn.2026-12.com.example:disk1) or eui. and 16 hex digits`],
    ['iscsi://h/iqn.2026-12.com..example', `the target name "iqn.2026-12.com..example" has "com..example" where the reversed domain name goes (labels of letters, digits and '-', joined by '.')`],
    ['iscsi://h/iqn.2026-12.-com.example', `the target name "iqn.2026-12.-com.example" has "-com.example" where the reversed domain name goes (labels of letters, digits and '-', joined by '.')`],
    ['iscsi://h/iqn.2026-12.com.example:', `the target name "iqn.2026-12.com.example:" ends with ':'; drop it or add the unique part after it`],
    ['iscsi://h/eui.0123456789abcde', `the target name "eui.0123456789abcde" is not an EUI name: "eui." must be followed by exactly 16 hex digits`],
    ['iscsi://h/eui.0123456789abcdeg', `the target name "eui.0123456789abcdeg" is not an EUI name: "eui." must be followed by exactly 16 hex digits`],
    [`iscsi://h/iqn.2026-12.com.example:${'x'.repeat(200)}`, 'the target name is 224 bytes long; RFC 3720 allows at most 223'],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseIscsiTarget(text), (e: unknown) => {
      assert.ok(e instanceof IpxeTargetError, text);
      assert.equal(e.message, message, text);
      return true;
    });
  }
  const target = parseIscsiTarget('iscsi://h/iqn.2026-12.com.example');
  for (const [initiator, message] of [
    ['', 'the initiator name is empty; give an IQN, e.g. iqn.2026-12.com.example:client1'],
    ['iqn.2026-12.com.example:${net0/mac}', `the initiator name "iqn.2026-12.com.example:\${net0/mac}" contains '$'; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`],
    ['client one', `the initiator name "client one" contains a space; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`],
    ['client1', `the initiator name "client1" is not an IQN: write iqn.YYYY-MM.reversed.domain[:unique] (e.g. iqn.2026-12.com.example:disk1) or eui. and 16 hex digits`],
  ] as const) {
    assert.throws(() => ipxeScript({ target, initiator }), { name: 'Error', message });
  }
});

test('twindisk ipxe: prints the script, exit 0', () => {
  const r = twindisk('ipxe', '--target', 'iscsi://10.0.0.1:3261/iqn.2026-12.com.example:vm1', '--lun', '10');
  assert.equal(r.stderr, '');
  assert.equal(r.status, 0);
  assert.equal(r.stdout, expected('iqn.2026-12.com.example:vm1', 'iscsi:10.0.0.1::3261:a:iqn.2026-12.com.example:vm1'));
  const v6 = twindisk('ipxe', '--target', 'iscsi:[fd00::2]::::eui.0123456789ABCDEF', '--initiator', 'iqn.2026-12.com.example:c1');
  assert.equal(v6.status, 0);
  assert.equal(v6.stdout, expected('eui.0123456789ABCDEF', 'iscsi:[fd00::2]::3260:0:eui.0123456789ABCDEF', 'iqn.2026-12.com.example:c1'));
  const same = twindisk('ipxe', '--target', 'iscsi:10.0.0.1:::a:iqn.2026-12.com.example', '--lun', '10');
  assert.equal(same.status, 0);
  assert.match(same.stdout, /^sanboot iscsi:10\.0\.0\.1::3260:a:iqn\.2026-12\.com\.example \|\| goto sanboot_failed$/m);
});

test('twindisk ipxe: a wrong command line, exit 2 and one message', () => {
  const cases: [string[], string][] = [
    [['ipxe'], 'twindisk: ipxe needs --target iscsi://HOST[:PORT]/IQN (the volume to boot)\n'],
    [['ipxe', '--target', 'iscsi://10.0.0.1/iqn.2026-12.com.example:my disk'],
      'twindisk: ipxe: "iscsi://10.0.0.1/iqn.2026-12.com.example:my disk" contains white space; write it as iscsi://HOST[:PORT]/IQN or iscsi:HOST::[PORT]:[LUN]:IQN\n'],
    [['ipxe', '--target', 'iscsi://10.0.0.1/iqn.2026-12.com.example', '--initiator', 'client1'],
      'twindisk: ipxe: the initiator name "client1" is not an IQN: write iqn.YYYY-MM.reversed.domain[:unique] (e.g. iqn.2026-12.com.example:disk1) or eui. and 16 hex digits\n'],
    [['ipxe', '--target', 'iscsi:10.0.0.1:::2:iqn.2026-12.com.example', '--lun', '3'],
      'twindisk: --lun 3 contradicts LUN 2 in --target; give the LUN once\n'],
    [['ipxe', '--target', 'iscsi://10.0.0.1/iqn.2026-12.com.example', '--lun', '256'],
      "twindisk: option '--lun <n>' argument '256' is invalid. expected a whole number 0..255.\n(see `twindisk ipxe --help`)\n"],
    [['ipxe', '--taget', 'x'], "twindisk: unknown option '--taget'\n(Did you mean --target?)\n(see `twindisk ipxe --help`)\n"],
  ];
  for (const [args, stderr] of cases) {
    const r = twindisk(...args);
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
    assert.equal(r.stderr, stderr, args.join(' '));
  }
});
