import assert from "node:assert/strict";
import { EACCES, ENOENT, EPERM } from "../../../../ffi/mod.ts";
import { type CredentialCalls, ThreadCredentials } from "./credentials.ts";
import type { Caller } from "./credentials.ts";
import { errnoOf, FsError } from "./fs_errors.ts";
import { asCallerClaimingGroups, type CallerSwitch } from "./group_claims.ts";

/** Records every caller it runs as; `switching` as given. */
class RecordingSwitch implements CallerSwitch {
  readonly runs: (Caller | undefined)[] = [];
  constructor(readonly switching = true) {}
  asCaller<T>(caller: Caller | undefined, operation: () => T): T {
    this.runs.push(caller);
    return operation();
  }
}

/** An operation the host allows only to a caller holding group `needed`. */
function needsGroup(creds: RecordingSwitch, needed: number, errno = EACCES): () => string {
  return () => {
    const caller = creds.runs.at(-1);
    if (caller?.gid === needed || caller?.groups?.includes(needed)) return "done";
    throw new FsError(errno, "refused");
  };
}

const USER: Caller = { uid: 1000, gid: 1000 };

Deno.test("a first run that succeeds costs nothing: no status read, no retry", () => {
  const creds = new RecordingSwitch();
  let asked = 0;
  const result = asCallerClaimingGroups(creds, USER, () => {
    asked++;
    return [2000];
  }, () => "done");
  assert.equal(result, "done");
  assert.equal(asked, 0);
  assert.deepEqual(creds.runs, [USER]);
});

Deno.test("EACCES and EPERM are retried once with the involved groups added", () => {
  for (const errno of [EACCES, EPERM]) {
    const creds = new RecordingSwitch();
    const caller: Caller = { uid: 1000, gid: 1000, groups: [5] };
    const result = asCallerClaimingGroups(
      creds,
      caller,
      () => [2000, undefined, 1000, 5, 2000, 0],
      needsGroup(creds, 2000, errno),
    );
    assert.equal(result, "done");
    // The caller's own gid, its groups and repeats are not added again; a
    // group id of 0 from an inode is a claim like any other.
    assert.deepEqual(creds.runs, [caller, { uid: 1000, gid: 1000, groups: [5, 2000, 0] }]);
  }
});

Deno.test("a refusal the involved groups cannot lift stays, with the retry's answer", () => {
  const creds = new RecordingSwitch();
  let runs = 0;
  const outcome = errnoOf(catching(() =>
    asCallerClaimingGroups(creds, USER, () => [2000], () => {
      runs++;
      throw new FsError(runs === 1 ? EACCES : EPERM);
    })
  ));
  assert.equal(outcome, EPERM, "the second refusal is the answer");
  assert.equal(runs, 2, "retried once, not more");
});

Deno.test("other failures, and refusals with no new group to claim, are not retried", () => {
  const cases: [number, (number | undefined)[]][] = [
    [ENOENT, [2000]],
    [EACCES, []],
    [EACCES, [1000, undefined]],
  ];
  for (const [errno, involved] of cases) {
    const creds = new RecordingSwitch();
    const outcome = errnoOf(
      catching(() =>
        asCallerClaimingGroups(creds, USER, () => involved, () => {
          throw new FsError(errno);
        })
      ),
    );
    assert.equal(outcome, errno);
    assert.equal(creds.runs.length, 1, `${errno} ${involved}`);
  }
  // A bug (not an errno) is never retried either.
  const creds = new RecordingSwitch();
  assert.throws(
    () => asCallerClaimingGroups(creds, USER, () => [2000], () => JSON.parse("{")),
    SyntaxError,
  );
  assert.equal(creds.runs.length, 1);
});

Deno.test("root callers, no caller, and a vhostd that does not switch run once, unchanged", () => {
  const callers: [boolean, Caller | undefined][] = [
    [true, { uid: 0, gid: 1000 }],
    [true, undefined],
    [false, USER],
  ];
  for (const [switching, caller] of callers) {
    const creds = new RecordingSwitch(switching);
    let asked = 0;
    const outcome = errnoOf(catching(() =>
      asCallerClaimingGroups(creds, caller, () => {
        asked++;
        return [2000];
      }, () => {
        throw new FsError(EACCES);
      })
    ));
    assert.equal(outcome, EACCES);
    assert.deepEqual(creds.runs, [caller]);
    assert.equal(asked, 0);
  }
});

Deno.test("eager claims give the involved groups to the only run", () => {
  const creds = new RecordingSwitch();
  const result = asCallerClaimingGroups(creds, USER, () => [2000], needsGroup(creds, 2000), true);
  assert.equal(result, "done");
  assert.deepEqual(creds.runs, [{ uid: 1000, gid: 1000, groups: [2000] }]);
});

/** Thread credentials in memory, to see which groups the real switch sets. */
class FakeThreadCalls implements CredentialCalls {
  fsuid = 0;
  fsgid = 0;
  list: number[] = [0, 10, 2000];
  readonly set: number[][] = [];
  setFsuid(uid: number): number {
    const previous = this.fsuid;
    if (uid !== 0xffff_ffff) this.fsuid = uid;
    return previous;
  }
  setFsgid(gid: number): number {
    const previous = this.fsgid;
    if (gid !== 0xffff_ffff) this.fsgid = gid;
    return previous;
  }
  groups(): number[] {
    return [...this.list];
  }
  setGroups(groups: readonly number[]): void {
    this.set.push([...groups]);
    this.list = [...groups];
  }
  capabilities() {
    return { effective: 0n, permitted: 0n, inheritable: 0n };
  }
  setCapabilities(): void {}
}

Deno.test("through ThreadCredentials: only claimed groups, never vhostd's, then vhostd's back", () => {
  const calls = new FakeThreadCalls();
  const creds = new ThreadCredentials(calls);
  calls.set.length = 0;
  const seen: number[][] = [];
  const result = asCallerClaimingGroups(creds, USER, () => [3000], () => {
    seen.push(calls.groups());
    // vhostd's group 2000 would let it through if it leaked.
    if (!calls.list.includes(3000) || calls.list.includes(2000)) throw new FsError(EACCES);
    return calls.fsuid;
  });
  assert.equal(result, 1000);
  assert.deepEqual(seen, [[], [3000]]);
  assert.deepEqual(calls.groups(), [0, 10, 2000], "vhostd's groups restored");
  assert.deepEqual([calls.fsuid, calls.fsgid], [0, 0]);
});

function catching(body: () => unknown): unknown {
  try {
    body();
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure");
}
