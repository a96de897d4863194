// iPXE boot scripts for diskless clients: parse an iSCSI target, write its SAN URI and the script that sanboots it.
import { isIPv4, isIPv6 } from 'node:net';

/** The iSCSI well-known port (RFC 3720 section 13.1); an empty <port> in a SAN URI means this. */
export const ISCSI_DEFAULT_PORT = 3260;

/** The highest LUN written: single-level peripheral device addressing (SAM-2 4.9.6) holds 0..255. */
export const MAX_LUN = 255;

/** RFC 3720 section 3.2.6.1: "iSCSI names ... cannot be larger than 223 bytes". */
export const MAX_ISCSI_NAME = 223;

/** The initiator name when none is given: one per client, from the MAC address iPXE substitutes at boot. */
export const DEFAULT_INITIATOR = 'iqn.2026-12.io.twindisk:initiator-${net0/mac:hexhyp}';

/** Where an iSCSI target is: host (an IPv6 address without its brackets), TCP port, LUN and target name. */
export interface IscsiTarget {
  host: string;
  port: number;
  lun: number;
  iqn: string;
}

/** A target, initiator or URI that cannot be used; the message says what is wrong and how to write it. */
export class IpxeTargetError extends Error {}

const FORMS = 'write it as iscsi://HOST[:PORT]/IQN or iscsi:HOST::[PORT]:[LUN]:IQN';

/** A DNS label: letters, digits and inner hyphens (RFC 1123 section 2.1). */
const LABEL = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';

/**
 * Checks an iSCSI name (RFC 3720 section 3.2.6.3): `iqn.YYYY-MM.reversed.domain[:unique]` or `eui.`
 * and 16 hex digits. Returns what is wrong with it, or null when it is valid. Only the characters
 * RFC 3722's stringprep leaves in an ASCII name are accepted (lower-case letters, digits, '-', '.', ':'),
 * so nothing in it can be taken by iPXE's script parser as a separator, a `${setting}` or a comment.
 */
export function iscsiNameProblem(name: string, what = 'target name'): string | null {
  if (name === '') return `the ${what} is empty; ${what === 'target name' ? FORMS : 'give an IQN, e.g. iqn.2026-12.com.example:client1'}`;
  if (name.length > MAX_ISCSI_NAME) return `the ${what} is ${name.length} bytes long; RFC 3720 allows at most ${MAX_ISCSI_NAME}`;
  const bad = /[^A-Za-z0-9.:-]/.exec(name);
  if (bad) {
    const c = bad[0] === ' ' ? 'a space' : /\s/.test(bad[0]) ? 'white space' : `'${bad[0]}'`;
    return `the ${what} "${name}" contains ${c}; an iSCSI name holds only a-z, 0-9, '-', '.' and ':'`;
  }
  if (/^eui\./i.test(name)) {
    // RFC 3720 3.2.6.3.2: "eui." followed by the EUI-64 identifier, 16 ASCII-encoded hexadecimal digits.
    if (!/^eui\.[0-9A-Fa-f]{16}$/.test(name)) return `the ${what} "${name}" is not an EUI name: "eui." must be followed by exactly 16 hex digits`;
    return null;
  }
  if (/[A-Z]/.test(name)) {
    const lower = name.toLowerCase();
    return iscsiNameProblem(lower, what)
      ?? `the ${what} "${name}" has upper-case letters; iSCSI names are lower case (RFC 3722), write "${lower}"`;
  }
  // RFC 3720 3.2.6.3.1: "iqn." date (yyyy-mm) "." reversed domain name [":" unique string].
  const m = /^iqn\.([0-9]{4})-([0-9]{2})\.([^:]*)(?::(.*))?$/.exec(name);
  if (!m) return `the ${what} "${name}" is not an IQN: write iqn.YYYY-MM.reversed.domain[:unique] (e.g. iqn.2026-12.com.example:disk1) or eui. and 16 hex digits`;
  const month = Number(m[2]);
  if (month < 1 || month > 12) return `the ${what} "${name}" has month ${m[2]}; the date is YYYY-MM with a month 01..12`;
  if (!new RegExp(`^${LABEL}(?:\\.${LABEL})*$`).test(m[3]!)) {
    return `the ${what} "${name}" has "${m[3]}" where the reversed domain name goes (labels of letters, digits and '-', joined by '.')`;
  }
  if (m[4] !== undefined && m[4] === '') return `the ${what} "${name}" ends with ':'; drop it or add the unique part after it`;
  return null;
}

