/**
 * An image whose reads and writes wait until the test releases them:
 * scripts/latency_fs in hold mode. A test submits requests, waits until the
 * file system holds exactly that many (so they are in flight inside vhostd),
 * acts, then releases them. Nothing depends on timing.
 *
 * @module
 */

import {
  buildLatencyFs,
  type LatencyFs,
  mountLatencyFs,
  unmountLatencyFs,
} from "../../scripts/latency_fs/mount.ts";

const WAIT_MS = 30_000;

/** A mounted hold-mode image. */
export class HeldBacking {
  /** Path of the image file to give vhostd. */
  readonly image: string;
  readonly #fs: LatencyFs;
  readonly #dir: string;
  #held = 0;
  #waiters: (() => void)[] = [];

  private constructor(fs: LatencyFs, dir: string) {
    this.#fs = fs;
    this.#dir = dir;
    this.image = fs.image;
  }

  /** Builds latency_fs if needed and serves `contents` as the image, holding every request. */
  static async start(contents: Uint8Array): Promise<HeldBacking> {
    const binary = await buildLatencyFs();
    const dir = await Deno.makeTempDir({ prefix: "vhostd-held-" });
    const store = `${dir}/store`;
    const mountpoint = `${dir}/mnt`;
    await Deno.writeFile(store, contents);
    await Deno.mkdir(mountpoint);
    let backing: HeldBacking | undefined;
    try {
      const fs = await mountLatencyFs(binary, store, mountpoint, 0, {
        hold: true,
        onLine: (line) => backing && backing.#line(line),
      });
      backing = new HeldBacking(fs, dir);
      return backing;
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  #line(line: string): void {
    const match = /^held (\d+)$/.exec(line);
    if (!match) return;
    this.#held = Number(match[1]);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Requests held right now. */
  get held(): number {
    return this.#held;
  }

  /** Resolves once at least `count` requests are held (throws after a generous safety limit). */
  async waitHeld(count: number): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (this.#held < count) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`only ${this.#held} of ${count} requests reached the backing`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Answers every request held so far; later ones are held again. */
  release(): void {
    this.#held = 0;
    this.#fs.child.kill("SIGUSR1");
  }

  /** Answers every request held so far and holds none from now on. */
  stopHolding(): void {
    this.#held = 0;
    this.#fs.child.kill("SIGUSR2");
  }

  /** Unmounts and removes the files. */
  async [Symbol.asyncDispose](): Promise<void> {
    await unmountLatencyFs(this.#fs);
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}
