/**
 * Scrapes a vhostd `--metrics` endpoint (a `unix:` socket or a loopback
 * address) for tests, and reads the answer strictly.
 *
 * @module
 */

import { type ParsedFamily, parsePrometheusText } from "./prometheus_text.ts";

/** GET /metrics at `address` (`unix:/path` or `host:port`); throws unless 200 in the 0.0.4 format. */
export async function scrapeText(address: string): Promise<string> {
  const unix = address.startsWith("unix:");
  const client = unix
    ? Deno.createHttpClient({ proxy: { transport: "unix", path: address.slice(5) } })
    : undefined;
  try {
    const response = await fetch(
      unix ? "http://localhost/metrics" : `http://${address}/metrics`,
      { client },
    );
    const text = await response.text();
    if (response.status !== 200) throw new Error(`metrics answered ${response.status}: ${text}`);
    const type = response.headers.get("content-type") ?? "";
    if (!type.startsWith("text/plain; version=0.0.4")) throw new Error(`content-type ${type}`);
    return text;
  } finally {
    client?.close();
  }
}

/** Scrapes `address` and parses the families (throws for any malformed line). */
export async function scrape(address: string): Promise<Map<string, ParsedFamily>> {
  return parsePrometheusText(await scrapeText(address));
}
