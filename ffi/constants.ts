/**
 * Flag and request values for the libc wrappers in `ffi/`, as defined for
 * Linux on x86-64 (glibc headers and the kernel's uapi). Values are plain
 * numbers; 32-bit masks with the top bit set (EPOLLET) are written as
 * unsigned so they survive `>>> 0`.
 *
 * @module
 */

// open(2) flags.
/** Open for reading only. */
export const O_RDONLY = 0;
/** Open for writing only. */
export const O_WRONLY = 1;
/** Open for reading and writing. */
export const O_RDWR = 2;
/** Mask of the access-mode bits. */
export const O_ACCMODE = 3;
/** Create the file if it does not exist. */
export const O_CREAT = 0o100;
/** With O_CREAT: fail if the file exists. */
export const O_EXCL = 0o200;
/** Do not make a terminal the controlling terminal. */
export const O_NOCTTY = 0o400;
/** Truncate to length 0. */
export const O_TRUNC = 0o1000;
/** Append on each write. */
export const O_APPEND = 0o2000;
/** Non-blocking I/O. */
export const O_NONBLOCK = 0o4000;
/** Synchronized data integrity writes. */
export const O_DSYNC = 0o10000;
/** Direct I/O, bypassing the page cache. */
export const O_DIRECT = 0o40000;
/** Fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
/** Do not follow a trailing symbolic link. */
export const O_NOFOLLOW = 0o400000;
/** Do not update the access time. */
export const O_NOATIME = 0o1000000;
/** Close on exec. */
export const O_CLOEXEC = 0o2000000;
/** Synchronized file integrity writes. */
export const O_SYNC = 0o4010000;
/** Path-only descriptor. */
export const O_PATH = 0o10000000;
/** Unnamed temporary file in the given directory. */
export const O_TMPFILE = 0o20200000;

// File mode bits (struct stat st_mode).
/** Mask of the file-type bits. */
export const S_IFMT = 0o170000;
/** Socket. */
export const S_IFSOCK = 0o140000;
/** Symbolic link. */
export const S_IFLNK = 0o120000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Block device. */
export const S_IFBLK = 0o060000;
/** Directory. */
export const S_IFDIR = 0o040000;
/** Character device. */
export const S_IFCHR = 0o020000;
/** FIFO. */
export const S_IFIFO = 0o010000;

// fcntl(2).
/** Duplicate an fd. */
export const F_DUPFD = 0;
/** Get fd flags (FD_CLOEXEC). */
export const F_GETFD = 1;
/** Set fd flags (FD_CLOEXEC). */
export const F_SETFD = 2;
/** Get file status flags (O_*). */
export const F_GETFL = 3;
/** Set file status flags (O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME). */
export const F_SETFL = 4;
/** Set a pipe's capacity. */
export const F_SETPIPE_SZ = 1031;
/** Get a pipe's capacity. */
export const F_GETPIPE_SZ = 1032;
/** Duplicate an fd with FD_CLOEXEC set. */
export const F_DUPFD_CLOEXEC = 1030;
/** Add memfd seals. */
export const F_ADD_SEALS = 1033;
/** Get memfd seals. */
export const F_GET_SEALS = 1034;
/** The close-on-exec fd flag. */
export const FD_CLOEXEC = 1;
/** Seal: no further seals may be added. */
export const F_SEAL_SEAL = 1;
/** Seal: the file may not shrink. */
export const F_SEAL_SHRINK = 2;
/** Seal: the file may not grow. */
export const F_SEAL_GROW = 4;
/** Seal: the contents may not be written. */
export const F_SEAL_WRITE = 8;

// Sockets.
/** Local (unix domain) sockets. */
export const AF_UNIX = 1;
/** Byte stream socket. */
export const SOCK_STREAM = 1;
/** Datagram socket. */
export const SOCK_DGRAM = 2;
/** Sequenced packet socket. */
export const SOCK_SEQPACKET = 5;
/** socket()/accept4() flag: non-blocking. */
export const SOCK_NONBLOCK = 0o4000;
/** socket()/accept4() flag: close on exec. */
export const SOCK_CLOEXEC = 0o2000000;
/** Socket-level options and control messages. */
export const SOL_SOCKET = 1;
/** Control message carrying file descriptors. */
export const SCM_RIGHTS = 1;
/** Control message carrying process credentials. */
export const SCM_CREDENTIALS = 2;
/** Socket option: send buffer size. */
export const SO_SNDBUF = 7;
/** Socket option: receive buffer size. */
export const SO_RCVBUF = 8;
/** Socket option: receive SCM_CREDENTIALS. */
export const SO_PASSCRED = 16;
/** Socket option: credentials of the connected peer (struct ucred). */
export const SO_PEERCRED = 17;
/** shutdown(): no more receptions. */
export const SHUT_RD = 0;
/** shutdown(): no more transmissions. */
export const SHUT_WR = 1;
/** shutdown(): neither. */
export const SHUT_RDWR = 2;
/** Maximum length of a sockaddr_un path, including the terminating NUL. */
export const UNIX_PATH_MAX = 108;
/** Maximum number of fds the kernel accepts in one SCM_RIGHTS message. */
export const SCM_MAX_FD = 253;

