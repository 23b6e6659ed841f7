/**
 * The hybrid vsock handshake of Firecracker and rust-vmm's
 * vhost-device-vsock: a host program connected to the main Unix socket
 * writes `CONNECT <port>\n` to reach guest port `<port>`, and is answered
 * `OK <host port>\n` once the guest accepted.
 *
 * @module
 */

/** Longest CONNECT line accepted, newline included ("CONNECT 4294967295\n" is 19 bytes). */
export const MAX_CONNECT_LINE = 32;

/** What the bytes a host program sent first say. */
export type ConnectLine =
  /** A whole line naming `port`; `length` bytes (newline included) belong to it. */
  | { kind: "connect"; port: number; length: number }
  /** No newline yet: wait for more. */
  | { kind: "incomplete" }
  /** Not a CONNECT line: close the connection. */
  | { kind: "invalid"; reason: string };

const decoder = new TextDecoder();

/** Parses the start of what a host program sent on the main socket. */
export function parseConnectLine(bytes: Uint8Array): ConnectLine {
  const newline = bytes.indexOf(0x0a);
  if (newline < 0) {
    return bytes.length >= MAX_CONNECT_LINE
      ? { kind: "invalid", reason: `no newline in the first ${MAX_CONNECT_LINE} bytes` }
      : { kind: "incomplete" };
  }
  if (newline + 1 > MAX_CONNECT_LINE) {
    return { kind: "invalid", reason: `line longer than ${MAX_CONNECT_LINE} bytes` };
  }
  const line = decoder.decode(bytes.subarray(0, newline)).replace(/\r$/, "");
  const match = /^CONNECT (\d{1,10})$/.exec(line);
  if (!match || Number(match[1]) > 0xffff_ffff) {
    return { kind: "invalid", reason: `expected "CONNECT <port>", got ${JSON.stringify(line)}` };
  }
  return { kind: "connect", port: Number(match[1]), length: newline + 1 };
}

/** The answer to an accepted CONNECT. */
export function okLine(hostPort: number): Uint8Array {
  return new TextEncoder().encode(`OK ${hostPort}\n`);
}
