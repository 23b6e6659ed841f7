/**
 * The vhost-user back-end state machine for one front-end connection: feature
 * negotiation, the guest memory table, the vrings and their life cycle. Its
 * methods take decoded, validated arguments (the dispatcher decodes); a
 * request that cannot be honoured throws RequestError and changes nothing.
 *
 * @module
 */

import { closeQuietly } from "../../ffi/mod.ts";
import {
  bit,
  type ConfigPayload,
  type DeviceStateParams,
  hasBit,
  type InflightDesc,
  type LogArea,
  maskOf,
  type MemoryRegionDesc,
  ProtocolFeature,
  VirtioFeature,
  VRING_ADDR_F_LOG,
  type VringAddress,
  type VringState,
} from "../protocol/mod.ts";
import type { VirtioDevice } from "../devices/device.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import {
  guestMemoryOf,
  type MappedRegion,
  MappingError,
  mapRegion,
  mapRegions,
  unmapRegion,
} from "../memory/mapped_regions.ts";
import { isValidQueueSize, usedRingSize } from "../virtqueue/layout.ts";
import { InflightQueue } from "../virtqueue/inflight_region.ts";
import type { SplitQueueState } from "../virtqueue/split_queue.ts";
import { log } from "../log.ts";
import { acceptNotificationFd, type NotificationFdKind, Vring } from "./vring.ts";
import type { WorkerPool } from "./worker_pool.ts";
import { NO_FD, type RegionMapping } from "./worker_protocol.ts";
import { RequestError } from "./request_error.ts";
import { DirtyLogging } from "./dirty_logging.ts";
import { InflightTracking, type NewInflightArea } from "./inflight_tracking.ts";
import type { InflightMapping } from "./worker_protocol.ts";
import {
  type DeviceStateOptions,
  type DeviceStateReply,
  DeviceStateSession,
} from "./device_state_session.ts";

/** Options of a back-end (from the command line). */
export type BackendOptions = DeviceStateOptions;

export { RequestError };

/**
 * Memory slots offered through GET_MAX_MEM_SLOTS: 509, as rust-vmm's
 * vhost-user-backend and virtiofsd offer (QEMU hot-plugs memory with up to
 * this many ADD_MEM_REG regions). Translation is a binary search over them.
 */
export const MAX_MEM_SLOTS = 509;

/**
 * Protocol features vhostd implements for every device. INFLIGHT_SHMFD: queue
 * Workers complete requests out of order, so a lossless reconnect after a
 * crash needs the inflight area (see inflight_tracking.ts).
 */
const BASE_PROTOCOL_FEATURES = maskOf([
  ProtocolFeature.MQ,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.CONFIG,
  ProtocolFeature.INFLIGHT_SHMFD,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.RESET_DEVICE,
]);

/** The back-end side of one connection. */
export class VhostUserBackend {
  readonly #device: VirtioDevice;
  readonly #pool: WorkerPool;
  readonly #rings: Vring[];
  #ackedFeatures = 0n;
  #ackedProtocolFeatures = 0n;
  #owned = false;
  #regions: MappedRegion[] = [];
  #memory = new GuestMemory([]);
  readonly #logging: DirtyLogging;
  readonly #inflight: InflightTracking;
  readonly #deviceState: DeviceStateSession | undefined;

  /** A back-end for `device`, whose rings are served by `pool`. */
  constructor(device: VirtioDevice, pool: WorkerPool, options: BackendOptions = {}) {
    this.#device = device;
    this.#pool = pool;
    this.#logging = new DirtyLogging(pool, (active) => this.#loggingChanged(active));
    this.#inflight = new InflightTracking(device.numQueues);
    this.#deviceState = device.stateSupport
      ? new DeviceStateSession(device, device.stateSupport, options)
      : undefined;
    this.#rings = Array.from({ length: device.numQueues }, (_, i) => new Vring(i));
    pool.onRingError = (queue, reason) => {
      const ring = this.#rings[queue];
      if (ring) ring.broken = true;
      log.warn(`ring ${queue} stopped: ${reason}`);
    };
    pool.onRingLost = (queue, reason) => {
      const ring = this.#rings[queue];
      if (!ring) return;
      // Its position went with the Worker: it stays stopped until the front-end restarts it.
      ring.broken = true;
      ring.running = false;
      log.warn(`ring ${queue} lost with its queue worker (${reason}); restart it to go on`);
    };
  }