// send/recv flags.
/** Out-of-band data. */
export const MSG_OOB = 0x1;
/** Peek at incoming data without removing it. */
export const MSG_PEEK = 0x2;
/** Do not route. */
export const MSG_DONTROUTE = 0x4;
/** recvmsg result flag: control data was truncated (fds were lost). */
export const MSG_CTRUNC = 0x8;
/** recvmsg result flag: datagram was truncated. */
export const MSG_TRUNC = 0x20;
/** Non-blocking for this call only. */
export const MSG_DONTWAIT = 0x40;
/** End of record. */
export const MSG_EOR = 0x80;
/** Wait for the full request. */
export const MSG_WAITALL = 0x100;
/** Do not raise SIGPIPE on a broken stream; return EPIPE. */
export const MSG_NOSIGNAL = 0x4000;
/** Set close-on-exec on fds received with SCM_RIGHTS. */
export const MSG_CMSG_CLOEXEC = 0x40000000;

// memfd_create(2).
/** memfd: close on exec. */
export const MFD_CLOEXEC = 0x1;
/** memfd: allow seals. */
export const MFD_ALLOW_SEALING = 0x2;
/** memfd: back with huge pages. */
export const MFD_HUGETLB = 0x4;
/** memfd: not executable, sealed. */
export const MFD_NOEXEC_SEAL = 0x8;
/** memfd: executable. */
export const MFD_EXEC = 0x10;

// mmap(2).
/** Pages may not be accessed. */
export const PROT_NONE = 0x0;
/** Pages may be read. */
export const PROT_READ = 0x1;
/** Pages may be written. */
export const PROT_WRITE = 0x2;
/** Pages may be executed. */
export const PROT_EXEC = 0x4;
/** Share the mapping with other mappers of the file. */
export const MAP_SHARED = 0x01;
/** Private copy-on-write mapping. */
export const MAP_PRIVATE = 0x02;
/** MAP_SHARED that rejects unknown flags. */
export const MAP_SHARED_VALIDATE = 0x03;
/** Place the mapping exactly at the given address. */
export const MAP_FIXED = 0x10;
/** Anonymous mapping, not backed by a file. */
export const MAP_ANONYMOUS = 0x20;
/** Lock the pages in memory. */
export const MAP_LOCKED = 0x2000;
/** Do not reserve swap space. */
export const MAP_NORESERVE = 0x4000;
/** Prefault the page tables. */
export const MAP_POPULATE = 0x8000;
/** Use huge pages. */
export const MAP_HUGETLB = 0x40000;

// eventfd(2).
/** eventfd: semaphore semantics (read returns 1). */
export const EFD_SEMAPHORE = 0x1;
/** eventfd: non-blocking. */
export const EFD_NONBLOCK = 0o4000;
/** eventfd: close on exec. */
export const EFD_CLOEXEC = 0o2000000;

// epoll(7).
/** epoll_create1: close on exec. */
export const EPOLL_CLOEXEC = 0o2000000;
/** epoll_ctl: register an fd. */
export const EPOLL_CTL_ADD = 1;
/** epoll_ctl: deregister an fd. */
export const EPOLL_CTL_DEL = 2;
/** epoll_ctl: change an fd's events or data. */
export const EPOLL_CTL_MOD = 3;
/** Readable. */
export const EPOLLIN = 0x001;
/** Urgent data. */
export const EPOLLPRI = 0x002;
/** Writable. */
export const EPOLLOUT = 0x004;
/** Error condition (always reported). */
export const EPOLLERR = 0x008;
/** Hang up (always reported). */
export const EPOLLHUP = 0x010;
/** Normal data readable. */
export const EPOLLRDNORM = 0x040;
/** Peer closed its writing half. */
export const EPOLLRDHUP = 0x2000;
/** Wake only one of several epoll instances waiting on the same fd. */
export const EPOLLEXCLUSIVE = 0x10000000;
/** Disarm after one event. */
export const EPOLLONESHOT = 0x40000000;
/** Edge-triggered. */
export const EPOLLET = 0x80000000;

