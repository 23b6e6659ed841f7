/**
 * Linux errno values (x86-64) and {@linkcode SyscallError}, the one error type
 * every wrapper in `ffi/` throws when a libc call fails.
 *
 * @module
 */

/** Operation not permitted. */
export const EPERM = 1;
/** No such file or directory. */
export const ENOENT = 2;
/** No such process. */
export const ESRCH = 3;
/** Interrupted system call. */
export const EINTR = 4;
/** Input/output error. */
export const EIO = 5;
/** No such device or address. */
export const ENXIO = 6;
/** Argument list too long. */
export const E2BIG = 7;
/** Bad file descriptor. */
export const EBADF = 9;
/** No child processes. */
export const ECHILD = 10;
/** Resource temporarily unavailable (same value as EWOULDBLOCK). */
export const EAGAIN = 11;
/** Alias of {@linkcode EAGAIN}. */
export const EWOULDBLOCK: number = EAGAIN;
/** Cannot allocate memory. */
export const ENOMEM = 12;
/** Permission denied. */
export const EACCES = 13;
/** Bad address. */
export const EFAULT = 14;
/** Block device required. */
export const ENOTBLK = 15;
/** Device or resource busy. */
export const EBUSY = 16;
/** File exists. */
export const EEXIST = 17;
/** Invalid cross-device link. */
export const EXDEV = 18;
/** No such device. */
export const ENODEV = 19;
/** Not a directory. */
export const ENOTDIR = 20;
/** Is a directory. */
export const EISDIR = 21;
/** Invalid argument. */
export const EINVAL = 22;
/** Too many open files in system. */
export const ENFILE = 23;
/** Too many open files. */
export const EMFILE = 24;
/** Inappropriate ioctl for device. */
export const ENOTTY = 25;
/** Text file busy. */
export const ETXTBSY = 26;
/** File too large. */
export const EFBIG = 27;
/** No space left on device. */
export const ENOSPC = 28;
/** Illegal seek. */
export const ESPIPE = 29;
/** Read-only file system. */
export const EROFS = 30;
/** Too many links. */
export const EMLINK = 31;
/** Broken pipe. */
export const EPIPE = 32;
/** Numerical argument out of domain. */
export const EDOM = 33;
/** Numerical result out of range. */
export const ERANGE = 34;
/** Resource deadlock avoided. */
export const EDEADLK = 35;
/** File name too long. */
export const ENAMETOOLONG = 36;
/** No locks available. */
export const ENOLCK = 37;
/** Function not implemented. */
export const ENOSYS = 38;
/** Directory not empty. */
export const ENOTEMPTY = 39;
/** Too many levels of symbolic links. */
export const ELOOP = 40;
/** No message of desired type. */
export const ENOMSG = 42;
/** No data available. */
export const ENODATA = 61;
/** Timer expired. */
export const ETIME = 62;
/** Protocol error. */
export const EPROTO = 71;
/** Value too large for defined data type. */
export const EOVERFLOW = 75;
/** File descriptor in bad state. */
export const EBADFD = 77;
/** Invalid or incomplete multibyte or wide character. */
export const EILSEQ = 84;
/** Socket operation on non-socket. */
export const ENOTSOCK = 88;
/** Destination address required. */
export const EDESTADDRREQ = 89;
/** Message too long. */
export const EMSGSIZE = 90;
/** Protocol wrong type for socket. */
export const EPROTOTYPE = 91;
/** Protocol not available. */
export const ENOPROTOOPT = 92;
/** Protocol not supported. */
export const EPROTONOSUPPORT = 93;
/** Operation not supported (same value as ENOTSUP on Linux). */
export const EOPNOTSUPP = 95;
/** Alias of {@linkcode EOPNOTSUPP}. */
export const ENOTSUP: number = EOPNOTSUPP;
/** Address family not supported by protocol. */
export const EAFNOSUPPORT = 97;
/** Address already in use. */
export const EADDRINUSE = 98;
/** Cannot assign requested address. */
export const EADDRNOTAVAIL = 99;
/** Software caused connection abort. */
export const ECONNABORTED = 103;
/** Connection reset by peer. */
export const ECONNRESET = 104;
/** No buffer space available. */
export const ENOBUFS = 105;
/** Transport endpoint is already connected. */
export const EISCONN = 106;
/** Transport endpoint is not connected. */
export const ENOTCONN = 107;
/** Cannot send after transport endpoint shutdown. */
export const ESHUTDOWN = 108;
/** Too many references: cannot splice. */
export const ETOOMANYREFS = 109;
/** Connection timed out. */
export const ETIMEDOUT = 110;
/** Connection refused. */
export const ECONNREFUSED = 111;
/** Operation already in progress. */
export const EALREADY = 114;
/** Operation now in progress. */
export const EINPROGRESS = 115;
/** Stale file handle. */
export const ESTALE = 116;
/** Disk quota exceeded. */
export const EDQUOT = 122;
/** Operation canceled. */
export const ECANCELED = 125;