  // ---- features -------------------------------------------------------

  /** Virtio features offered: the device's plus the vhost-user bits. */
  offeredFeatures(): bigint {
    return this.#device.features() | bit(VirtioFeature.PROTOCOL_FEATURES) |
      bit(VirtioFeature.LOG_ALL);
  }

  /**
   * Protocol features offered: the base set (inflight tracking included),
   * dirty logging, and DEVICE_STATE when the device can.
   */
  offeredProtocolFeatures(): bigint {
    let features = BASE_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD);
    if (this.#deviceState) features |= bit(ProtocolFeature.DEVICE_STATE);
    return features;
  }

  /** Protocol features the front-end accepted (gates requests in the dispatcher). */
  negotiatedProtocolFeatures(): bigint {
    return this.#ackedProtocolFeatures;
  }

  /** Virtio features the front-end accepted. */
  ackedFeatures(): bigint {
    return this.#ackedFeatures;
  }

  /** SET_FEATURES. */
  async setFeatures(features: bigint): Promise<void> {
    const unknown = features & ~this.offeredFeatures();
    if (unknown !== 0n) {
      throw new RequestError(`features 0x${unknown.toString(16)} were not offered`);
    }
    const ringBits = bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC);
    const ringBitsChanged = ((features ^ this.#ackedFeatures) & ringBits) !== 0n;
    this.#ackedFeatures = features;
    this.#device.setAckedFeatures(features & this.#device.features());
    await this.#logging.setLogAll(hasBit(features, VirtioFeature.LOG_ALL));
    // Running rings pick up new ring features (and enable rules) by restarting.
    for (const ring of this.#rings) {
      if (ring.running && ringBitsChanged) await this.#stopRing(ring);
      await this.#reconcile(ring);
    }
  }

  /** SET_PROTOCOL_FEATURES. */
  setProtocolFeatures(features: bigint): void {
    const unknown = features & ~this.offeredProtocolFeatures();
    if (unknown !== 0n) {
      throw new RequestError(`protocol features 0x${unknown.toString(16)} were not offered`);
    }
    this.#ackedProtocolFeatures = features;
  }

  /** SET_OWNER. */
  setOwner(): void {
    if (this.#owned) log.debug("SET_OWNER on an already owned session");
    this.#owned = true;
  }

  /** RESET_OWNER and RESET_DEVICE: every ring stopped and forgotten, features cleared. */
  async reset(): Promise<void> {
    for (const ring of this.#rings) {
      if (ring.running) await this.#stopRing(ring);
      ring.reset();
    }
    this.#ackedFeatures = 0n;
    await this.#logging.setLogAll(false);
    this.#device.reset();
  }

  // ---- dirty log and device state ------------------------------------------

  /** Live migration began (or ended): say so, and warn when the device's contents will not follow. */
  #loggingChanged(active: boolean): void {
    if (!active) {
      log.info("dirty-page logging stopped");
      return;
    }
    log.info("dirty-page logging started");
    const warning = this.#device.stateSupport?.migrationWarning?.();
    if (warning && !hasBit(this.#ackedProtocolFeatures, ProtocolFeature.DEVICE_STATE)) {
      log.warn(warning);
    }
  }

  /** SET_LOG_BASE: takes ownership of `fd`; a log smaller than guest memory is refused. */
  setLogBase(area: LogArea, fd: number): Promise<void> {
    return this.#logging.setLogBase(area, fd);
  }

  /** SET_LOG_FD: takes ownership of `fd`; an eventfd only, like the ring notification fds. */
  setLogFd(fd: number): Promise<void> {
    const problem = acceptNotificationFd(fd);
    if (problem !== undefined) {
      closeQuietly(fd);
      throw new RequestError(`log fd refused: ${problem}`);
    }
    return this.#logging.setLogFd(fd);
  }

  /** SET_DEVICE_STATE_FD: takes ownership of `fd`. */
  setDeviceStateFd(params: DeviceStateParams, fd: number): Promise<DeviceStateReply> {
    if (!this.#deviceState) {
      closeQuietly(fd);
      throw new RequestError(`${this.#device.kind} devices have no transferable state`);
    }
    const started = this.#rings.filter((r) => r.started).map((r) => r.index);
    return this.#deviceState.start(params, fd, started);
  }

  /** CHECK_DEVICE_STATE: 0 when the last transfer (and for LOAD, applying it) succeeded. */
  checkDeviceState(): Promise<number> {
    if (!this.#deviceState) throw new RequestError("no device state transfer");
    return this.#deviceState.check();
  }

  // ---- inflight tracking -------------------------------------------------

  /** GET_INFLIGHT_FD: a new zeroed area; the caller sends its fd and closes it. */
  getInflightFd(request: InflightDesc): NewInflightArea {
    return this.#inflight.create(request);
  }

  /** SET_INFLIGHT_FD: takes ownership of `fd`; refused while a ring runs. */
  setInflightFd(desc: InflightDesc, fd: number): void {
    const running = this.#rings.filter((r) => r.running).map((r) => r.index);
    if (running.length > 0) {
      closeQuietly(fd);
      throw new RequestError(`inflight area change while ring ${running.join(", ")} runs`);
    }
    this.#inflight.install(desc, fd);
  }

  /** Number of queues (GET_QUEUE_NUM). */
  queueCount(): number {
    return this.#device.numQueues;
  }

  // ---- memory ---------------------------------------------------------

  /** SET_MEM_TABLE: takes ownership of `fds`. */
  async setMemTable(descs: MemoryRegionDesc[], fds: number[]): Promise<void> {
    let mapped: MappedRegion[];
    try {
      mapped = mapRegions(descs, fds);
    } catch (e) {
      throw new RequestError(e instanceof MappingError ? e.message : String(e));
    } finally {
      fds.forEach(closeQuietly);
    }
    await this.#replaceRegions(mapped, this.#regions);
  }

  /** ADD_MEM_REG: takes ownership of `fd`. */
  async addMemRegion(desc: MemoryRegionDesc, fd: number): Promise<void> {
    if (this.#regions.length >= MAX_MEM_SLOTS) {
      closeQuietly(fd);
      throw new RequestError(`all ${MAX_MEM_SLOTS} memory slots are in use`);
    }
    let region: MappedRegion;
    try {
      region = mapRegion(desc, fd);
    } catch (e) {
      throw new RequestError(e instanceof MappingError ? e.message : String(e));
    } finally {
      closeQuietly(fd);
    }
    await this.#replaceRegions([...this.#regions, region], [], [region]);
  }

  /**
   * REM_MEM_REG: the region with the same guest address, size and user
   * address goes away (vhost-user.rst: "identified by its guest address,
   * user address and size. The mmap offset is ignored.").
   */
  async removeMemRegion(desc: MemoryRegionDesc): Promise<void> {
    const victim = this.#regions.find((r) =>
      r.desc.guestAddr === desc.guestAddr && r.desc.size === desc.size &&
      r.desc.userAddr === desc.userAddr
    );
    if (!victim) {
      throw new RequestError(
        `no memory region at 0x${desc.guestAddr.toString(16)} of size ${desc.size}` +
          ` and user address 0x${desc.userAddr.toString(16)}`,
      );
    }
    await this.#replaceRegions(this.#regions.filter((r) => r !== victim), [victim]);
  }

  /**
   * Installs a new region set: checked, handed to every Worker, and only
   * then are the regions in `retired` unmapped (no thread can touch them any
   * more). On refusal, `fresh` (the newly mapped ones) is unmapped instead.
   */
  async #replaceRegions(
    next: MappedRegion[],
    retired: MappedRegion[],
    fresh: MappedRegion[] = next,
  ): Promise<void> {
    let memory: GuestMemory;
    try {
      memory = guestMemoryOf(next);
    } catch (e) {
      fresh.forEach(unmapRegion);
      throw new RequestError(e instanceof Error ? e.message : String(e));
    }
    const mappings: RegionMapping[] = next.map((r) => ({
      guestAddr: r.guestAddr,
      size: r.size,
      userAddr: r.userAddr,
      hostAddr: r.hostAddr,
    }));
    await this.#pool.setMemory(mappings);
    this.#regions = next;
    this.#memory = memory;
    this.#logging.memoryChanged(memory.guestEnd);
    retired.forEach(unmapRegion);
    for (const ring of this.#rings) await this.#reconcile(ring);
  }

  // ---- vrings ---------------------------------------------------------

  #ring(index: number): Vring {
    const ring = this.#rings[index];
    if (!ring) {
      throw new RequestError(`ring ${index} does not exist (device has ${this.#rings.length})`);
    }
    return ring;
  }

  /**
   * The ring `index` for a new `kind` fd (NO_FD for the no-fd flag), checked
   * and made non-blocking (see acceptNotificationFd). When the ring does not
   * exist or the fd is refused, `fd` (which the caller handed over) is closed
   * and RequestError thrown: the ring keeps its previous fd and state.
   */
  #ringTakingFd(index: number, fd: number, kind: NotificationFdKind): Vring {
    let ring: Vring;
    try {
      ring = this.#ring(index);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    if (fd === NO_FD) return ring;
    const refusal = acceptNotificationFd(fd);
    if (refusal !== undefined) {
      closeQuietly(fd);
      throw new RequestError(
        `ring ${index}: ${kind} fd refused, the ring keeps its previous one: ${refusal}`,
      );
    }
    return ring;
  }

  /** SET_VRING_NUM. */
  setVringNum({ index, num }: VringState): void {
    const ring = this.#ring(index);
    if (ring.started) throw new RequestError(`ring ${index}: size change while started`);
    if (!isValidQueueSize(num) || num > this.#device.maxQueueSize) {
      throw new RequestError(
        `ring ${index}: size ${num} is not a power of two up to ${this.#device.maxQueueSize}`,
      );
    }
    ring.size = num;
  }

  /** SET_VRING_ADDR (also used by QEMU to switch used-ring logging on a running ring). */
  async setVringAddr(address: VringAddress): Promise<void> {
    const ring = this.#ring(address.index);
    if ((address.flags & ~VRING_ADDR_F_LOG) !== 0) {
      throw new RequestError(
        `ring ${address.index}: unknown address flags 0x${address.flags.toString(16)}`,
      );
    }
    for (
      const [name, uaddr] of [["descriptor table", address.descUserAddr], [
        "available ring",
        address.availUserAddr,
      ], ["used ring", address.usedUserAddr]] as const
    ) {
      if (this.#memory.userToGuest(Number(uaddr)) === undefined) {
        throw new RequestError(
          `ring ${address.index}: ${name} address 0x${uaddr.toString(16)} is not in guest memory`,
        );
      }
    }
    const wasRunning = ring.running;
    if (wasRunning) await this.#stopRing(ring);
    ring.address = address;
    ring.broken = false;
    if (wasRunning) await this.#reconcile(ring);
  }

  /** SET_VRING_BASE. */
  setVringBase({ index, num }: VringState): void {
    const ring = this.#ring(index);
    if (ring.started) throw new RequestError(`ring ${index}: base change while started`);
    if (num > 0xffff) throw new RequestError(`ring ${index}: base ${num} is not a 16-bit index`);
    ring.position = { nextAvail: num, nextUsed: undefined };
  }

  /** GET_VRING_BASE: stops the ring (no request is left in flight) and returns its position. */
  async getVringBase(index: number): Promise<VringState> {
    const ring = this.#ring(index);
    if (ring.running) await this.#stopRing(ring);
    ring.started = false;
    ring.kickFd = Vring.replaceFd(ring.kickFd, NO_FD);
    return { index, num: ring.position.nextAvail };
  }

  /** SET_VRING_KICK: takes ownership of `fd`; starts the ring. */
  async setVringKick(index: number, fd: number): Promise<void> {
    const ring = this.#ringTakingFd(index, fd, "kick");
    if (ring.running) await this.#stopRing(ring);
    ring.kickFd = Vring.replaceFd(ring.kickFd, fd);
    ring.started = true;
    ring.broken = false;
    await this.#reconcile(ring);
  }

  /** SET_VRING_CALL: takes ownership of `fd`. */
  async setVringCall(index: number, fd: number): Promise<void> {
    const ring = this.#ringTakingFd(index, fd, "call");
    if (ring.running) await this.#pool.setCall(index, fd);
    ring.callFd = Vring.replaceFd(ring.callFd, fd);
  }

  /** SET_VRING_ERR: takes ownership of `fd`. */
  async setVringErr(index: number, fd: number): Promise<void> {
    const ring = this.#ringTakingFd(index, fd, "err");
    const wasRunning = ring.running;
    if (wasRunning) await this.#stopRing(ring);
    ring.errFd = Vring.replaceFd(ring.errFd, fd);
    if (wasRunning) await this.#reconcile(ring);
  }

  /** SET_VRING_ENABLE. */
  async setVringEnable({ index, num }: VringState): Promise<void> {
    const ring = this.#ring(index);
    if (num > 1) throw new RequestError(`ring ${index}: enable value ${num} is not 0 or 1`);
    ring.enabled = num === 1;
    await this.#reconcile(ring);
  }

  /** Brings a ring's Worker state in line with its configuration. */
  async #reconcile(ring: Vring): Promise<void> {
    const protocolNegotiated = hasBit(this.#ackedFeatures, VirtioFeature.PROTOCOL_FEATURES);
    const shouldRun = ring.started && (ring.enabled || !protocolNegotiated) && !ring.broken &&
      ring.size > 0 && ring.address !== undefined && this.#regions.length > 0;
    if (shouldRun && !ring.running) {
      const start = this.#queueState(ring);
      if (typeof start === "string") {
        ring.broken = true;
        log.warn(`ring ${ring.index} not started: ${start}`);
        return;
      }
      const { state, inflight } = start;
      ring.running = true;
      const error = await this.#pool.startQueue(
        ring.index,
        state,
        ring.kickFd,
        ring.callFd,
        ring.errFd,
        inflight,
      );
      if (error !== undefined) {
        ring.broken = true;
        return;
      }
      log.debug(`ring ${ring.index} running (size ${ring.size}, avail ${state.nextAvail})`);
      // A ring running ends the start sequence that follows a LOAD (a blk device stops keeping
      // its loaded cache mode across resets); ring starts after that change nothing.
      this.#device.ringStarted?.();
    } else if (!shouldRun && ring.running) {
      await this.#stopRing(ring);
    }
  }

