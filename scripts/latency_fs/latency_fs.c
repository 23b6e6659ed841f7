// latency_fs: a FUSE filesystem with one file whose reads and writes take
// about as long as an SSD's (default 100 µs), for benchmarking block
// back-ends on storage with latency. Many requests may be in flight at once
// and all of them wait in parallel, so 32 requests in flight finish in about
// one delay, not 32 (like a device's internal parallelism).
//
// The file's bytes are those of a --store file (on tmpfs), mapped shared:
// writes through the filesystem land in that file.
//
// Design, chosen to keep the server's own CPU cost low (it shares the CPUs
// with the back-end under test and the driver):
// - One thread, an event loop, serves everything. None of its work blocks:
//   a read or write is not answered when it arrives; write data is copied
//   into the store, the request is stamped with a deadline (arrival + delay)
//   and appended to a FIFO. Because every request gets the same delay, the
//   FIFO is in deadline order: no timer per request, no locks.
// - The loop sleeps in ppoll() on /dev/fuse with the time left until the
//   oldest deadline (timer slack 1 ns) and answers every request that is due
//   when it wakes. Reads copy from the store at answer time.
//   Measured with fio on 2 vCPUs at queue depth 32: ~5 µs of CPU per
//   request; an earlier version (libfuse's multithreaded loop and a reply
//   thread) took 5.5, 8 and 11.5 µs with 1, 4 and 8 worker threads and
//   reached fewer IOPS. At depth 1 a request costs ~30 µs, two wake-ups
//   (arrival, deadline) on a virtual machine.
// - Files are opened with FOPEN_DIRECT_IO, so every read and write reaches
//   the server (no page cache in between, O_DIRECT opens work), and with
//   FOPEN_PARALLEL_DIRECT_WRITES, so the kernel does not serialise
//   synchronous direct writes on the inode lock (a real device would not).
// - max_background is raised: asynchronous direct I/O (io_uring, Linux AIO)
//   travels as background requests, which the kernel caps at 12 by default.
//
// Usage: latency_fs --store PATH [--delay-us N] [--max-background N]
//                   [--name NAME] [--exit-with-stdin] MOUNTPOINT
// Prints "ready" on stdout once mounted. Stops on SIGINT/SIGTERM/SIGHUP, or
// (--exit-with-stdin) when its stdin reaches end of file, i.e. when the
// process that started it with a pipe has gone; it unmounts on the way out.
// auto_unmount has fusermount3 unmount even when it is killed.

#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_INO 2
// Entries and attributes never change behind the kernel's back.
#define CACHE_SECONDS 86400.0

struct pending {
  struct pending *next;
  fuse_req_t req;
  uint64_t deadline_ns;
  off_t off;
  size_t size;
  int is_write;
};

static struct {
  unsigned char *store;
  size_t size;
  const char *name;
  uint64_t delay_ns;
  unsigned max_background;
} fs;

// The FIFO of requests waiting for their deadline, oldest first. Only the
// loop's thread touches it.
static struct pending *fifo_head, *fifo_tail;

// Hold mode (--hold, for tests that need requests to stay in flight): every
// read and write waits until SIGUSR1 releases those held so far; SIGUSR2
// releases them and ends hold mode. Each held request prints "held N" (N
// held now) on stdout, so a test knows exactly what is in flight.
#define HELD UINT64_MAX
static int holding;
static unsigned held_count;
static volatile sig_atomic_t release_signal, stop_holding_signal;

static void on_release(int sig) {
  if (sig == SIGUSR2) stop_holding_signal = 1;
  release_signal = 1;
}

// Makes every held request due now (the FIFO stays in deadline order).
static void release_held(void) {
  for (struct pending *p = fifo_head; p != NULL; p = p->next) {
    if (p->deadline_ns == HELD) p->deadline_ns = 0;
  }
  held_count = 0;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill_attr(fuse_ino_t ino, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_uid = getuid();
  st->st_gid = getgid();
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0644;
    st->st_nlink = 1;
    st->st_size = (off_t)fs.size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((fs.size + 511) / 512);
  }
}

static void answer(struct pending *p) {
  if (p->is_write) {
    fuse_reply_write(p->req, p->size);
  } else {
    fuse_reply_buf(p->req, (const char *)fs.store + p->off, p->size);
  }
  free(p);
}

// Queues a read or write to be answered once the delay has passed.
static void delay_reply(fuse_req_t req, off_t off, size_t size, int is_write, uint64_t arrived) {
  struct pending *p = malloc(sizeof(*p));
  if (p == NULL) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  *p = (struct pending){NULL, req, holding ? HELD : arrived + fs.delay_ns, off, size, is_write};
  if (fifo_tail != NULL) {
    fifo_tail->next = p;
  } else {
    fifo_head = p;
  }
  fifo_tail = p;
  if (holding) {
    printf("held %u\n", ++held_count);
    fflush(stdout);
  }
}

