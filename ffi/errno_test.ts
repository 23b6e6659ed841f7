import assert from "node:assert/strict";
import {
  EAGAIN,
  EBADF,
  ECONNREFUSED,
  ENOENT,
  ENOTSUP,
  EOPNOTSUPP,
  errnoDescription,
  errnoName,
  isErrno,
  SyscallError,
} from "./errno.ts";
import { closeFd, openFile } from "./fd.ts";
import { O_RDONLY } from "./constants.ts";

Deno.test("errnoName maps known values and falls back to E<number>", () => {
  assert.equal(errnoName(1), "EPERM");
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(11), "EAGAIN");
  assert.equal(errnoName(36), "ENAMETOOLONG");
  assert.equal(errnoName(61), "ENODATA");
  assert.equal(errnoName(90), "EMSGSIZE");
  assert.equal(errnoName(111), "ECONNREFUSED");
  assert.equal(errnoName(ENOTSUP), "EOPNOTSUPP");
  assert.equal(ENOTSUP, EOPNOTSUPP);
  assert.equal(errnoName(123), "E123");
  assert.equal(errnoDescription(ECONNREFUSED), "Connection refused");
});

Deno.test("every required errno has a distinct name", () => {
  const required = [
    "EPERM ENOENT EINTR EIO EBADF EAGAIN ENOMEM EACCES EFAULT EBUSY EEXIST EXDEV ENODEV",
    "ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY EFBIG ENOSPC ESPIPE EROFS EMLINK EPIPE",
    "ERANGE ENAMETOOLONG ENOSYS ENOTEMPTY ELOOP ENODATA EOVERFLOW EOPNOTSUPP ECONNREFUSED",
    "ECONNRESET ENOTCONN ETIMEDOUT EADDRINUSE ENOTSOCK EMSGSIZE",
  ].join(" ").split(" ");
  const known = new Set<string>();
  for (let errno = 1; errno < 200; errno++) {
    const name = errnoName(errno);
    if (name !== `E${errno}`) {
      assert.ok(!known.has(name), `${name} used twice`);
      known.add(name);
    }
  }
  for (const name of required) assert.ok(known.has(name), `missing ${name}`);
});

Deno.test("SyscallError carries syscall, errno, code and a readable message", () => {
  const error = new SyscallError("recvmsg", EAGAIN, "fd 7");
  assert.ok(error instanceof Error);
  assert.equal(error.name, "SyscallError");
  assert.equal(error.syscall, "recvmsg");
  assert.equal(error.errno, EAGAIN);
  assert.equal(error.code, "EAGAIN");
  assert.match(error.message, /recvmsg.*EAGAIN.*fd 7/);
  assert.equal(new SyscallError("x", 4000).code, "E4000");
  assert.ok(isErrno(error, "EAGAIN"));
  assert.ok(isErrno(error, EAGAIN));
  assert.ok(!isErrno(error, EBADF));
  assert.ok(!isErrno(new Error("EAGAIN"), "EAGAIN"));
});

Deno.test("real failures report the errno of the failing call", () => {
  assert.throws(() => closeFd(-1), (error: unknown) => {
    assert.ok(error instanceof SyscallError);
    assert.equal(error.syscall, "close");
    assert.equal(error.code, "EBADF");
    assert.equal(error.errno, EBADF);
    return true;
  });
  const missing = `/nonexistent-${crypto.randomUUID()}/file`;
  assert.throws(() => openFile(missing, O_RDONLY), (error: unknown) => {
    assert.ok(error instanceof SyscallError);
    assert.equal(error.syscall, "open");
    assert.equal(error.code, "ENOENT");
    assert.equal(error.errno, ENOENT);
    assert.ok(error.message.includes(missing));
    return true;
  });
  // Alternating failures: errno must follow each call, not stick.
  assert.throws(() => closeFd(-1), { code: "EBADF" });
  assert.throws(() => openFile(missing, O_RDONLY), { code: "ENOENT" });
});