  async #stopRing(ring: Vring): Promise<void> {
    const state = await this.#pool.stopQueue(ring.index);
    ring.position = { nextAvail: state.nextAvail, nextUsed: state.nextUsed };
    ring.running = false;
    log.debug(`ring ${ring.index} stopped at avail ${state.nextAvail}`);
  }

  #queueState(ring: Vring): { state: SplitQueueState; inflight?: InflightMapping } | string {
    const a = ring.address!;
    const descGpa = this.#memory.userToGuest(Number(a.descUserAddr));
    const availGpa = this.#memory.userToGuest(Number(a.availUserAddr));
    const usedGpa = this.#memory.userToGuest(Number(a.usedUserAddr));
    if (descGpa === undefined || availGpa === undefined || usedGpa === undefined) {
      return "ring addresses are not in guest memory";
    }
    const slice = this.#inflight.slice(ring.index);
    let nextAvail = ring.position.nextAvail;
    let nextUsed = ring.position.nextUsed;
    if (nextUsed === undefined || slice) {
      // After SET_VRING_BASE the used index continues from what the ring holds,
      // and inflight recovery starts from it.
      const used = this.#memory.resolve(usedGpa, usedRingSize(ring.size));
      if (!used) return "used ring is not in guest memory";
      nextUsed = used.region.view.getUint16(used.offset + 2, true);
    }
    let inflight: InflightMapping | undefined;
    if (slice) {
      const recovery = this.#recoverInflight(ring, slice.bytes, nextUsed);
      if (recovery !== undefined) {
        inflight = { hostAddr: slice.hostAddr, size: slice.size };
        nextAvail = recovery;
      }
    }
    const state: SplitQueueState = {
      size: ring.size,
      descGpa,
      availGpa,
      usedGpa,
      nextAvail,
      nextUsed,
      eventIdx: hasBit(this.#ackedFeatures, VirtioFeature.RING_EVENT_IDX),
      indirect: hasBit(this.#ackedFeatures, VirtioFeature.RING_INDIRECT_DESC),
      logUsedGpa: (a.flags & VRING_ADDR_F_LOG) !== 0 ? Number(a.logGuestAddr) : undefined,
    };
    return { state, inflight };
  }

  /**
   * Applies the crash-recovery rule to a ring's inflight region before it
   * starts and returns where the ring continues (used.idx + requests in
   * flight, whatever SET_VRING_BASE said), or undefined when the region
   * cannot be trusted: the ring then runs untracked.
   */
  #recoverInflight(ring: Vring, bytes: Uint8Array, usedIdx: number): number | undefined {
    const queue = InflightQueue.open(bytes, ring.size);
    const recovery = typeof queue === "string" ? queue : queue.recover(usedIdx);
    if (typeof recovery === "string") {
      log.warn(`ring ${ring.index}: inflight region not used: ${recovery}`);
      return undefined;
    }
    if (recovery.count > 0 || recovery.clearedBatch > 0) {
      log.info(
        `ring ${ring.index}: ${recovery.count} requests were in flight, resubmitting them` +
          (recovery.clearedBatch > 0 ? ` (${recovery.clearedBatch} had completed)` : ""),
      );
    }
    if (recovery.nextAvail !== ring.position.nextAvail) {
      log.debug(
        `ring ${ring.index}: starts at avail ${recovery.nextAvail} (base was ${ring.position.nextAvail})`,
      );
    }
    return recovery.nextAvail;
  }

  // ---- configuration space ---------------------------------------------

  /** GET_CONFIG: exactly the requested window, or RequestError. */
  getConfig(request: ConfigPayload): ConfigPayload {
    const config = this.#device.readConfig();
    if (request.offset + request.size > config.length) {
      throw new RequestError(
        `config read of ${request.size} bytes at ${request.offset} exceeds the ${config.length}-byte space`,
      );
    }
    return { ...request, data: config.slice(request.offset, request.offset + request.size) };
  }

  /** SET_CONFIG. */
  setConfig(request: ConfigPayload): void {
    const error = this.#device.writeConfig(request.offset, request.data);
    if (error !== undefined) throw new RequestError(error);
  }

  // ---- life cycle -------------------------------------------------------

  /** The front-end went away: stop everything, unmap, close, forget. */
  async disconnect(): Promise<void> {
    await this.#deviceState?.close();
    await this.#logging.close();
    for (const ring of this.#rings) {
      try {
        if (ring.running) await this.#stopRing(ring);
      } catch (e) {
        log.error(`ring ${ring.index}: stop failed: ${e instanceof Error ? e.message : e}`);
      }
      ring.reset();
    }
    await this.#pool.setMemory([]);
    this.#inflight.close();
    this.#regions.forEach(unmapRegion);
    this.#regions = [];
    this.#memory = new GuestMemory([]);
    this.#ackedFeatures = 0n;
    this.#ackedProtocolFeatures = 0n;
    this.#device.reset();
  }
}
