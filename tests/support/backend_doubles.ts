/**
 * Test support for the back-end tests: memfd guest memory mapped the way a
 * front-end maps it, a virtio-blk back-end served by a real WorkerPool, and a
 * driver for one ring with its kick and call eventfds.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  closeQuietly,
  dupFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  MAP_SHARED,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  pollFd,
  POLLIN,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/mod.ts";
import { openBacking } from "../../src/devices/blk/backing.ts";
import { BlkDevice } from "../../src/devices/blk/blk_device.ts";
import { BlkRequestType, REQUEST_HEADER_SIZE } from "../../src/devices/blk/blk_spec.ts";
import { GuestMemory, type GuestRegion } from "../../src/memory/guest_memory.ts";
import type { MemoryRegionDesc, VringAddress } from "../../src/protocol/mod.ts";
import { DriverQueue, type Segment } from "../../src/virtqueue/mod.ts";
import { VhostUserBackend } from "../../src/backend/backend.ts";
import { WorkerPool } from "../../src/backend/worker_pool.ts";

let memfdSerial = 0;

/**
 * What tells an open file apart in /proc/self: its link target and the
 * inode and eventfd lines of its fdinfo (an eventfd's counter and id).
 * `undefined` when `fd` is not open.
 */
function fileIdentity(fd: number): string | undefined {
  try {
    const target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
    const info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).split("\n")
      .filter((line) => /^(ino|eventfd-count|eventfd-id):/.test(line))
      .map((line) => line.replace(/\s+/g, " "));
    return [target, ...info].join("; ");
  } catch {
    return undefined;
  }
}

/**
 * The other fds of this process that refer to the same open file as
 * `original`. Tests keep `original`, hand over a dup, and expect the dup to
 * be gone: unlike fd numbers or counts, this is not fooled by other threads
 * (Workers, parallel test modules) opening and closing fds meanwhile.
 *
 * Eventfds all share one inode; kernels whose fdinfo has no eventfd-id tell
 * them apart here by a random amount added to the counter for the scan and
 * taken away after it.
 */
export function copiesOf(original: number): number[] {
  let identity = fileIdentity(original);
  assert.ok(identity !== undefined, `fd ${original} is not open`);
  let marker = 0;
  if (identity.includes("eventfd-count") && !identity.includes("eventfd-id")) {
    marker = 0x10_0000 + Math.floor(Math.random() * 0x7fe0_0000);
    eventfdWrite(original, marker);
    identity = fileIdentity(original)!;
  }
  try {
    const copies: number[] = [];
    for (const entry of [...Deno.readDirSync("/proc/self/fd")]) {
      const fd = Number(entry.name);
      if (fd !== original && fileIdentity(fd) === identity) copies.push(fd);
    }
    return copies;
  } finally {
    if (marker !== 0) {
      const total = eventfdRead(original);
      if (total > marker) eventfdWrite(original, total - marker);
    }
  }
}

/**
 * One piece of guest memory as a front-end owns it: a memfd, mapped in this
 * process as the "guest" view. The back-end maps its own copy from a dup of
 * the fd, so every mapping of the memfd shows in /proc/self/maps.
 */
export class SharedGuestMemory {
  /** The memfd. */
  readonly fd: number;
  /** Unique memfd name, to find its mappings. */
  readonly name: string;
  /** Guest-physical address of the first byte. */
  readonly guestAddr: number;
  /** Size in bytes. */
  readonly size: number;
  /** The front-end's (pretend) virtual address of the first byte. */
  readonly userAddr: number;
  /** The guest's view of this region. */
  readonly region: GuestRegion;
  readonly #base: bigint;

