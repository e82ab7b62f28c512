/**
 * Typed wrapper around the zcswitch_native addon (bindings/src/*.cc).
 *
 * Thin syscall layer only: memfd/mmap for shareable guest memory, eventfd
 * notifiers, a libuv fd watcher, and AF_UNIX sockets with SCM_RIGHTS. All
 * fds it creates or receives are CLOEXEC. Linux only.
 *
 * Errors from syscalls are `Error`s with message `<function>: <strerror>`,
 * `.code` (errno name, e.g. 'ENOENT'), `.errno` (number) and `.syscall`.
 * Bad arguments throw TypeError / RangeError.
 */
import * as fs from 'fs';
import * as path from 'path';

/** Error thrown by the native layer for a failed syscall. */
export interface NativeError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  /** Only for code 'ECTRUNC' from unixRecvMsg: data bytes that were consumed. */
  bytesRead?: number;
}

/** Instance side of FdWatcher. */
export interface FdWatcher {
  /** Arm the watcher (idempotent). A started watcher keeps the loop alive unless unref()'d. */
  start(): void;
  /** Disarm; onReadable will not be called again until start(). Idempotent. */
  stop(): void;
  /** Stop and release the libuv handle. Idempotent; start() afterwards throws. */
  close(): void;
  /** Let the event loop exit even while this watcher is started. */
  unref(): void;
  /** Undo unref(). */
  ref(): void;
}

export interface FdWatcherConstructor {
  /**
   * Watch `fd` for readability on the calling thread's event loop (works in
   * worker_threads). Created stopped: call start(). onReadable also fires on
   * POLLHUP/POLLERR so the reader sees EOF/the error; after POLLERR the
   * watcher stops itself (libuv behaviour) until start() is called again.
   * Note: libuv puts `fd` into O_NONBLOCK mode, and only one watcher per fd
   * per thread may exist (EEXIST otherwise). Close the watcher before the fd.
   */
  new (fd: number, onReadable: () => void): FdWatcher;
  readonly prototype: FdWatcher;
}

interface NativeBinding {
  memfdCreate(name: string, size: number): number;
  mmapShared(fd: number, size: number, offset?: number, align?: number): ArrayBuffer;
  munmap(buf: ArrayBuffer): void;
  adviseHugePages(buf: ArrayBuffer, len?: number): string | null;
  fdSize(fd: number): number;
  memfdCreateSealed(name: string, size: number): number;
  fdSeals(fd: number): number;
  guardMapping(buf: ArrayBuffer, id: number): void;
  mappingFaultCount(): number;
  takeMappingFaults(): number[];
  closeFd(fd: number): void;
  schedYield(): void;
  pinThisThread(cpu: number): void;
  thisThreadCpus(): number[];
  dupFd(fd: number): number;
  eventfdCreate(): number;
  eventfdSignal(fd: number): void;
  eventfdDrain(fd: number): number;
  eventfdCall(fd: number): number;
  eventfdCallSignal(): number;
  pollReadable(fds: Int32Array, timeoutMs: number, readyOut?: Uint8Array): number;
  FdWatcher: FdWatcherConstructor;
  unixListen(path: string, backlog?: number): number;
  unixAccept(listenFd: number): number;
  unixConnect(path: string, nonBlocking?: boolean): number;
  unixDgramSend(path: string, data: Uint8Array): number;
  unixDgramBind(path: string): number;
  unixSendMsg(fd: number, data: Uint8Array, fds?: number[]): number;
  unixRecvMsg(fd: number, buf: Uint8Array, fdsOut: number[], maxBytes?: number): number;
  setNonBlocking(fd: number, on: boolean): void;
  socketPair(): [number, number];
  tapOpen(name: string): { fd: number; name: string };
  tapSetOffload(fd: number, flags: number): void;
  tapSetMtu(name: string, mtu: number): void;
  fdRead(fd: number, buf: Uint8Array, off: number, len: number): number;
  fdWrite(fd: number, buf: Uint8Array, off: number, len: number): number;
}