/** errno → [name, description]; aliases (EWOULDBLOCK, ENOTSUP) map to their primary name. */
const ERRNO_TABLE: ReadonlyMap<number, readonly [string, string]> = new Map([
  [EPERM, ["EPERM", "Operation not permitted"]],
  [ENOENT, ["ENOENT", "No such file or directory"]],
  [ESRCH, ["ESRCH", "No such process"]],
  [EINTR, ["EINTR", "Interrupted system call"]],
  [EIO, ["EIO", "Input/output error"]],
  [ENXIO, ["ENXIO", "No such device or address"]],
  [E2BIG, ["E2BIG", "Argument list too long"]],
  [EBADF, ["EBADF", "Bad file descriptor"]],
  [ECHILD, ["ECHILD", "No child processes"]],
  [EAGAIN, ["EAGAIN", "Resource temporarily unavailable"]],
  [ENOMEM, ["ENOMEM", "Cannot allocate memory"]],
  [EACCES, ["EACCES", "Permission denied"]],
  [EFAULT, ["EFAULT", "Bad address"]],
  [ENOTBLK, ["ENOTBLK", "Block device required"]],
  [EBUSY, ["EBUSY", "Device or resource busy"]],
  [EEXIST, ["EEXIST", "File exists"]],
  [EXDEV, ["EXDEV", "Invalid cross-device link"]],
  [ENODEV, ["ENODEV", "No such device"]],
  [ENOTDIR, ["ENOTDIR", "Not a directory"]],
  [EISDIR, ["EISDIR", "Is a directory"]],
  [EINVAL, ["EINVAL", "Invalid argument"]],
  [ENFILE, ["ENFILE", "Too many open files in system"]],
  [EMFILE, ["EMFILE", "Too many open files"]],
  [ENOTTY, ["ENOTTY", "Inappropriate ioctl for device"]],
  [ETXTBSY, ["ETXTBSY", "Text file busy"]],
  [EFBIG, ["EFBIG", "File too large"]],
  [ENOSPC, ["ENOSPC", "No space left on device"]],
  [ESPIPE, ["ESPIPE", "Illegal seek"]],
  [EROFS, ["EROFS", "Read-only file system"]],
  [EMLINK, ["EMLINK", "Too many links"]],
  [EPIPE, ["EPIPE", "Broken pipe"]],
  [EDOM, ["EDOM", "Numerical argument out of domain"]],
  [ERANGE, ["ERANGE", "Numerical result out of range"]],
  [EDEADLK, ["EDEADLK", "Resource deadlock avoided"]],
  [ENAMETOOLONG, ["ENAMETOOLONG", "File name too long"]],
  [ENOLCK, ["ENOLCK", "No locks available"]],
  [ENOSYS, ["ENOSYS", "Function not implemented"]],
  [ENOTEMPTY, ["ENOTEMPTY", "Directory not empty"]],
  [ELOOP, ["ELOOP", "Too many levels of symbolic links"]],
  [ENOMSG, ["ENOMSG", "No message of desired type"]],
  [ENODATA, ["ENODATA", "No data available"]],
  [ETIME, ["ETIME", "Timer expired"]],
  [EPROTO, ["EPROTO", "Protocol error"]],
  [EOVERFLOW, ["EOVERFLOW", "Value too large for defined data type"]],
  [EBADFD, ["EBADFD", "File descriptor in bad state"]],
  [EILSEQ, ["EILSEQ", "Invalid or incomplete multibyte or wide character"]],
  [ENOTSOCK, ["ENOTSOCK", "Socket operation on non-socket"]],
  [EDESTADDRREQ, ["EDESTADDRREQ", "Destination address required"]],
  [EMSGSIZE, ["EMSGSIZE", "Message too long"]],
  [EPROTOTYPE, ["EPROTOTYPE", "Protocol wrong type for socket"]],
  [ENOPROTOOPT, ["ENOPROTOOPT", "Protocol not available"]],
  [EPROTONOSUPPORT, ["EPROTONOSUPPORT", "Protocol not supported"]],
  [EOPNOTSUPP, ["EOPNOTSUPP", "Operation not supported"]],
  [EAFNOSUPPORT, ["EAFNOSUPPORT", "Address family not supported by protocol"]],
  [EADDRINUSE, ["EADDRINUSE", "Address already in use"]],
  [EADDRNOTAVAIL, ["EADDRNOTAVAIL", "Cannot assign requested address"]],
  [ECONNABORTED, ["ECONNABORTED", "Software caused connection abort"]],
  [ECONNRESET, ["ECONNRESET", "Connection reset by peer"]],
  [ENOBUFS, ["ENOBUFS", "No buffer space available"]],
  [EISCONN, ["EISCONN", "Transport endpoint is already connected"]],
  [ENOTCONN, ["ENOTCONN", "Transport endpoint is not connected"]],
  [ESHUTDOWN, ["ESHUTDOWN", "Cannot send after transport endpoint shutdown"]],
  [ETOOMANYREFS, ["ETOOMANYREFS", "Too many references"]],
  [ETIMEDOUT, ["ETIMEDOUT", "Connection timed out"]],
  [ECONNREFUSED, ["ECONNREFUSED", "Connection refused"]],
  [EALREADY, ["EALREADY", "Operation already in progress"]],
  [EINPROGRESS, ["EINPROGRESS", "Operation now in progress"]],
  [ESTALE, ["ESTALE", "Stale file handle"]],
  [EDQUOT, ["EDQUOT", "Disk quota exceeded"]],
  [ECANCELED, ["ECANCELED", "Operation canceled"]],
]);

