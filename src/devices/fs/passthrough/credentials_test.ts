import assert from "node:assert/strict";
import {
  CAP_FSETID,
  capabilityBit,
  type CapabilitySets,
  EIO,
  EPERM,
  threadCapabilities,
  threadFsgid,
  threadFsuid,
  threadGroups,
} from "../../../../ffi/mod.ts";
import { type CredentialCalls, ThreadCredentials } from "./credentials.ts";
import { FsError } from "./fs_errors.ts";

const FSETID = capabilityBit(CAP_FSETID);
const QUERY = 0xffff_ffff;

/** A thread's credentials in memory; `stuck` ids ignore setfsuid/setfsgid (no CAP_SETUID). */
class FakeThread implements CredentialCalls {
  fsuid = 0;
  fsgid = 0;
  list: number[] = [0];
  caps: CapabilitySets = { effective: 0x1ffn, permitted: 0x1ffn, inheritable: 0n };
  stuckUid = false;
  stuckGid = false;
  /** Refuse setgroups from the nth call on (1-based), or never. */
  refuseGroupsFrom = Infinity;
  groupCalls = 0;
  readonly log: string[] = [];

  setFsuid(uid: number): number {
    const previous = this.fsuid;
    if (uid !== QUERY) {
      this.log.push(`fsuid ${uid}`);
      if (!this.stuckUid) this.fsuid = uid;
    }
    return previous;
  }
  setFsgid(gid: number): number {
    const previous = this.fsgid;
    if (gid !== QUERY) {
      this.log.push(`fsgid ${gid}`);
      if (!this.stuckGid) this.fsgid = gid;
    }
    return previous;
  }
  groups(): number[] {
    return [...this.list];
  }
  setGroups(groups: readonly number[]): void {
    this.groupCalls++;
    if (this.groupCalls >= this.refuseGroupsFrom) throw new FsError(EPERM, "setgroups refused");
    this.log.push(`groups ${groups.join(",")}`);
    this.list = [...groups];
  }
  capabilities(): CapabilitySets {
    return { ...this.caps };
  }
  setCapabilities(sets: CapabilitySets): void {
    this.log.push(`caps ${sets.effective.toString(16)}`);
    this.caps = { ...sets };
  }
}

function started(thread: FakeThread): ThreadCredentials {
  const creds = new ThreadCredentials(thread);
  thread.log.length = 0;
  return creds;
}

Deno.test("asCaller switches groups, fsgid and fsuid for the operation and back", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  assert.equal(creds.switching, true);
  const seen = creds.asCaller({ uid: 1000, gid: 100, groups: [7] }, () => ({
    uid: thread.fsuid,
    gid: thread.fsgid,
    groups: thread.groups(),
  }));
  assert.deepEqual(seen, { uid: 1000, gid: 100, groups: [7] });
  assert.deepEqual([thread.fsuid, thread.fsgid, thread.list], [0, 0, [0]]);
  assert.deepEqual(thread.log, [
    "groups 7",
    "fsgid 100",
    "fsuid 1000",
    "fsuid 0",
    "fsgid 0",
    "groups 0",
  ]);
});

Deno.test("asCaller without groups runs with none, so vhostd's own groups never leak", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  const groups = creds.asCaller({ uid: 1000, gid: 1000 }, () => thread.groups());
  assert.deepEqual(groups, []);
  assert.deepEqual(thread.list, [0]);
});

Deno.test("asCaller restores everything when the operation throws", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  assert.throws(
    () =>
      creds.asCaller({ uid: 5, gid: 6 }, () => {
        throw new FsError(13, "denied");
      }),
    (e: unknown) => e instanceof FsError && e.errno === 13,
  );
  assert.deepEqual([thread.fsuid, thread.fsgid, thread.list], [0, 0, [0]]);
});

Deno.test("asCaller makes no call at all for root, and only the fsgid switch for root with a group", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  assert.equal(creds.asCaller({ uid: 0, gid: 0 }, () => 42), 42);
  assert.deepEqual(thread.log, []);
  assert.equal(creds.asCaller({ uid: 0, gid: 50 }, () => thread.fsgid), 50);
  assert.deepEqual(thread.log, ["fsgid 50", "fsgid 0"]);
  thread.log.length = 0;
  assert.equal(creds.asCaller(undefined, () => thread.fsuid), 0);
  assert.deepEqual(thread.log, []);
});

Deno.test("runsAsSelf is true exactly when asCaller would switch nothing", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  const callers = [undefined, { uid: 0, gid: 0 }, { uid: 0, gid: 50 }, { uid: 1000, gid: 0 }, {
    uid: 1000,
    gid: 1000,
  }];
  for (const caller of callers) {
    thread.log.length = 0;
    creds.asCaller(caller, () => 0);
    assert.equal(creds.runsAsSelf(caller), thread.log.length === 0, JSON.stringify(caller));
  }
  assert.equal(creds.runsAsSelf({ uid: 0, gid: 50 }), false);
  // Not switching at all: always itself.
  const notRoot = new FakeThread();
  notRoot.fsuid = 1000;
  notRoot.fsgid = 1000;
  assert.equal(started(notRoot).runsAsSelf({ uid: 5, gid: 5 }), true);
  // After a failed switch back: EIO, as asCaller.
  thread.refuseGroupsFrom = thread.groupCalls + 2;
  assert.throws(() => creds.asCaller({ uid: 1000, gid: 1000 }, () => 1));
  assert.throws(
    () => creds.runsAsSelf({ uid: 0, gid: 0 }),
    (e: unknown) => e instanceof FsError && e.errno === EIO,
  );
});