const ADDON = 'zcswitch_native.node';

/**
 * Compiled, this file is dist/bindings/index.js, while node-gyp builds into
 * <repo>/bindings/build/. Also cover running straight from bindings/ (ts
 * loaders) and a Debug build. ZCSWITCH_NATIVE overrides everything.
 */
function candidatePaths(): string[] {
  const roots = [
    path.join(__dirname, '..', '..', 'bindings'), // dist/bindings -> bindings
    __dirname, // bindings/index.ts run directly
  ];
  const out: string[] = [];
  if (process.env.ZCSWITCH_NATIVE) out.push(path.resolve(process.env.ZCSWITCH_NATIVE));
  for (const root of roots) {
    out.push(path.join(root, 'build', 'Release', ADDON));
    out.push(path.join(root, 'build', 'Debug', ADDON));
  }
  return out;
}

function loadNative(): NativeBinding {
  const tried = candidatePaths();
  for (const p of tried) {
    if (fs.existsSync(p)) {
      return require(p) as NativeBinding;
    }
  }
  throw new Error(
    `zcswitch_native addon not found (run \`npm run install\` to build it); tried:\n  ${tried.join('\n  ')}`,
  );
}

const native: NativeBinding = loadNative();

// Functions are re-exported as-is (no JS wrapper frame on hot paths).

/** memfd_create(name, MFD_CLOEXEC) + ftruncate(size). Returns the fd. */
export const memfdCreate: (name: string, size: number) => number = native.memfdCreate;

/**
 * mmap(MAP_SHARED, PROT_READ|PROT_WRITE) of `size` bytes at page-aligned
 * `offset` (default 0), at an address that is a multiple of `align` when
 * given (a power of two >= the page size). The ArrayBuffer's GC finalizer unmaps it, unless
 * munmap() did already. size 0 / unaligned offset -> RangeError.
 */
export const mmapShared: (fd: number, size: number, offset?: number, align?: number) => ArrayBuffer = native.mmapShared;

/**
 * memfd_create(MFD_ALLOW_SEALING) + ftruncate(size) + F_ADD_SEALS(F_SEAL_SHRINK
 * | F_SEAL_GROW | F_SEAL_SEAL): a memfd whose size nobody can change any more
 * (ftruncate fails with EPERM), so no holder can pull pages from under another.
 */
export const memfdCreateSealed: (name: string, size: number) => number = native.memfdCreateSealed;

/** fcntl(F_GET_SEALS): the F_SEAL_* bits set on a memfd. EINVAL for a file that cannot be sealed. */
export const fdSeals: (fd: number) => number = native.fdSeals;

