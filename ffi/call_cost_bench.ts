/**
 * Cost per call of the hot wrappers (`deno bench --allow-all ffi/`). Numbers
 * include the system call itself, which dominates on most machines.
 *
 * @module
 */

import { EFD_CLOEXEC, EFD_NONBLOCK, EPOLL_CTL_ADD, EPOLLIN } from "./constants.ts";
import {
  epollCreate,
  epollCtl,
  EpollEvents,
  epollWait,
  eventfd,
  eventfdRead,
  eventfdWrite,
} from "./events.ts";
import { pread, preadv } from "./fd.ts";
import { IovecArray } from "./iovec.ts";
import { ftruncate, memfdCreate, pointerValue } from "./memory.ts";
import { receiveMessage, sendMessage, socketPair } from "./socket.ts";

const memfd = memfdCreate("bench");
ftruncate(memfd, 1 << 20);
const page = new Uint8Array(new ArrayBuffer(4096));
const iov = new IovecArray(2);
iov.set(0, pointerValue(page), 2048);
iov.set(1, pointerValue(page) + 2048, 2048);
const counter = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
const epfd = epollCreate();
epollCtl(epfd, EPOLL_CTL_ADD, counter, EPOLLIN, 1);
const events = new EpollEvents(8);
const [left, right] = socketPair();
const message = new Uint8Array(new ArrayBuffer(64));
const inbox = new Uint8Array(new ArrayBuffer(256));

Deno.bench("eventfdWrite", () => {
  eventfdWrite(counter);
});

Deno.bench("eventfdRead (non-blocking, counter set)", () => {
  eventfdWrite(counter);
  eventfdRead(counter);
});

Deno.bench("pread 4 KiB from a memfd", () => {
  pread(memfd, page, 8192);
});

Deno.bench("preadv 4 KiB in 2 iovecs from a memfd", () => {
  preadv(memfd, iov, 2, 8192);
});

Deno.bench("epollWait, one ready fd, timeout 0", () => {
  epollWait(epfd, events, 0);
});

Deno.bench("sendMessage + receiveMessage 64 bytes, no fds", () => {
  sendMessage(left, message);
  receiveMessage(right, inbox, 4);
});

Deno.bench("pointerValue", () => {
  pointerValue(page);
});
