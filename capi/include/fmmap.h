/*
 * fmmap.h: map a section of a remote file, read and write it, unmap it.
 * The seed's four calls, from librmmap (rmmap-c): any program can link it.
 *
 *   cargo build --release -p rmmap-c
 *   cc prog.c -I capi/include -L target/release -lrmmap
 *
 * What is guaranteed everywhere:
 * - A completed mwrite is seen by every later mread of every client on every
 *   machine (per page, linearizable; docs/CONSISTENCY.md). When rmunmap
 *   returns 0, the mapping's writes are on the server's disk. A process that
 *   calls exit() with mappings left has them written back by an exit handler
 *   (as stdio flushes its buffers); one that is killed, or ends with _exit(),
 *   loses the writes of its mappings that the server does not have yet.
 * - One TCP connection per process per server, shared by every mapping and
 *   every thread; it closes with the process's last mapping on that server.
 *   Lost connections are repaired in the background (sessions resume,
 *   requests apply exactly once); if the server lost the session, each
 *   mapping that had unsynced writes fails one call with EIO (mread, mwrite,
 *   or else rmunmap), never silently; after that it goes on with the
 *   server's bytes.
 * - All calls are thread-safe. No call blocks forever: while the server
 *   cannot be reached, calls wait for it, and fail (ENOTCONN) once the
 *   client has been disconnected for its give-up time (30 s).
 * - On failure: -1 or MAP_FAILED, errno, and rmmap_strerror_last() says what
 *   happened in words.
 *
 * What is guaranteed where (Linux with userfaultfd: kernel 5.11 or later, see
 * the README's "Memory mappings"): the address rmmap returns is a real
 * mapping of the range, and the program may also load from it (and store to
 * it) directly, coherently with every other client. A load or store that
 * cannot be served raises SIGBUS (mread and mwrite return errors instead).
 * The process maps each file into memory once, from offset 0: every rmmap of
 * a file is a window onto that mapping, and fails with EBUSY if the file grew
 * since that mapping was made (rmunmap the file's other mappings first).
 * Forked children do not inherit mappings; they may map anew (unless another
 * thread of the parent was inside a call of this library when it forked).
 * Elsewhere (no userfaultfd, another OS, or RMMAP_MEMORY=0) the address only
 * identifies the mapping: it points to inaccessible memory, and every byte
 * moves through mread and mwrite.
 *
 * Settings, from the environment when the first mapping on a server is made:
 *   RMMAP_GIVE_UP_MS          give-up time, milliseconds (default 30000)
 *   RMMAP_CONNECT_TIMEOUT_MS  connect plus handshake (default 10000)
 *   RMMAP_TOKEN_FILE          authenticate with this token file
 *   RMMAP_TLS_CA_FILE         TLS, trusting this CA (PEM)
 *   RMMAP_TLS_NAME            the name the server's certificate must carry
 *   RMMAP_MEMORY=0            never map into memory
 * The full client (options per connection, sync, set length, atomics) is in
 * rmmap.h.
 */

#ifndef FMMAP_H
#define FMMAP_H

/* Generated from capi/src by cbindgen (capi/cbindgen-fmmap.toml); do not edit.
 * Regenerate: RMMAP_BLESS=1 cargo test -p rmmap-c --test headers */

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/types.h>

/**
 * Where a file is: a server and a path under its export root.
 */
struct fileloc {
  /**
   * The server's IPv4 address (network byte order, as from inet_pton).
   */
  struct in_addr ipaddress;
  /**
   * The server's TCP port, host byte order.
   */
  int port;
  /**
   * The file, relative to the server's export root.
   */
  char *pathname;
};

/**
 * Where a file is (the seed's name for `struct fileloc`).
 */
typedef struct fileloc fileloc_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The message of the last call that failed on this thread (any function
 * of fmmap.h or rmmap.h), or `""` if none has. Calls that succeed leave it
 * as it was, as they leave `errno`.
 *
 * Owned by the library: valid until the next failing call on this
 * thread; copy it to keep it. Never NULL; never free it.
 */
const char *rmmap_strerror_last(void);

/**
 * Maps the file `location.pathname` of the server at
 * `location.ipaddress`:`location.port` from `offset` to its current end,
 * read-write (read-only where the server or this client may not write;
 * `mwrite` then fails with `EROFS`), and returns an address that
 * identifies the mapping.
 *
 * On failure returns `MAP_FAILED` with `errno`: `ENOENT` missing file,
 * `EACCES` outside the root or denied (a path, or the client's credentials
 * refused by the server), `EINVAL` offset at or past the end
 * (or negative, or a NULL path, or a bad port), `ECONNREFUSED`/`ETIMEDOUT`/
 * `EHOSTUNREACH` when the server cannot be reached, `EBUSY` when the file
 * grew since the process mapped it into memory, `EINVAL` for a bad
 * setting in the environment, `EIO` otherwise (a failed TLS handshake
 * among them; `rmmap_strerror_last` says which).
 *
 * Ownership: `location.pathname` is only read during the call. The
 * mapping is the caller's until `rmunmap`.
 *
 * # Safety
 * `location.pathname` is a NUL-terminated string.
 */
void *rmmap(fileloc_t location, off_t offset);

/**
 * Writes back and syncs the mapping at `addr` (so its data is on the
 * server's disk when this returns 0), frees it, and closes the connection
 * when it was the process's last mapping on that server.
 *
 * Returns 0, or -1 with `errno`: `EINVAL` for an address that is no
 * mapping (or was unmapped already), `ENOSPC` when the server's disk is
 * full, `EIO`/`ENOTCONN` when the data could not be made durable otherwise.
 * The mapping is freed either way.
 *
 * # Safety
 * No other thread reads or writes through `addr` during or after the call,
 * and no pointer into its memory is used after it.
 */
int rmunmap(void *addr);

/**
 * Reads up to `count` bytes at `offset` (from the start of the mapping at
 * `addr`) into `buff`: the latest completed write of any client. Returns
 * the bytes read (short at the end of the mapping, 0 at or past it), or
 * -1 with `errno`: `EINVAL` for an address that is no mapping, a NULL
 * buffer or a negative offset, `EIO`/`ENOTCONN` when the session is lost.
 *
 * Ownership: `buff` stays the caller's; it is written during the call only.
 *
 * # Safety
 * `buff` is valid for writing `count` bytes.
 */
ssize_t mread(void *addr, off_t offset, void *buff, size_t count);

/**
 * Writes up to `count` bytes from `buff` at `offset` (from the start of
 * the mapping at `addr`). Returns the bytes written (short at the end of
 * the mapping, 0 at or past it), or -1 with `errno`: `EINVAL` for an
 * address that is no mapping, a NULL buffer or a negative offset,
 * `EROFS`/`EACCES` for a refused write, `EIO`/`ENOTCONN` when the session
 * is lost. A completed `mwrite` is seen by every later `mread` of every
 * client on every machine.
 *
 * Ownership: `buff` stays the caller's; it is read during the call only.
 *
 * # Safety
 * `buff` is valid for reading `count` bytes.
 */
ssize_t mwrite(void *addr, off_t offset, void *buff, size_t count);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* FMMAP_H */