/** "dev:ino" of the file behind an fd: two fds with the same identity reach the same memory. */
export function fileIdentity(fd: number): string {
  const st = fs.fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

/** Seal bits (linux/fcntl.h). */
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;

/**
 * Register a live mmapShared mapping with the SIGBUS guard under `id` (a
 * non-negative int32): when an access to it faults (its file shrank), the
 * process survives, the whole mapping becomes zero-filled anonymous memory,
 * and `id` is reported by takeMappingFaults(). Unmapping ends the
 * registration. Not a live mapping, or already guarded -> RangeError; a full
 * table (512 mappings) -> code 'ENOSPC'.
 */
export const guardMapping: (buf: ArrayBuffer, id: number) => void = native.guardMapping;

/** Faults survived so far in guarded mappings (a counter that only grows; an atomic load, no syscall). */
export const mappingFaultCount: () => number = native.mappingFaultCount;

/** The ids of guarded mappings that faulted since the last call (each once), including mappings since unmapped. */
export const takeMappingFaults: () => number[] = native.takeMappingFaults;

/** 2 MiB: the x86-64 huge page; align big mappings to it so they can use PMD entries. */
export const HUGE_PAGE_SIZE = 2 * 1024 * 1024;

/**
 * mmapShared of a whole region (offset 0), 2 MiB aligned when it is at
 * least that big: the switch's Shared Buffers mapping and every VM's use
 * this, so huge pages behind the memfd back all of them.
 */
export function mmapRegion(fd: number, size: number): ArrayBuffer {
  return mmapShared(fd, size, 0, size >= HUGE_PAGE_SIZE ? HUGE_PAGE_SIZE : 0);
}

/**
 * madvise(MADV_HUGEPAGE) + madvise(MADV_COLLAPSE) on a live mmapShared
 * mapping, or on its first `len` bytes (rounded up to 2 MiB). Returns null when the pages were collapsed into huge pages, else
 * the errno name ('EINVAL': kernel without MADV_COLLAPSE; 'EAGAIN' /
 * 'ENOMEM': no contiguous memory). Never throws for a refusal.
 */
export const adviseHugePages: (buf: ArrayBuffer, len?: number) => string | null = native.adviseHugePages;

/**
 * Unmap now and detach `buf` (byteLength becomes 0, views become empty).
 * Throws (code 'EINVAL') for a buffer that is not a live mmapShared mapping,
 * including a second munmap of the same buffer.
 */
export const munmap: (buf: ArrayBuffer) => void = native.munmap;

/** fstat(fd).st_size */
export const fdSize: (fd: number) => number = native.fdSize;

/** sched_yield(2): let another runnable process have this core (idle polling on shared cores). */
export const schedYield: () => void = native.schedYield;

/** sched_setaffinity(2) for the calling thread only: run it on this one CPU (a data-path worker, forwarding.cpus). */
export const pinThisThread: (cpu: number) => void = native.pinThisThread;

/** sched_getaffinity(2) of the calling thread: the CPUs it may run on. */
export const thisThreadCpus: () => number[] = native.thisThreadCpus;

/** close(fd). EBADF (e.g. fd -1) throws. */
export const closeFd: (fd: number) => void = native.closeFd;

/** fcntl(F_DUPFD_CLOEXEC): new fd for the same open file. */
export const dupFd: (fd: number) => number = native.dupFd;

/** eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC) */
export const eventfdCreate: () => number = native.eventfdCreate;

/** Add 1 to the eventfd counter (EAGAIN, i.e. saturated, is ignored). */
export const eventfdSignal: (fd: number) => void = native.eventfdSignal;

/**
 * Add 1 to an eventfd someone else controls (a vring call fd), never
 * blocking: 0 when written, -1 when the write would block (the counter is
 * saturated, and the owner may have cleared O_NONBLOCK on the shared open
 * file). The write runs under a per-thread watchdog timer whose no-op
 * real-time signal interrupts a blocked write within ~2 ms (README,
 * "eventfdCall"). Other errors throw.
 */
export const eventfdCall: (fd: number) => number = native.eventfdCall;

/** The real-time signal eventfdCall's watchdog uses (creating this thread's timer if needed). */
export const eventfdCallSignal: () => number = native.eventfdCallSignal;

/** Read and reset the counter; 0 if it was 0 (EAGAIN). */
export const eventfdDrain: (fd: number) => number = native.eventfdDrain;

/**
 * Blocking poll(2) for POLLIN on every fd (negative entries ignored).
 * Returns the number of ready fds (POLLHUP/POLLERR/POLLNVAL count as ready),
 * 0 on timeout or EINTR. timeoutMs -1 = forever. If readyOut is given
 * (length >= fds.length), readyOut[i] is set to 1 for ready fds, 0 otherwise.
 * Blocks the calling thread: for worker threads.
 */
export const pollReadable: (fds: Int32Array, timeoutMs: number, readyOut?: Uint8Array) => number =
  native.pollReadable;

/** libuv uv_poll_t readable watcher; see FdWatcherConstructor. */
export const FdWatcher: FdWatcherConstructor = native.FdWatcher;

/**
 * socket(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC) + bind + listen
 * (backlog default 128). Does not unlink an existing path (EADDRINUSE).
 * Paths longer than sun_path allows (107 bytes) throw RangeError.
 */
export const unixListen: (path: string, backlog?: number) => number = native.unixListen;

/** accept4(NONBLOCK|CLOEXEC). Returns -1 if nothing to accept (EAGAIN/ECONNABORTED). */
export const unixAccept: (listenFd: number) => number = native.unixAccept;

/**
 * Connect an AF_UNIX stream socket; the fd returned is O_NONBLOCK and CLOEXEC.
 * Default: a blocking connect (it waits while the listener's backlog is
 * full). `nonBlocking`: never waits (what the event loop may call): returns
 * -1 when the backlog is full (EAGAIN: try again later); ENOENT,
 * ECONNREFUSED, ... throw as usual.
 */
export const unixConnect: (path: string, nonBlocking?: boolean) => number = native.unixConnect;

/**
 * Send one datagram to the AF_UNIX datagram socket at `path` ("@name": the
 * abstract namespace, as systemd's NOTIFY_SOCKET may be) from a fresh
 * unbound socket; never blocks. Returns bytes sent, or -1 on EAGAIN.
 */
export const unixDgramSend: (path: string, data: Uint8Array) => number = native.unixDgramSend;

/** Bind an AF_UNIX datagram socket at `path` ("@name": abstract); NONBLOCK, CLOEXEC. Read it with unixRecvMsg. */
export const unixDgramBind: (path: string) => number = native.unixDgramBind;

/**
 * sendmsg(MSG_NOSIGNAL), with one SCM_RIGHTS message carrying `fds` (max 16;
 * data must then be non-empty). Returns bytes written (may be short) or -1 on
 * EAGAIN. EPIPE/ECONNRESET etc. throw.
 */
export const unixSendMsg: (fd: number, data: Uint8Array, fds?: number[]) => number = native.unixSendMsg;

/**
 * recvmsg(MSG_CMSG_CLOEXEC) into buf[0, maxBytes) (default buf.byteLength).
 * Every received fd is pushed onto fdsOut (caller owns them). Returns bytes,
 * 0 on EOF, -1 on EAGAIN. On MSG_CTRUNC the fds that did arrive are pushed
 * and an Error with code 'ECTRUNC' (and .bytesRead) is thrown.
 */
export const unixRecvMsg: (fd: number, buf: Uint8Array, fdsOut: number[], maxBytes?: number) => number =
  native.unixRecvMsg;

/** Set or clear O_NONBLOCK. */
export const setNonBlocking: (fd: number, on: boolean) => void = native.setNonBlocking;

/** socketpair(AF_UNIX, SOCK_STREAM), both ends NONBLOCK|CLOEXEC. */
export const socketPair: () => [number, number] = native.socketPair;

/**
 * Open (creating if needed) the TAP interface `name` on /dev/net/tun with
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte virtio_net_hdr before
 * every frame; non-blocking, CLOEXEC. Needs CAP_NET_ADMIN.
 */
export const tapOpen: (name: string) => { fd: number; name: string } = native.tapOpen;

/** TUN_F_* flags of TUNSETOFFLOAD (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;

/** ioctl(TUNSETOFFLOAD): the offloads (TUN_F_*) this reader takes; the kernel then hands in open checksums and GSO frames. */
export const tapSetOffload: (fd: number, flags: number) => void = native.tapSetOffload;

/** ioctl(SIOCSIFMTU) on interface `name` (through a throwaway datagram socket). Needs CAP_NET_ADMIN. */
export const tapSetMtu: (name: string, mtu: number) => void = native.tapSetMtu;

/** read(2) into buf[off, off+len): bytes read, or -1 on EAGAIN. One TAP frame per call. */
export const fdRead: (fd: number, buf: Uint8Array, off: number, len: number) => number = native.fdRead;

/** write(2) from buf[off, off+len): bytes written, or -1 on EAGAIN. One TAP frame per call. */
export const fdWrite: (fd: number, buf: Uint8Array, off: number, len: number) => number = native.fdWrite;