// Answers every request whose deadline is before `now` (all when now is
// UINT64_MAX).
static void answer_due(uint64_t now) {
  while (fifo_head != NULL && fifo_head->deadline_ns <= now) {
    struct pending *p = fifo_head;
    fifo_head = p->next;
    if (fifo_head == NULL) fifo_tail = NULL;
    answer(p);
  }
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  (void)userdata;
  conn->max_background = fs.max_background;
  conn->congestion_threshold = fs.max_background * 3 / 4;
  // One copy from /dev/fuse into our buffer is cheaper than a pipe round trip
  // for 4 KiB requests.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (parent != FUSE_ROOT_ID || strcmp(name, fs.name) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  e.ino = FILE_INO;
  e.attr_timeout = CACHE_SECONDS;
  e.entry_timeout = CACHE_SECONDS;
  fill_attr(FILE_INO, &e.attr);
  fuse_reply_entry(req, &e);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  fill_attr(ino, &st);
  fuse_reply_attr(req, &st, CACHE_SECONDS);
}

// Only no-op changes are accepted: the file's size is the store's.
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
  (void)fi;
  if (ino != FILE_INO || ((to_set & FUSE_SET_ATTR_SIZE) && (size_t)attr->st_size != fs.size) ||
      (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
    fuse_reply_err(req, EPERM);
    return;
  }
  struct stat st;
  fill_attr(ino, &st);
  fuse_reply_attr(req, &st, CACHE_SECONDS);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (ino != FILE_INO) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (fi->flags & O_TRUNC) {
    fuse_reply_err(req, EPERM);
    return;
  }
  // Answered by hand: libfuse 3.14 has no field for PARALLEL_DIRECT_WRITES.
  struct fuse_open_out out;
  memset(&out, 0, sizeof(out));
  out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
  struct iovec iov = {&out, sizeof(out)};
  fuse_reply_iov(req, &iov, 1);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  uint64_t arrived = now_ns();
  if (off < 0 || (size_t)off >= fs.size) {
    size = 0;
    off = 0;
  } else if (size > fs.size - (size_t)off) {
    size = fs.size - (size_t)off;
  }
  delay_reply(req, off, size, 0, arrived);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  uint64_t arrived = now_ns();
  if (off < 0 || (size_t)off + size > fs.size) {
    fuse_reply_err(req, ENOSPC); // a fixed-size disk image
    return;
  }
  // The buffer is libfuse's receive buffer, reused for the next request: copy now.
  memcpy(fs.store + off, buf, size);
  delay_reply(req, off, size, 1, arrived);
}

// The store is memory (tmpfs): there is nothing more durable to reach.
static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  (void)ino;
  (void)datasync;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  (void)fi;
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  char buf[512];
  size_t used = 0;
  const char *names[] = {".", "..", fs.name};
  const fuse_ino_t inos[] = {FUSE_ROOT_ID, FUSE_ROOT_ID, FILE_INO};
  for (off_t i = off; i < 3; i++) {
    struct stat st;
    fill_attr(inos[i], &st);
    size_t need = fuse_add_direntry(req, buf + used, sizeof(buf) - used, names[i], &st, i + 1);
    if (need > sizeof(buf) - used || used + need > size) break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  sv.f_bsize = 4096;
  sv.f_frsize = 4096;
  sv.f_blocks = fs.size / 4096;
  sv.f_files = 2;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
    .init = ll_init,
    .lookup = ll_lookup,
    .getattr = ll_getattr,
    .setattr = ll_setattr,
    .open = ll_open,
    .read = ll_read,
    .write = ll_write,
    .flush = ll_flush,
    .release = ll_release,
    .fsync = ll_fsync,
    .readdir = ll_readdir,
    .statfs = ll_statfs,
};

// Requests taken from /dev/fuse per wake-up before due answers go out again.
#define RECEIVE_BATCH 64

// The event loop; returns 0 on a clean stop (signal, unmount, end of stdin).
static int serve(struct fuse_session *se, int watch_stdin, const sigset_t *waitmask) {
  int fd = fuse_session_fd(se);
  // Non-blocking, so a wake-up can drain what is queued and stop at EAGAIN.
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    perror("latency_fs: fcntl /dev/fuse");
    return 1;
  }
  struct fuse_buf fbuf = {.mem = NULL};
  int rc = 0;
  while (!fuse_session_exited(se)) {
    if (release_signal) {
      release_signal = 0;
      if (stop_holding_signal) holding = 0;
      release_held();
    }
    uint64_t now = now_ns();
    answer_due(now);
    struct timespec ts, *timeout = NULL;
    if (fifo_head != NULL && fifo_head->deadline_ns != HELD) {
      uint64_t left = fifo_head->deadline_ns - now;
      ts = (struct timespec){(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
      timeout = &ts;
    }
    struct pollfd pfd[2] = {{fd, POLLIN, 0}, {0, POLLIN, 0}};
    // The termination signals are unblocked only while waiting here, so
    // one cannot slip in between the exited check and the wait.
    int n = ppoll(pfd, watch_stdin ? 2 : 1, timeout, waitmask);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("latency_fs: ppoll");
      rc = 1;
      break;
    }
    if (watch_stdin && pfd[1].revents != 0) {
      char c[64];
      ssize_t got = read(0, c, sizeof(c));
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) break;
    }
    if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break; // unmounted
    if ((pfd[0].revents & POLLIN) == 0) continue;
    for (int i = 0; i < RECEIVE_BATCH && !fuse_session_exited(se); i++) {
      int got = fuse_session_receive_buf(se, &fbuf);
      if (got == -EAGAIN || got == -EINTR) break;
      if (got <= 0) { // 0 or -ENODEV: unmounted; the session is marked exited
        if (got < 0 && got != -ENODEV) rc = 1;
        break;
      }
      fuse_session_process_buf(se, &fbuf);
    }
  }
  free(fbuf.mem);
  return rc;
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s --store PATH [--delay-us N] [--max-background N] [--name NAME]\n"
          "          [--exit-with-stdin] [--hold] MOUNTPOINT\n"
          "  --store PATH         file (on tmpfs) holding the image's bytes; its size is the\n"
          "                       image's size\n"
          "  --delay-us N         delay of every read and write, in µs (default 100)\n"
          "  --max-background N   kernel limit of asynchronous requests (default 256)\n"
          "  --name NAME          the image file's name (default disk.img)\n"
          "  --exit-with-stdin    stop and unmount when stdin reaches end of file\n"
          "  --hold               hold every read and write until SIGUSR1 (SIGUSR2: and\n"
          "                       stop holding); prints \"held N\" for each one held\n",
          argv0);
}

