/**
 * The `--metrics` HTTP endpoint: `GET /metrics` answers one scrape in the
 * text exposition format. It runs on the main thread's event loop (Deno.serve),
 * which the daemon never blocks (its waits are in a poller Worker); a scrape
 * only reads counters, so the data path in the queue Workers never waits
 * for it.
 *
 * @module
 */

import { UsageError } from "../cli/usage_error.ts";
import { log } from "../log.ts";
import { EXPOSITION_CONTENT_TYPE } from "./exposition.ts";
import type { MetricsAddress } from "./metrics_address.ts";

/** A running endpoint. */
export interface MetricsServer {
  /** Where it listens, as an operator would write it (`127.0.0.1:9100`, `unix:/x.sock`). */
  readonly address: string;
  /** Stops listening (and removes the Unix socket). */
  close(): Promise<void>;
}

/** Answers one HTTP request with `scrape()`'s text for GET /metrics. */
export function handleMetricsRequest(request: Request, scrape: () => string): Response {
  const path = new URL(request.url).pathname;
  if (path !== "/metrics") {
    return new Response("not found: metrics are at /metrics\n", { status: 404 });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET and HEAD\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  try {
    return new Response(request.method === "HEAD" ? null : scrape(), {
      headers: { "content-type": EXPOSITION_CONTENT_TYPE },
    });
  } catch (e) {
    log.error(`metrics scrape failed: ${e instanceof Error ? e.message : e}`);
    return new Response("scrape failed\n", { status: 500 });
  }
}

/** Removes a Unix socket nobody answers on (a crashed vhostd's); UsageError when in use. */
async function clearStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return;
  }
  if (!info.isSocket) throw new UsageError(`--metrics: ${path} exists and is not a socket`);
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch {
    Deno.removeSync(path);
    return;
  }
  throw new UsageError(`--metrics: ${path} is in use by another running process`);
}

function reason(e: unknown): string {
  if (e instanceof Deno.errors.AddrInUse) return "address in use";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotFound) return "no such directory";
  return e instanceof Error ? e.message.split("\n")[0] : String(e);
}

/** Starts serving `scrape()` at `address`; UsageError (one line) when it cannot listen. */
export async function startMetricsServer(
  address: MetricsAddress,
  scrape: () => string,
): Promise<MetricsServer> {
  const handler = (request: Request) => handleMetricsRequest(request, scrape);
  const onError = (e: unknown) => {
    log.error(`metrics request failed: ${reason(e)}`);
    return new Response("internal error\n", { status: 500 });
  };
  let server: Deno.HttpServer;
  let where: string;
  if (address.transport === "unix") {
    await clearStaleSocket(address.path);
    where = `unix:${address.path}`;
    try {
      server = Deno.serve({ path: address.path, onListen: () => {}, onError }, handler);
    } catch (e) {
      throw new UsageError(`--metrics: cannot listen on ${where}: ${reason(e)}`);
    }
  } else {
    const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
    try {
      server = Deno.serve(
        { hostname: address.hostname, port: address.port, onListen: () => {}, onError },
        handler,
      );
    } catch (e) {
      throw new UsageError(`--metrics: cannot listen on ${host}:${address.port}: ${reason(e)}`);
    }
    const port = (server.addr as Deno.NetAddr).port;
    where = `${host}:${port}`;
  }
  log.info(
    `metrics on ${
      address.transport === "unix" ? `${where} (GET /metrics)` : `http://${where}/metrics`
    }`,
  );
  return {
    address: where,
    async close() {
      await server.shutdown();
      if (address.transport === "unix") {
        try {
          Deno.removeSync(address.path);
        } catch {
          // Removed by someone else already.
        }
      }
    },
  };
}