function checkName(name: string, what: string): string {
  const problem = iscsiNameProblem(name, what);
  if (problem) throw new IpxeTargetError(problem);
  return name;
}

function parseHost(text: string, whole: string): string {
  if (text.startsWith('[')) {
    // RFC 4173 section 5: "<servername> ... IPv6 addresses ... in brackets".
    if (!text.endsWith(']')) throw new IpxeTargetError(`"${whole}": the IPv6 address "${text}" has no closing ']'`);
    const addr = text.slice(1, -1);
    if (!isIPv6(addr)) throw new IpxeTargetError(`"${whole}": "${addr}" in brackets is not an IPv6 address`);
    return addr.toLowerCase();
  }
  if (text === '') throw new IpxeTargetError(`"${whole}" has no host; ${FORMS}`);
  if (isIPv6(text)) throw new IpxeTargetError(`"${whole}": write the IPv6 address in brackets, [${text}]`);
  if (isIPv4(text)) return text;
  if (/^[0-9.]+$/.test(text)) throw new IpxeTargetError(`"${whole}": "${text}" is not an IPv4 address`);
  const host = text.toLowerCase();
  if (host.length > 253 || !new RegExp(`^${LABEL}(?:\\.${LABEL})*$`).test(host)) {
    throw new IpxeTargetError(`"${whole}": "${text}" is not a host name or IP address (letters, digits, '-' and '.'; an IPv6 address goes in brackets)`);
  }
  return host;
}

function parsePort(text: string, whole: string): number {
  if (text === '') return ISCSI_DEFAULT_PORT;
  const n = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new IpxeTargetError(`"${whole}": port "${text}" is not a TCP port 1..65535`);
  return n;
}

function parseHexLun(text: string, whole: string): number {
  if (text === '') return 0;
  // RFC 4173 section 5: "<LUN> ... in hexadecimal"; iPXE reads it the same way.
  const n = /^[0-9A-Fa-f]{1,4}$/.test(text) ? parseInt(text, 16) : NaN;
  if (!(n >= 0 && n <= MAX_LUN)) throw new IpxeTargetError(`"${whole}": LUN "${text}" is not a hexadecimal LUN 0..${MAX_LUN.toString(16)}`);
  return n;
}

/**
 * Parses an iSCSI target, as a URL `iscsi://HOST[:PORT]/IQN` or as RFC 4173's root path
 * `iscsi:<servername>:<protocol>:<port>:<LUN>:<targetname>` (protocol empty or 6, LUN in hex).
 * An IPv6 host is written in brackets in both. Throws IpxeTargetError saying what is wrong.
 */
export function parseIscsiTarget(text: string): IscsiTarget {
  if (/\s/.test(text)) throw new IpxeTargetError(`"${text}" contains white space; ${FORMS}`);
  if (!/^iscsi:/i.test(text)) throw new IpxeTargetError(`"${text}" is not an iSCSI target; ${FORMS}`);
  if (/^iscsi:\/\//i.test(text)) {
    const rest = text.slice('iscsi://'.length);
    const slash = rest.indexOf('/');
    if (slash < 0) throw new IpxeTargetError(`"${text}" has no target name after the host; ${FORMS}`);
    const authority = rest.slice(0, slash);
    if (isIPv6(authority)) throw new IpxeTargetError(`"${text}": write the IPv6 address in brackets, [${authority}]`);
    const m = /^(\[[^\]]*\]?|[^:[\]]*)(?::(.*))?$/.exec(authority);
    if (!m) throw new IpxeTargetError(`"${text}": "${authority}" is not HOST[:PORT] (an IPv6 address goes in brackets)`);
    const host = parseHost(m[1]!, text);
    if (m[2] === '') throw new IpxeTargetError(`"${text}": the ':' after the host has no port`);
    const port = parsePort(m[2] ?? '', text);
    return { host, port, lun: 0, iqn: checkName(rest.slice(slash + 1), 'target name') };
  }
  try {
    return parseRootPath(text);
  } catch (e) {
    // An unbracketed IPv6 address splits into fields of its own; say so rather than what went wrong after.
    const rest = text.slice('iscsi:'.length);
    const v6 = !rest.startsWith('[') && rest.split(':').map((_, i, all) => all.slice(0, i + 1).join(':')).find((p) => p.split(':').length > 2 && /[0-9a-f]/i.test(p) && isIPv6(p));
    if (e instanceof IpxeTargetError && v6) throw new IpxeTargetError(`"${text}": write the IPv6 address in brackets, [${v6}]`);
    throw e;
  }
}