// poll(2).
/** Readable. */
export const POLLIN = 0x001;
/** Urgent data. */
export const POLLPRI = 0x002;
/** Writable. */
export const POLLOUT = 0x004;
/** Error condition. */
export const POLLERR = 0x008;
/** Hang up. */
export const POLLHUP = 0x010;
/** Invalid fd (not open). */
export const POLLNVAL = 0x020;
/** Peer closed its writing half. */
export const POLLRDHUP = 0x2000;

// fallocate(2).
/** Do not change the file size. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** Deallocate the range (requires KEEP_SIZE); it then reads as zeros. */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** Remove the range, shifting the rest down. */
export const FALLOC_FL_COLLAPSE_RANGE = 0x08;
/** Zero the range. */
export const FALLOC_FL_ZERO_RANGE = 0x10;
/** Insert a hole, shifting the rest up. */
export const FALLOC_FL_INSERT_RANGE = 0x20;
/** Unshare shared blocks in the range. */
export const FALLOC_FL_UNSHARE_RANGE = 0x40;

// ioctl(2) requests.
/** Block device size in bytes, as u64 (_IOR(0x12, 114, size_t)). */
export const BLKGETSIZE64 = 0x80081272;
/** Block device logical sector size, as int. */
export const BLKSSZGET = 0x1268;

/** Maximum number of iovecs in one readv/writev-family call. */
export const IOV_MAX = 1024;
/** Directory fd meaning "the current directory" for *at() calls. */
export const AT_FDCWD: number = -100;

/** lseek whence: from the start of the file. */
export const SEEK_SET = 0;
/** lseek whence: next byte at or after the offset that holds data. */
export const SEEK_DATA = 3;
/** lseek whence: next hole at or after the offset (end of file counts as a hole). */
export const SEEK_HOLE = 4;

// *at(2) flags.
/** *at calls: with an empty path, operate on the dirfd itself. */
export const AT_EMPTY_PATH = 0x1000;
/** *at calls: do not follow a trailing symbolic link. */
export const AT_SYMLINK_NOFOLLOW = 0x100;
/** unlinkat: remove a directory (rmdir) instead of a file. */
export const AT_REMOVEDIR = 0x200;
/** faccessat: check with the effective ids instead of the real ones (same bit as AT_REMOVEDIR). */
export const AT_EACCESS = 0x200;
/** linkat: follow a trailing symbolic link (needed for /proc/self/fd/N). */
export const AT_SYMLINK_FOLLOW = 0x400;
/** statx/fstatat: do not trigger an automount on the last component. */
export const AT_NO_AUTOMOUNT = 0x800;

// faccessat(2) modes.
/** Test for existence. */
export const F_OK = 0;
/** Test for execute/search permission. */
export const X_OK = 1;
/** Test for write permission. */
export const W_OK = 2;
/** Test for read permission. */
export const R_OK = 4;

// renameat2(2) flags.
/** Fail with EEXIST instead of replacing the target. */
export const RENAME_NOREPLACE = 1;
/** Atomically exchange the source and the target (both must exist). */
export const RENAME_EXCHANGE = 2;
/** Leave an overlay/union whiteout object at the source. */
export const RENAME_WHITEOUT = 4;

// openat2(2) resolve flags (struct open_how.resolve).
/** Do not cross mount points (bind mounts included). */
export const RESOLVE_NO_XDEV = 0x01;
/** Do not follow magic links such as /proc/self/fd/N. */
export const RESOLVE_NO_MAGICLINKS = 0x02;
/** Do not follow any symbolic link, in any component. */
export const RESOLVE_NO_SYMLINKS = 0x04;
/** Fail with EXDEV when resolution would leave the dirfd's tree ("..", absolute paths or links). */
export const RESOLVE_BENEATH = 0x08;
/** Resolve as if the dirfd were the root directory ("/" and ".." stay inside it). */
export const RESOLVE_IN_ROOT = 0x10;
/** Only succeed from the dentry cache; EAGAIN otherwise. */
export const RESOLVE_CACHED = 0x20;

// Directory entry types (linux_dirent64.d_type).
/** Type not known: the caller must stat. */
export const DT_UNKNOWN = 0;
/** FIFO. */
export const DT_FIFO = 1;
/** Character device. */
export const DT_CHR = 2;
/** Directory. */
export const DT_DIR = 4;
/** Block device. */
export const DT_BLK = 6;
/** Regular file. */
export const DT_REG = 8;
/** Symbolic link. */
export const DT_LNK = 10;
/** Socket. */
export const DT_SOCK = 12;
/** Whiteout (union filesystems). */
export const DT_WHT = 14;

// utimensat(2) special nanosecond values.
/** tv_nsec value: set this time to the current time. */
export const UTIME_NOW: number = (1 << 30) - 1;
/** tv_nsec value: leave this time unchanged. */
export const UTIME_OMIT: number = (1 << 30) - 2;

