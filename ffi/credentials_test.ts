import assert from "node:assert/strict";
import {
  CAP_FSETID,
  capabilityBit,
  setThreadCapabilities,
  setThreadFsgid,
  setThreadFsuid,
  setThreadGroups,
  threadCapabilities,
  threadFsgid,
  threadFsuid,
  threadGroups,
} from "./credentials.ts";
import { EPERM, SyscallError } from "./errno.ts";
import { closeFd } from "./fd.ts";
import { openat } from "./fs.ts";
import { AT_FDCWD, O_CLOEXEC, O_CREAT, O_RDONLY, O_WRONLY } from "./constants.ts";

const isRoot = Deno.uid() === 0;
const rootOnly = isRoot ? "" : " (skipped: switching ids needs root)";

/** Reads a thread's credential lines of /proc/thread-self/status, from this thread. */
function statusLine(name: string): string {
  const text = Deno.readTextFileSync("/proc/thread-self/status");
  return text.split("\n").find((line) => line.startsWith(`${name}:`)) ?? "";
}

Deno.test("threadFsuid and threadFsgid report this thread's filesystem ids", () => {
  assert.equal(threadFsuid(), Deno.uid());
  assert.equal(threadFsgid(), Deno.gid());
  // Uid: real effective saved fs
  assert.equal(statusLine("Uid").split(/\s+/)[4], String(threadFsuid()));
});

Deno.test({
  name: `setThreadFsuid/Fsgid switch this thread only and return the previous id${rootOnly}`,
  ignore: !isRoot,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(`${dir}/secret`, "x");
      Deno.chmodSync(`${dir}/secret`, 0o600);
      assert.equal(setThreadFsgid(4321), 0);
      assert.equal(setThreadFsuid(1234), 0);
      try {
        assert.equal(threadFsuid(), 1234);
        assert.equal(threadFsgid(), 4321);
        // The effective uid stays root: only the filesystem ids moved.
        assert.equal(Deno.uid(), 0);
        // Permission checks are now made for 1234: a 0600 root file is closed.
        assert.throws(
          () => openat(AT_FDCWD, `${dir}/secret`, O_RDONLY | O_CLOEXEC),
          (e: unknown) => e instanceof SyscallError && e.errno === 13,
        );
      } finally {
        assert.equal(setThreadFsuid(0), 1234);
        assert.equal(setThreadFsgid(0), 4321);
      }
      assert.equal(threadFsuid(), 0);
      closeFd(openat(AT_FDCWD, `${dir}/secret`, O_RDONLY | O_CLOEXEC));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `files created after setThreadFsuid belong to that user${rootOnly}`,
  ignore: !isRoot,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      Deno.chmodSync(dir, 0o777);
      setThreadFsgid(2002);
      setThreadFsuid(1001);
      let fd: number;
      try {
        fd = openat(AT_FDCWD, `${dir}/made`, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600);
      } finally {
        setThreadFsuid(0);
        setThreadFsgid(0);
      }
      closeFd(fd);
      const st = Deno.statSync(`${dir}/made`);
      assert.equal(st.uid, 1001);
      assert.equal(st.gid, 2002);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `setThreadGroups replaces this thread's groups and can restore them${rootOnly}`,
  ignore: !isRoot,
  fn() {
    const before = threadGroups();
    setThreadGroups([7, 8]);
    try {
      assert.deepEqual(threadGroups(), [7, 8]);
      assert.match(statusLine("Groups"), /^Groups:\s+7 8\s*$/);
      setThreadGroups([]);
      assert.deepEqual(threadGroups(), []);
    } finally {
      setThreadGroups(before);
    }
    assert.deepEqual(threadGroups(), before);
  },
});

Deno.test("setThreadGroups without CAP_SETGID, or with too many groups, throws", () => {
  assert.throws(
    () => setThreadGroups(new Array(65537).fill(1)),
    (e: unknown) => e instanceof SyscallError && e.errno === 22,
  );
  if (!isRoot) {
    assert.throws(
      () => setThreadGroups([1]),
      (e: unknown) => e instanceof SyscallError && e.errno === EPERM,
    );
  }
});

Deno.test("threadCapabilities reads this thread's sets, and setThreadCapabilities drops and restores a bit", () => {
  const before = threadCapabilities();
  assert.equal(before.effective & ~before.permitted, 0n, "effective within permitted");
  const fsetid = capabilityBit(CAP_FSETID);
  assert.equal(fsetid, 16n);
  if ((before.effective & fsetid) === 0n) return; // nothing to drop without privileges
  setThreadCapabilities({ ...before, effective: before.effective & ~fsetid });
  try {
    assert.equal(threadCapabilities().effective & fsetid, 0n);
    const capEff = BigInt(`0x${statusLine("CapEff").split(/\s+/)[1]}`);
    assert.equal(capEff & fsetid, 0n, "/proc/thread-self/status agrees");
  } finally {
    setThreadCapabilities(before);
  }
  assert.deepEqual(threadCapabilities(), before);
});

Deno.test("setThreadCapabilities refuses to raise an effective bit beyond permitted", () => {
  const before = threadCapabilities();
  const missing = [...Array(41).keys()].map(capabilityBit).find((b) =>
    (before.permitted & b) === 0n
  );
  if (missing === undefined) return; // every capability is permitted
  assert.throws(
    () => setThreadCapabilities({ ...before, effective: before.effective | missing }),
    (e: unknown) => e instanceof SyscallError && e.errno === EPERM,
  );
  assert.deepEqual(threadCapabilities(), before);
});

Deno.test({
  name: `a switch in a Worker leaves the other threads' ids alone${rootOnly}`,
  ignore: !isRoot,
  async fn() {
    const module = new URL("./credentials.ts", import.meta.url).href;
    const code = `
      import { setThreadFsuid, threadFsuid, setThreadGroups, threadGroups } from "${module}";
      const groups = threadGroups();
      setThreadFsuid(1234);
      setThreadGroups([99]);
      self.postMessage({ fsuid: threadFsuid(), groups: threadGroups() });
      self.onmessage = () => {
        setThreadFsuid(0);
        setThreadGroups(groups);
        self.postMessage({ fsuid: threadFsuid(), groups: threadGroups() });
      };`;
    const url = URL.createObjectURL(new Blob([code], { type: "application/javascript" }));
    const worker = new Worker(url, { type: "module" });
    const replies: { fsuid: number; groups: number[] }[] = [];
    const next = () =>
      new Promise<{ fsuid: number; groups: number[] }>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
      });
    const groupsHere = threadGroups();
    try {
      replies.push(await next());
      // The Worker runs as 1234 with group 99 now; this thread is untouched.
      assert.equal(threadFsuid(), 0);
      assert.deepEqual(threadGroups(), groupsHere);
      worker.postMessage("restore");
      replies.push(await next());
    } finally {
      worker.terminate();
      URL.revokeObjectURL(url);
    }
    assert.deepEqual(replies, [{ fsuid: 1234, groups: [99] }, { fsuid: 0, groups: groupsHere }]);
  },
});