function parseRootPath(text: string): IscsiTarget {
  // RFC 4173 section 5: the first four fields are split at ':'; the target name is the rest (it may hold ':').
  let rest = text.slice('iscsi:'.length);
  let hostText: string;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw new IpxeTargetError(`"${text}": the IPv6 address has no closing ']'`);
    hostText = rest.slice(0, close + 1);
    rest = rest.slice(close + 1);
    if (!rest.startsWith(':')) throw new IpxeTargetError(`"${text}": expected ':' after "${hostText}"; ${FORMS}`);
    rest = rest.slice(1);
  } else {
    const colon = rest.indexOf(':');
    if (colon < 0) throw new IpxeTargetError(`"${text}" has too few fields; ${FORMS}`);
    hostText = rest.slice(0, colon);
    rest = rest.slice(colon + 1);
  }
  const fields = rest.split(':');
  if (fields.length < 4) throw new IpxeTargetError(`"${text}" has too few fields; ${FORMS}`);
  const [protocol, portText, lunText] = fields as [string, string, string];
  const iqn = fields.slice(3).join(':');
  const host = parseHost(hostText, text);
  // RFC 4173: "<protocol> ... If this field is left empty, the default of 6 (TCP) is used."
  if (protocol !== '' && protocol !== '6') throw new IpxeTargetError(`"${text}": protocol "${protocol}" is not TCP; leave it empty or write 6`);
  return { host, port: parsePort(portText, text), lun: parseHexLun(lunText, text), iqn: checkName(iqn, 'target name') };
}

/** The target as iPXE's `sanboot` takes it (RFC 4173): `iscsi:HOST::PORT:LUN:IQN`, port and hex LUN always written. */
export function sanbootUri(target: IscsiTarget): string {
  const host = isIPv6(target.host) ? `[${target.host}]` : target.host;
  return `iscsi:${host}::${target.port}:${target.lun.toString(16)}:${target.iqn}`;
}

/**
 * The iPXE script that boots from the target: DHCP (tried twice), the initiator name (given, or
 * DEFAULT_INITIATOR), then `sanboot`; each failure echoes what failed and drops to iPXE's shell.
 * A failing command ends an iPXE script unless `||` follows it, hence the `|| goto` on each; `exit 1`
 * keeps leaving the first shell from running into the second failure's lines.
 */
export function ipxeScript(o: {
  target: IscsiTarget; initiator?: string;
  /** CHAP credentials iPXE answers the target's challenge with (iPXE's `username`/`password` settings). */
  chap?: { user: string; secret: string };
  /** Mutual CHAP: what the target must answer with (iPXE's `reverse-username`/`reverse-password`). */
  mutualChap?: { user: string; secret: string };
  /** Run `dhcp` first (default); a script chained over HTTP runs on an already configured network. */
  dhcp?: boolean;
}): string {
  const initiator = o.initiator === undefined ? DEFAULT_INITIATOR : checkName(o.initiator, 'initiator name');
  const uri = sanbootUri(o.target);
  const setting = (name: string, value: string): string => {
    // iPXE expands ${...} in command lines; a secret holding one would be mangled, so such values are refused.
    if (/[\s${}]/.test(value)) throw new IpxeTargetError(`${name} may not contain spaces, "$", "{" or "}" in an iPXE script`);
    return `set ${name} ${value}`;
  };
  const creds = [
    ...(o.chap ? [setting('username', o.chap.user), setting('password', o.chap.secret)] : []),
    ...(o.mutualChap ? [setting('reverse-username', o.mutualChap.user), setting('reverse-password', o.mutualChap.secret)] : []),
  ];
  return [
    '#!ipxe',
    `# Boot from twindisk's iSCSI volume ${o.target.iqn} (printed by \`twindisk ipxe\`).`,
    ...(o.dhcp === false ? ['isset ${net0/ip} || dhcp || goto dhcp_failed'] : ['dhcp || dhcp || goto dhcp_failed']),
    `set initiator-iqn ${initiator}`,
    ...creds,
    `sanboot ${uri} || goto sanboot_failed`,
    ':sanboot_failed',
    `echo twindisk: sanboot ${uri} failed: is the target running and reachable from \${net0/ip}?`,
    'shell',
    'exit 1',
    ':dhcp_failed',
    'echo twindisk: dhcp failed twice: no network configuration (is a DHCP server answering on this network?)',
    'shell',
    '',
  ].join('\n');
}