// statx(2) mask bits.
/** statx: the fields that struct stat has. */
export const STATX_BASIC_STATS = 0x7ff;
/** statx: the inode number (stx_ino); the device (stx_dev_*) always comes. */
export const STATX_INO = 0x100;
/** statx: the mount id (stx_mnt_id). */
export const STATX_MNT_ID = 0x1000;

// System call numbers for syscall(2) (x86-64).
/** getdents64(2). */
export const SYS_getdents64 = 217;
/** openat2(2), Linux 5.6+. */
export const SYS_openat2 = 437;
/** open_tree(2), Linux 5.2+. */
export const SYS_open_tree = 428;
/** open_tree: a detached copy of the mount (needs CAP_SYS_ADMIN); without it, an O_PATH fd. */
export const OPEN_TREE_CLONE = 0x1;
/** open_tree: close on exec (the value of O_CLOEXEC). */
export const OPEN_TREE_CLOEXEC = 0o2000000;
/** io_uring_setup(2), Linux 5.1+. */
export const SYS_io_uring_setup = 425;
/** io_uring_enter(2). */
export const SYS_io_uring_enter = 426;
/** io_uring_register(2). */
export const SYS_io_uring_register = 427;

// preadv2/pwritev2 and io_uring rw_flags (RWF_*).
/** High-priority (polled) I/O. */
export const RWF_HIPRI = 0x1;
/** Per-write O_DSYNC: the data is durable when the write returns. */
export const RWF_DSYNC = 0x2;
/** Per-write O_SYNC. */
export const RWF_SYNC = 0x4;
/** Fail with EAGAIN instead of blocking. */
export const RWF_NOWAIT = 0x8;

// io_uring (include/uapi/linux/io_uring.h).
/** mmap offset of the submission queue ring. */
export const IORING_OFF_SQ_RING = 0;
/** mmap offset of the completion queue ring. */
export const IORING_OFF_CQ_RING = 0x8000000;
/** mmap offset of the SQE array. */
export const IORING_OFF_SQES = 0x10000000;
/** io_uring_setup flag: completion queue size given in cq_entries. */
export const IORING_SETUP_CQSIZE = 1 << 3;
/** io_uring_setup flag: clamp too-large sizes instead of failing with EINVAL. */
export const IORING_SETUP_CLAMP = 1 << 4;
/** io_uring_setup flag: keep submitting a batch past an SQE that fails to prepare (5.18+). */
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
/** Feature: the SQ and CQ rings share one mapping. */
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
/** Feature: completions are never dropped when the CQ ring overflows. */
export const IORING_FEAT_NODROP = 1 << 1;
/** Feature: submission data (such as iovecs) is consumed at submit time. */
export const IORING_FEAT_SUBMIT_STABLE = 1 << 2;
/** io_uring_enter flag: wait for (or flush) completions. */
export const IORING_ENTER_GETEVENTS = 1 << 0;
/** SQ ring flag: the SQ polling thread sleeps and needs a wakeup. */
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
/** SQ ring flag: completions overflowed the CQ ring and wait in the kernel. */
export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
/** fsync_flags: fdatasync semantics. */
export const IORING_FSYNC_DATASYNC = 1 << 0;
/** Opcode: do nothing (completes with 0). */
export const IORING_OP_NOP = 0;
/** Opcode: preadv2. */
export const IORING_OP_READV = 1;
/** Opcode: pwritev2. */
export const IORING_OP_WRITEV = 2;
/** Opcode: fsync/fdatasync. */
export const IORING_OP_FSYNC = 3;
/** Opcode: fallocate (Linux 5.6+). */
export const IORING_OP_FALLOCATE = 17;
/** Opcode: close an fd (Linux 5.6+). */
export const IORING_OP_CLOSE = 19;
/** SQE flag: the next SQE starts only after this one completed, whatever its result (5.5+). */
export const IOSQE_IO_HARDLINK = 1 << 3;
/** io_uring_register opcode: signal an eventfd on each completion. */
export const IORING_REGISTER_EVENTFD = 4;
/** io_uring_register opcode: stop signalling the eventfd. */
export const IORING_UNREGISTER_EVENTFD = 5;
/** io_uring_register opcode: which opcodes this kernel supports (5.6+). */
export const IORING_REGISTER_PROBE = 8;
/** struct io_uring_probe_op flag: the opcode is supported. */
export const IO_URING_OP_SUPPORTED = 1 << 0;

// statx(2) mask bit for direct-I/O alignment.
/** statx: stx_dio_mem_align and stx_dio_offset_align (Linux 6.1+). */
export const STATX_DIOALIGN = 0x2000;
