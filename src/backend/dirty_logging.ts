/**
 * Dirty-page logging for live migration, on the main thread: maps the log
 * the front-end shares with SET_LOG_BASE, keeps SET_LOG_FD's eventfd, and
 * tells every queue Worker whether to log (only while VHOST_F_LOG_ALL is
 * negotiated and a log is mapped). A replaced log is unmapped only after
 * every Worker has switched to the new one.
 *
 * A log must cover all of guest memory (QEMU sizes it so, from the highest
 * guest-physical address of the memory table): SET_LOG_BASE with a smaller
 * log is refused and the previous log stays. When the memory table later
 * grows past the log while logging runs (QEMU enlarges the log before it
 * adds memory, so only another front-end does this), the change is accepted
 * with a warning; the Workers never write past the log's end, they count
 * and warn about the pages they could not mark.
 *
 * @module
 */

import { closeQuietly, munmap } from "../../ffi/mod.ts";
import { mapFileRange, MappingError } from "../memory/mapped_regions.ts";
import { logCoverage } from "../memory/dirty_log.ts";
import type { LogArea } from "../protocol/mod.ts";
import { log } from "../log.ts";
import { RequestError } from "./request_error.ts";
import type { WorkerPool } from "./worker_pool.ts";
import { NO_FD } from "./worker_protocol.ts";

/** Largest log accepted: one bit per 4 KiB page covers 2^47 bytes of guest memory with 4 GiB. */
const MAX_LOG_SIZE = 2 ** 32;

interface MappedLog {
  base: bigint;
  length: number;
  hostAddr: bigint;
  size: number;
}

/** The dirty log of one connection. */
export class DirtyLogging {
  readonly #pool: WorkerPool;
  #mapped: MappedLog | undefined;
  #logFd = NO_FD;
  #logAll = false;
  #active = false;
  /** First guest-physical address past the memory table (0: no memory yet). */
  #guestEnd = 0;

  readonly #onChange: (active: boolean) => void;

  /** Logging state for the Workers of `pool`; `onChange` runs each time logging turns on or off. */
  constructor(pool: WorkerPool, onChange: (active: boolean) => void = () => {}) {
    this.#pool = pool;
    this.#onChange = onChange;
  }

  /** True while Workers log their writes. */
  get active(): boolean {
    return this.#active;
  }

  /** SET_LOG_BASE: maps the new log (taking ownership of `fd`), then retires the old one. */
  async setLogBase(area: LogArea, fd: number): Promise<void> {
    let mapped: MappedLog;
    try {
      const size = Number(area.mmapSize);
      const offset = Number(area.mmapOffset);
      if (size <= 0 || size > MAX_LOG_SIZE || !Number.isSafeInteger(offset)) {
        throw new RequestError(
          `log of ${area.mmapSize} bytes at offset ${area.mmapOffset} is not usable`,
        );
      }
      if (logCoverage(size) < this.#guestEnd) {
        throw new RequestError(
          `dirty log of ${size} bytes covers guest memory up to 0x${
            logCoverage(size).toString(16)
          }, but the memory table reaches 0x${this.#guestEnd.toString(16)} (${
            Math.ceil(this.#guestEnd / logCoverage(1))
          } bytes needed)`,
        );
      }
      const { base, length } = mapFileRange(fd, offset, size, "dirty log");
      mapped = { base, length, hostAddr: base + BigInt(offset), size };
    } catch (e) {
      throw e instanceof MappingError ? new RequestError(e.message) : e;
    } finally {
      closeQuietly(fd);
    }
    const old = this.#mapped;
    this.#mapped = mapped;
    await this.#update(true);
    if (old) munmap(old.base, old.length);
    log.debug(`dirty log mapped: ${mapped.size} bytes`);
  }

  /**
   * The memory table changed: its first guest-physical address past the end
   * is `guestEnd`. Warns when logging runs and the log no longer covers it.
   */
  memoryChanged(guestEnd: number): void {
    this.#guestEnd = guestEnd;
    if (this.#active) this.#checkCoverage();
  }

  #checkCoverage(): void {
    const m = this.#mapped;
    if (m && logCoverage(m.size) < this.#guestEnd) {
      log.warn(
        `dirty log of ${m.size} bytes covers guest memory up to 0x${
          logCoverage(m.size).toString(16)
        } but the memory table reaches 0x${
          this.#guestEnd.toString(16)
        }: writes beyond are not logged until a larger SET_LOG_BASE`,
      );
    }
  }

  /** SET_LOG_FD: the eventfd written after the log was updated (takes ownership). */
  async setLogFd(fd: number): Promise<void> {
    const old = this.#logFd;
    this.#logFd = fd;
    await this.#update(true);
    if (old !== NO_FD) closeQuietly(old);
  }

  /** VHOST_F_LOG_ALL on or off (from SET_FEATURES). */
  async setLogAll(on: boolean): Promise<void> {
    this.#logAll = on;
    await this.#update(false);
  }

  /** Tells the Workers; logging is on once LOG_ALL and a log are both there, in either order. */
  async #update(force: boolean): Promise<void> {
    const active = this.#logAll && this.#mapped !== undefined;
    if (!force && active === this.#active) return;
    const changed = active !== this.#active;
    this.#active = active;
    const m = this.#mapped;
    await this.#pool.setLog(
      active && m ? { hostAddr: m.hostAddr, size: m.size } : null,
      this.#logFd,
    );
    if (changed) this.#onChange(active);
    if (changed && active) this.#checkCoverage();
  }

  /** Stops logging in the Workers and releases the log and its eventfd. */
  async close(): Promise<void> {
    this.#logAll = false;
    this.#active = false;
    this.#guestEnd = 0;
    await this.#pool.setLog(null, NO_FD);
    if (this.#mapped) munmap(this.#mapped.base, this.#mapped.length);
    this.#mapped = undefined;
    if (this.#logFd !== NO_FD) closeQuietly(this.#logFd);
    this.#logFd = NO_FD;
  }
}