  /** A zeroed memfd of `size` bytes at `guestAddr`, mapped here. */
  constructor(size: number, guestAddr = 0, userAddr = 0x7f10_0000_0000 + guestAddr) {
    this.name = `vhostd-test-${Deno.pid}-${++memfdSerial}`;
    this.fd = memfdCreate(this.name);
    ftruncate(this.fd, size);
    this.#base = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
    this.guestAddr = guestAddr;
    this.size = size;
    this.userAddr = userAddr;
    const bytes = new Uint8Array(mapArrayBuffer(this.#base, size));
    this.region = {
      guestAddr,
      size,
      userAddr,
      hostAddr: Number(this.#base),
      bytes,
      view: new DataView(bytes.buffer),
    };
  }

  /** The region as SET_MEM_TABLE/ADD_MEM_REG describe it. */
  desc(mmapOffset = 0): MemoryRegionDesc {
    return {
      guestAddr: BigInt(this.guestAddr),
      size: BigInt(this.size),
      userAddr: BigInt(this.userAddr),
      mmapOffset: BigInt(mmapOffset),
    };
  }

  /** A fresh fd of the memfd, for the back-end to take. */
  dup(): number {
    return dupFd(this.fd);
  }

  /** How many mappings of this memfd the process has (this one included). */
  mappingCount(): number {
    const marker = `/memfd:${this.name} `;
    return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((line) =>
      line.includes(marker)
    ).length;
  }

  /** Other fds of the memfd than {@linkcode fd} (see {@linkcode copiesOf}). */
  copies(): number[] {
    return copiesOf(this.fd);
  }

  /** Unmaps the guest view and closes the memfd. */
  close(): void {
    munmap(this.#base, this.size);
    closeQuietly(this.fd);
  }
}

/** The guest's view of several regions. */
export function guestView(...regions: SharedGuestMemory[]): GuestMemory {
  return new GuestMemory(regions.map((r) => r.region));
}

/** Options of {@linkcode BlkBackend.create}. */
export interface BlkBackendOptions {
  /** Number of queues (default 1). */
  numQueues?: number;
  /** Largest queue size (default 256). */
  queueSize?: number;
  /** Disk size in bytes (default 1 MiB). */
  diskSize?: number;
}

/** A virtio-blk device on a RAM disk, its WorkerPool and a VhostUserBackend. */
export class BlkBackend {
  /** The device. */
  readonly device: BlkDevice;
  /** The pool (one Worker). */
  readonly pool: WorkerPool;
  /** The state machine under test. */
  readonly backend: VhostUserBackend;

  private constructor(device: BlkDevice, pool: WorkerPool) {
    this.device = device;
    this.pool = pool;
    this.backend = new VhostUserBackend(device, pool);
  }

  /** Builds the device and starts one queue Worker. */
  static async create(opts: BlkBackendOptions = {}): Promise<BlkBackend> {
    const backing = openBacking({ kind: "ram", size: opts.diskSize ?? 1 << 20, readOnly: false });
    const device = new BlkDevice(backing, {
      numQueues: opts.numQueues ?? 1,
      queueSize: opts.queueSize ?? 256,
      serial: "backend-test",
    });
    let pool: WorkerPool;
    try {
      pool = await WorkerPool.create(1, device.workerSetup());
    } catch (e) {
      device.close();
      throw e;
    }
    return new BlkBackend(device, pool);
  }

  /** Disconnects the back-end, stops the Worker and closes the device. */
  async close(): Promise<void> {
    try {
      await this.backend.disconnect();
    } finally {
      await this.pool.close();
      this.device.close();
    }
  }
}

/** Runs `body` with a fresh BlkBackend, closing it whatever happens. */
export async function withBlkBackend(
  body: (b: BlkBackend) => Promise<void> | void,
  opts: BlkBackendOptions = {},
): Promise<void> {
  const b = await BlkBackend.create(opts);
  try {
    await body(b);
  } finally {
    await b.close();
  }
}

/** The driver side of one ring: a DriverQueue plus kick and call eventfds kept by the test. */
export class RingDriver {
  /** The queue. */
  readonly queue: DriverQueue;
  /** Ring size. */
  readonly size: number;
  /** Guest addresses of the three rings. */
  readonly layout: { descGpa: number; availGpa: number; usedGpa: number };
  /** Kick eventfd (the test writes it). */
  readonly kickFd: number = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  /** Call eventfd (the test polls it). */
  readonly callFd: number = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  readonly #memory: GuestMemory;

  /** Lays the rings out at `baseGpa` (zeroing them) in `memory`. */
  constructor(memory: GuestMemory, baseGpa: number, size: number) {
    this.#memory = memory;
    this.size = size;
    this.layout = DriverQueue.layout(baseGpa, size);
    this.queue = new DriverQueue(memory, { size, ...this.layout });
  }

  /** SET_VRING_ADDR payload for ring `index` (front-end virtual addresses). */
  address(index: number): VringAddress {
    const user = (gpa: number) => {
      const hit = this.#memory.resolve(gpa, 0);
      assert.ok(hit, `ring address 0x${gpa.toString(16)} not in guest memory`);
      return BigInt(hit.region.userAddr + hit.offset);
    };
    return {
      index,
      flags: 0,
      descUserAddr: user(this.layout.descGpa),
      availUserAddr: user(this.layout.availGpa),
      usedUserAddr: user(this.layout.usedGpa),
      logGuestAddr: 0n,
    };
  }

  /** Writes the kick eventfd. */
  kick(): void {
    eventfdWrite(this.kickFd, 1);
  }

  /** Waits up to `timeoutMs` for a call; consumes it. */
  waitCall(timeoutMs = 3000): boolean {
    if ((pollFd(this.callFd, POLLIN, timeoutMs) & POLLIN) === 0) return false;
    eventfdRead(this.callFd);
    return true;
  }

  /** Closes the test's eventfds. */
  close(): void {
    closeQuietly(this.kickFd);
    closeQuietly(this.callFd);
  }
}

/** Where a block request's pieces go in guest memory. */
export interface BlkRequestPlace {
  /** Header address. */
  headerGpa: number;
  /** Data buffer address. */
  dataGpa: number;
  /** Data length (a multiple of 512). */
  dataLen: number;
  /** Status byte address. */
  statusGpa: number;
}

/**
 * Writes an IN or OUT request header (and primes the status byte with 0xff)
 * in `memory`; returns the chain's segments.
 */
export function blkRequest(
  memory: GuestMemory,
  type: typeof BlkRequestType.IN | typeof BlkRequestType.OUT,
  sector: number,
  place: BlkRequestPlace,
): Segment[] {
  const header = memory.slice(place.headerGpa, REQUEST_HEADER_SIZE);
  const status = memory.slice(place.statusGpa, 1);
  assert.ok(header && status, "request outside guest memory");
  const view = new DataView(header.buffer, header.byteOffset, REQUEST_HEADER_SIZE);
  view.setUint32(0, type, true);
  view.setUint32(4, 0, true);
  view.setBigUint64(8, BigInt(sector), true);
  status[0] = 0xff;
  return [
    { addr: place.headerGpa, len: REQUEST_HEADER_SIZE, writable: false },
    { addr: place.dataGpa, len: place.dataLen, writable: type === BlkRequestType.IN },
    { addr: place.statusGpa, len: 1, writable: true },
  ];
}