/**
 * Symbolic name of an errno value, such as `"EAGAIN"`; `"E<number>"` for a
 * value this table does not know.
 *
 * @example
 * ```ts
 * import { errnoName } from "./errno.ts";
 * errnoName(2); // "ENOENT"
 * errnoName(4095); // "E4095"
 * ```
 */
export function errnoName(errno: number): string {
  return ERRNO_TABLE.get(errno)?.[0] ?? `E${errno}`;
}

/** Human-readable description of an errno value (as strerror would give it). */
export function errnoDescription(errno: number): string {
  return ERRNO_TABLE.get(errno)?.[1] ?? `Unknown error ${errno}`;
}

/**
 * A failed libc call. `errno` is the value read right after the failing call;
 * `code` is its symbolic name (`"EAGAIN"`, or `"E123"` when unknown).
 * Wrappers also throw it for arguments they refuse before calling libc (for
 * example a unix socket path that is too long gives `ENAMETOOLONG`), so a
 * caller has one error type to handle.
 */
export class SyscallError extends Error {
  /** The libc function that failed, such as `"recvmsg"`. */
  readonly syscall: string;
  /** The errno value. */
  readonly errno: number;
  /** Symbolic errno name, such as `"EBADF"`. */
  readonly code: string;

  /**
   * Builds the error for `syscall` failing with `errno`.
   *
   * @param syscall libc function name
   * @param errno errno value
   * @param detail optional context appended to the message (a path, an fd)
   */
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    const suffix = detail === undefined ? "" : ` (${detail})`;
    super(`${syscall} failed: ${code}: ${errnoDescription(errno)}${suffix}`);
    this.name = "SyscallError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/**
 * True when `error` is a {@linkcode SyscallError} with the given code
 * (`isErrno(e, "EAGAIN")`) or errno value (`isErrno(e, EAGAIN)`).
 */
export function isErrno(error: unknown, codeOrErrno: string | number): boolean {
  if (!(error instanceof SyscallError)) return false;
  return typeof codeOrErrno === "number" ? error.errno === codeOrErrno : error.code === codeOrErrno;
}
