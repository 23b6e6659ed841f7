/**
 * A connected, negotiated virtio-fs front-end for integration tests, a
 * `vhostd fs` process over a fresh shared directory, and small helpers
 * (expected errnos, directory trees on the host).
 *
 * @module
 */

import { DEFAULT_PROTOCOL_FEATURES } from "../../src/frontend/device_session.ts";
import {
  FsDriver,
  type FsDriverOptions,
  FsReplyError,
  type SharedGuestMemory,
  type VhostUserClient,
} from "../../src/frontend/mod.ts";
import { SessionFixture } from "./session_fixture.ts";
import { bit, ProtocolFeature } from "../../src/protocol/mod.ts";
import { type VhostdProcess, withVhostd } from "./vhostd_process.ts";

/** Protocol features of an fs test front-end: the defaults plus DEVICE_STATE. */
export const FS_PROTOCOL_FEATURES: bigint = DEFAULT_PROTOCOL_FEATURES |
  bit(ProtocolFeature.DEVICE_STATE);

/** Options of {@linkcode FsFixture.open}. */
export interface FsFixtureOptions extends Partial<FsDriverOptions> {
  /** Guest memory size in bytes. Default 16 MiB. */
  memorySize?: number;
  /** Send INIT after set-up. Default true. */
  init?: boolean;
  /** Use this connection instead of opening one (it is owned by the fixture from now on). */
  client?: VhostUserClient;
}

/** A front-end session of a virtio-fs driver. */
export class FsFixture extends SessionFixture<FsDriver> {
  /** Connects to `socketPath` (or uses `options.client`), sets the device up and sends INIT. */
  static open(socketPath: string, options: FsFixtureOptions = {}): FsFixture {
    const setup = (client: VhostUserClient, memory: SharedGuestMemory) => {
      const driver = FsDriver.setup(client, memory, {
        queueSize: 64,
        protocolFeatures: FS_PROTOCOL_FEATURES,
        bufferPoolBytes: 8 * 2 ** 20,
        ...options,
      });
      try {
        if (options.init ?? true) driver.init();
      } catch (e) {
        driver.close();
        throw e;
      }
      return driver;
    };
    const memory = { size: options.memorySize ?? 16 * 2 ** 20 };
    return new FsFixture(...SessionFixture.openParts(socketPath, memory, setup, options.client));
  }
}

/** A temporary directory with `share/` (served) and `outside/` (next to it, never served). */
export interface FsTestDirs {
  /** The parent of both. */
  root: string;
  /** The shared directory. */
  share: string;
  /** A sibling of the shared directory, for escape tests. */
  outside: string;
}

/** Creates a fresh {@linkcode FsTestDirs}. */
export async function makeTestDirs(): Promise<FsTestDirs> {
  const root = await Deno.makeTempDir({ prefix: "vhostd-fs-it-" });
  const share = `${root}/share`;
  const outside = `${root}/outside`;
  await Deno.mkdir(share);
  await Deno.mkdir(outside);
  return { root, share, outside };
}

/**
 * Runs `body` with a `vhostd fs` serving a fresh shared directory (extra
 * arguments in `args`), then stops it and removes the directories. The
 * back-end's log is added to a failure.
 */
export async function withVhostdFs<T>(
  args: string[],
  body: (vhostd: VhostdProcess, dirs: FsTestDirs) => Promise<T> | T,
  dirs?: FsTestDirs,
): Promise<T> {
  const used = dirs ?? await makeTestDirs();
  try {
    return await withVhostd(
      { command: "fs", args: ["--shared-dir", used.share, ...args], dir: used.root },
      (vhostd) => body(vhostd, used),
    );
  } finally {
    if (dirs === undefined) await Deno.remove(used.root, { recursive: true }).catch(() => {});
  }
}

/** The errno of the FsReplyError `fn` throws; fails when it succeeds or throws anything else. */
export function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof FsReplyError) return e.errno;
    throw e;
  }
  throw new Error("the request succeeded, an error reply was expected");
}

/** `length` bytes of a deterministic pattern chosen by `seed`. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