Deno.test("a switch that does not take fails with EPERM and never runs the operation", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  thread.stuckUid = true; // e.g. CAP_SETUID dropped after start-up
  let ran = false;
  assert.throws(
    () => creds.asCaller({ uid: 1000, gid: 1000 }, () => (ran = true)),
    (e: unknown) => e instanceof FsError && e.errno === EPERM,
  );
  assert.equal(ran, false);
  assert.deepEqual([thread.fsuid, thread.fsgid, thread.list], [0, 0, [0]]);
  thread.stuckUid = false;
  thread.stuckGid = true;
  assert.throws(
    () => creds.asCaller({ uid: 1000, gid: 1000 }, () => (ran = true)),
    (e: unknown) => e instanceof FsError && e.errno === EPERM,
  );
  assert.equal(ran, false);
  assert.equal(thread.fsuid, 0);
});

Deno.test("a refused setgroups fails the request and leaves the ids alone", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  thread.refuseGroupsFrom = thread.groupCalls + 1;
  assert.throws(
    () => creds.asCaller({ uid: 1000, gid: 1000 }, () => 1),
    (e: unknown) => e instanceof FsError && e.errno === EPERM,
  );
  assert.deepEqual([thread.fsuid, thread.fsgid, thread.list], [0, 0, [0]]);
  // Nothing was left half-switched: the next request works.
  thread.refuseGroupsFrom = Infinity;
  assert.equal(creds.asCaller({ uid: 1000, gid: 1000 }, () => thread.fsuid), 1000);
});

Deno.test("when switching back fails the result is an Error and every later call is EIO", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  thread.refuseGroupsFrom = thread.groupCalls + 2; // the switch works, the restore does not
  assert.throws(
    () => creds.asCaller({ uid: 1000, gid: 1000 }, () => 1),
    (e: unknown) =>
      e instanceof Error && !(e instanceof FsError) && /switching back/.test(e.message),
  );
  assert.throws(
    () => creds.asCaller({ uid: 0, gid: 0 }, () => 1),
    (e: unknown) => e instanceof FsError && e.errno === EIO,
  );
});

Deno.test("no switching when vhostd is not root, or when the start-up probe does not take", () => {
  const notRoot = new FakeThread();
  notRoot.fsuid = 1000;
  notRoot.fsgid = 1000;
  const plain = started(notRoot);
  assert.equal(plain.switching, false);
  assert.equal(plain.asCaller({ uid: 5, gid: 5 }, () => notRoot.fsuid), 1000);
  assert.deepEqual(notRoot.log, []);

  const stuck = new FakeThread();
  stuck.stuckUid = true;
  assert.equal(new ThreadCredentials(stuck).switching, false);
  const noSetgid = new FakeThread();
  noSetgid.refuseGroupsFrom = 1;
  assert.equal(new ThreadCredentials(noSetgid).switching, false);
});

Deno.test("withoutFsetid drops CAP_FSETID for the operation only, also when it throws", () => {
  const thread = new FakeThread();
  const creds = started(thread);
  const during = creds.withoutFsetid(() => thread.caps.effective);
  assert.equal(during & FSETID, 0n);
  assert.equal(during | FSETID, 0x1ffn);
  assert.equal(thread.caps.effective, 0x1ffn);
  assert.throws(() =>
    creds.withoutFsetid(() => {
      throw new FsError(5);
    })
  );
  assert.equal(thread.caps.effective, 0x1ffn);
  // Nothing to drop: no capset at all.
  thread.caps = { effective: 0n, permitted: 0n, inheritable: 0n };
  thread.log.length = 0;
  creds.withoutFsetid(() => 1);
  assert.deepEqual(thread.log, []);
});

const isRoot = Deno.uid() === 0;

Deno.test({
  name: `the real thread: asCaller switches this thread and restores it${
    isRoot ? "" : " (skipped: needs root)"
  }`,
  ignore: !isRoot,
  fn() {
    const creds = new ThreadCredentials();
    assert.equal(creds.switching, true);
    const groups = threadGroups();
    const inside = creds.asCaller(
      { uid: 4242, gid: 4343, groups: [17] },
      () => ({ uid: threadFsuid(), gid: threadFsgid(), groups: threadGroups() }),
    );
    assert.deepEqual(inside, { uid: 4242, gid: 4343, groups: [17] });
    assert.deepEqual([threadFsuid(), threadFsgid(), threadGroups()], [0, 0, groups]);
    const caps = threadCapabilities();
    assert.notEqual(caps.effective & FSETID, 0n);
    assert.equal(creds.withoutFsetid(() => threadCapabilities().effective & FSETID), 0n);
    assert.deepEqual(threadCapabilities(), caps);
    // A caller other than root has no CAP_FSETID: the kernel dropped it with the fsuid.
    assert.equal(
      creds.asCaller({ uid: 4242, gid: 4242 }, () => threadCapabilities().effective & FSETID),
      0n,
    );
    assert.deepEqual(threadCapabilities(), caps);
    // uid -1 from a guest: setfsuid ignores it, the verification notices.
    assert.throws(
      () => creds.asCaller({ uid: 0xffff_ffff, gid: 0 }, () => "ran"),
      (e: unknown) => e instanceof FsError && e.errno === EPERM,
    );
    assert.deepEqual([threadFsuid(), threadFsgid(), threadGroups()], [0, 0, groups]);
  },
});
