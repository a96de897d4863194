// Node addresses and iSCSI portals: "host:port" parsing, and which sockets an endpoint binds.
import { isIPv4, isIPv6 } from 'node:net';
import { quote } from './messages.js';

export interface HostPort { host: string; port: number }

function isHostname(h: string): boolean {
  return h.length <= 253 && h.split('.').every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

/** Parses "host:port" ("[v6]:port" for IPv6); returns a message saying what is wrong instead when it is not. */
export function parseHostPort(s: string, suggestPort: number, defaultPort: number | null): HostPort | string {
  if (s === '') return `is empty; write it as host:port, e.g. 127.0.0.1:${suggestPort}`;
  if (/\s/.test(s)) return `${quote(s)} contains spaces; write it as host:port, e.g. 127.0.0.1:${suggestPort}`;
  let host: string;
  let shown: string;
  let portText: string | null;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return `${quote(s)} has no closing "]"; write IPv6 addresses as [address]:port, e.g. [::1]:${suggestPort}`;
    host = s.slice(1, close);
    shown = `[${host}]`;
    const rest = s.slice(close + 1);
    if (!isIPv6(host)) return `${quote(host)} in brackets is not an IPv6 address`;
    if (rest === '') portText = null;
    else if (rest.startsWith(':')) portText = rest.slice(1);
    else return `${quote(s)}: expected ":port" after "]"`;
  } else {
    const colon = s.lastIndexOf(':');
    if (s.indexOf(':') !== colon) {
      const head = s.slice(0, colon);
      const tail = s.slice(colon + 1);
      const fix = isIPv6(head) && /^[0-9]{1,5}$/.test(tail) ? `[${head}]:${tail}` : isIPv6(s) ? `[${s}]:${suggestPort}` : `[::1]:${suggestPort}`;
      return `${quote(s)}: write IPv6 addresses in brackets, e.g. ${fix}`;
    }
    host = colon < 0 ? s : s.slice(0, colon);
    shown = host;
    portText = colon < 0 ? null : s.slice(colon + 1);
    if (host === '') return `${quote(s)} has no host; write it as host:port, e.g. 127.0.0.1:${portText || suggestPort}`;
    if (/^[0-9.]+$/.test(host)) {
      if (!isIPv4(host)) return `${quote(host)} is not a valid IPv4 address`;
    } else if (!isHostname(host)) {
      return `${quote(host)} is not an IPv4 address, [IPv6] address or hostname`;
    }
  }
  if (portText === null) {
    if (defaultPort !== null) return { host, port: defaultPort };
    return `${quote(s)} has no port; write it as host:port, e.g. ${shown}:${suggestPort}`;
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return `port ${quote(portText)} is not a number 1..65535`;
  const port = Number(portText);
  if (port < 1 || port > 65535) return `port ${port} is out of range 1..65535`;
  return { host, port };
}

export function isUnspecified(host: string): boolean {
  return host === '0.0.0.0' || (isIPv6(host) && /^[0:]+$/.test(host));
}

export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || (isIPv4(h) && h.startsWith('127.')) || h.startsWith('::ffff:127.');
}

/** The canonical form of an IP literal (IPv4-mapped IPv6 as IPv4, IPv6 compressed and lower case), or null for a host name. */
function canonicalIp(host: string): string | null {
  if (isIPv4(host)) return host;
  if (!isIPv6(host)) return null;
  let h: string;
  try {
    h = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone index (fe80::1%eth0): compared as written
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h);
  if (mapped) {
    const a = parseInt(mapped[1]!, 16);
    const b = parseInt(mapped[2]!, 16);
    return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  return h;
}

/**
 * The sockets an endpoint can bind, as "ip|port" keys: two endpoints sharing a key collide (two nodes
 * on one machine cannot both listen there). Host names are NOT resolved (no DNS, no /etc/hosts):
 * loading a resource file is synchronous and pure, and must give the same verdict on every machine
 * whatever the resolver's state (a peer's name may resolve only on its own network, and a blocking
 * lookup would stall every command while DNS is down). What is certain without a resolver is used:
 * IP literals compare in canonical form (::0:1 is ::1, ::ffff:127.0.0.1 is 127.0.0.1); `localhost`
 * and `*.localhost` (RFC 6761) are loopback, and Node binds whichever of 127.0.0.1 and ::1 the OS
 * resolver returns first, so they collide with both; other names compare by name, ignoring case. 0.0.0.0 and :: are refused as node addresses (peers cannot dial them).
 */
export function endpointKeys(hp: HostPort): string[] {
  const ip = canonicalIp(hp.host);
  if (ip !== null) return [`${ip}|${hp.port}`];
  const name = hp.host.toLowerCase();
  if (name === 'localhost' || name.endsWith('.localhost')) return [`127.0.0.1|${hp.port}`, `::1|${hp.port}`];
  return [`${name}|${hp.port}`];
}
