/** Host names as raftmq's configurations accept them (the broker's peers, a listen host). */
import * as net from 'node:net';

const HOST_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** True for a DNS host name, an IPv4 address or a bare IPv6 address. */
export function isHost(text: string): boolean {
  if (net.isIP(text) !== 0) return true;
  if (text.length === 0 || text.length > 253) return false;
  return text.split('.').every((label) => HOST_LABEL.test(label)) && !/^[0-9.]+$/.test(text);
}