static long parse_number(const char *s, const char *what, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v > max) {
    fprintf(stderr, "latency_fs: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  const char *store_path = NULL, *mountpoint = NULL;
  long delay_us = 100, max_background = 256;
  int exit_with_stdin = 0;
  fs.name = "disk.img";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--store") == 0 && i + 1 < argc) {
      store_path = argv[++i];
    } else if (strcmp(a, "--delay-us") == 0 && i + 1 < argc) {
      delay_us = parse_number(argv[++i], "--delay-us", 10000000);
    } else if (strcmp(a, "--max-background") == 0 && i + 1 < argc) {
      max_background = parse_number(argv[++i], "--max-background", 65535);
    } else if (strcmp(a, "--name") == 0 && i + 1 < argc) {
      fs.name = argv[++i];
    } else if (strcmp(a, "--exit-with-stdin") == 0) {
      exit_with_stdin = 1;
    } else if (strcmp(a, "--hold") == 0) {
      holding = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(argv[0]);
      return 0;
    } else if (a[0] != '-' && mountpoint == NULL) {
      mountpoint = a;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  if (store_path == NULL || mountpoint == NULL || max_background < 1 ||
      strchr(fs.name, '/') != NULL || fs.name[0] == '\0') {
    usage(argv[0]);
    return 2;
  }
  fs.delay_ns = (uint64_t)delay_us * 1000u;
  fs.max_background = (unsigned)max_background;

  int fd = open(store_path, O_RDWR | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    fprintf(stderr, "latency_fs: %s: %s\n", store_path, strerror(errno));
    return 1;
  }
  fs.size = (size_t)st.st_size;
  if (fs.size == 0) {
    fprintf(stderr, "latency_fs: %s is empty\n", store_path);
    return 1;
  }
  // Populated up front so page faults do not show up as latency later.
  fs.store = mmap(NULL, fs.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (fs.store == MAP_FAILED) {
    fprintf(stderr, "latency_fs: mmap %s: %s\n", store_path, strerror(errno));
    return 1;
  }
  close(fd);

  // Without this a 100 µs wait may take 150 µs (default slack: 50 µs).
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  char *fuse_argv[] = {argv[0], "-o",
                       "fsname=latency_fs,subtype=latency_fs,auto_unmount,default_permissions",
                       NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
  if (se == NULL) return 1;
  int rc = 1;
  if (fuse_set_signal_handlers(se) != 0) goto out_destroy;
  if (fuse_session_mount(se, mountpoint) != 0) goto out_signals;

  // Termination signals are blocked except inside ppoll (see serve).
  sigset_t term, waitmask;
  sigemptyset(&term);
  sigaddset(&term, SIGINT);
  sigaddset(&term, SIGTERM);
  sigaddset(&term, SIGHUP);
  sigaddset(&term, SIGUSR1);
  sigaddset(&term, SIGUSR2);
  struct sigaction release_action = {.sa_handler = on_release};
  sigaction(SIGUSR1, &release_action, NULL);
  sigaction(SIGUSR2, &release_action, NULL);
  sigprocmask(SIG_BLOCK, &term, &waitmask);
  sigdelset(&waitmask, SIGINT);
  sigdelset(&waitmask, SIGTERM);
  sigdelset(&waitmask, SIGHUP);
  sigdelset(&waitmask, SIGUSR1);
  sigdelset(&waitmask, SIGUSR2);

  printf("ready\n");
  fflush(stdout);
  rc = serve(se, exit_with_stdin, &waitmask);
  // What is still waiting is answered at once: its clients are about to
  // see the file system go away anyway.
  answer_due(UINT64_MAX);

  fuse_session_unmount(se);
out_signals:
  fuse_remove_signal_handlers(se);
out_destroy:
  fuse_session_destroy(se);
  return rc;
}
