/*
 * rmmap.h: the rmmap client for C, from librmmap (rmmap-c).
 *
 *   cargo build --release -p rmmap-c
 *   cc prog.c -I capi/include -L target/release -lrmmap
 *   (or: pkg-config --cflags --libs capi/rmmap.pc)
 *
 * A client (rmmap_connect) is one connection to one server that carries every
 * mapping made through it; it repairs lost connections in the background
 * (sessions resume, requests apply exactly once). A mapping (rmmap_map) is a
 * byte range of a remote file: every read sees the latest completed write of
 * every client to each page (docs/CONSISTENCY.md), and rmmap_sync makes writes
 * durable on the server's disk. With RMMAP_MAP_MEMORY (Linux, userfaultfd) the
 * range is also plain memory (rmmap_mapping_ptr).
 *
 * Conventions:
 * - Every function that can fail returns an rmmap_error: RMMAP_OK (0) or what
 *   went wrong; rmmap_strerror_last() gives the message (per thread) and
 *   rmmap_error_name() the code's word. Codes 1-99 are the protocol's error
 *   kinds under their wire numbers (docs/PROTOCOL.md, section 9).
 * - Handles are opaque. Each function says who owns and who frees what;
 *   strings and buffers passed in are only used during the call.
 * - Every function is thread-safe, except that a handle must not be freed
 *   (rmmap_close, rmmap_unmap, rmmap_options_free) while another thread uses
 *   it. Calls wait on the calling thread; none waits forever (see
 *   rmmap_options_set_give_up_ms). Do not call them from a signal handler.
 * - Handles do not survive fork(): a child connects and maps anew.
 */

#ifndef RMMAP_H
#define RMMAP_H

/* Generated from capi/src by cbindgen (capi/cbindgen-rmmap.toml); do not edit.
 * Regenerate: RMMAP_BLESS=1 cargo test -p rmmap-c --test headers */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Map for reading only (the default, flag value 0).
 */
#define RMMAP_MAP_READ_ONLY 0

/**
 * Map for reading and writing.
 */
#define RMMAP_MAP_READ_WRITE 1

/**
 * Create the file if it is missing, and extend it with zeros to cover the
 * range (needs `RMMAP_MAP_READ_WRITE`).
 */
#define RMMAP_MAP_CREATE 2

/**
 * Map into memory (Linux, userfaultfd): `rmmap_mapping_ptr` gives the
 * address, and loads and stores are coherent with every other client.
 * The offset must be a multiple of the server's page size. A range that
 * overlaps another mapping of the same file by the same client is refused
 * (`RMMAP_UNSUPPORTED`); do not map a range without this flag over a
 * memory mapping either.
 */
#define RMMAP_MAP_MEMORY 4

/**
 * What went wrong (`RMMAP_OK`, 0, when nothing did). Values 1 to 99 are
 * the protocol's error kinds under their numbers on the wire
 * (docs/PROTOCOL.md, section 9); values from 100 are the client's own.
 * `rmmap_error_name` gives each one's word (`"not_found"`), and
 * `rmmap_strerror_last` the message of the last failure.
 */
typedef enum rmmap_error {
  /**
   * Success.
   */
  RMMAP_OK = 0,
  /**
   * A frame could not be parsed.
   */
  RMMAP_MALFORMED = 1,
  /**
   * The server speaks another protocol version.
   */
  RMMAP_UNSUPPORTED_VERSION = 2,
  /**
   * A valid frame arrived where the protocol does not allow it.
   */
  RMMAP_PROTOCOL = 3,
  /**
   * Authentication failed, or the client lacks the right.
   */
  RMMAP_DENIED = 4,
  /**
   * No such file.
   */
  RMMAP_NOT_FOUND = 5,
  /**
   * An offset or length outside the mapping or the file.
   */
  RMMAP_OUT_OF_RANGE = 6,
  /**
   * A write, atomic, creation or length change on something read-only.
   */
  RMMAP_READ_ONLY = 7,
  /**
   * The path is not a plain relative path under the export root.
   */
  RMMAP_BAD_PATH = 8,
  /**
   * The session has as many mappings as the server allows.
   */
  RMMAP_TOO_MANY_MAPPINGS = 9,
  /**
   * The session has as many requests in flight as the server allows.
   */
  RMMAP_TOO_MANY_REQUESTS = 10,
  /**
   * No such mapping.
   */
  RMMAP_UNKNOWN_MAPPING = 11,
  /**
   * The server's file system failed (the message names the file and why).
   */
  RMMAP_IO = 12,
  /**
   * Busy: too many operations pending, or the server's open files are
   * all in use; may succeed later.
   */
  RMMAP_BUSY = 13,
  /**
   * The mapping lost writes with its session: reported once, then it goes
   * on with the server's bytes. (After a failed write-back: unmap it and
   * map again.)
   */
  RMMAP_SESSION_LOST = 14,
  /**
   * The server is shutting down.
   */
  RMMAP_SHUTTING_DOWN = 15,
  /**
   * The server has as many sessions as it allows.
   */
  RMMAP_TOO_MANY_SESSIONS = 16,
  /**
   * The path names something other than a regular file.
   */
  RMMAP_NOT_A_FILE = 17,
  /**
   * Written-back data for a page the session does not own.
   */
  RMMAP_NOT_OWNER = 18,
  /**
   * The session holds as many pages as the server allows.
   */
  RMMAP_TOO_MANY_PAGES = 19,
  /**
   * The peer took too long.
   */
  RMMAP_TIMEOUT = 20,
  /**
   * A frame longer than the negotiated maximum.
   */
  RMMAP_FRAME_TOO_LARGE = 21,
  /**
   * An atomic operation on a word that is not 8-byte aligned in the file.
   */
  RMMAP_MISALIGNED = 22,
  /**
   * The request was cancelled because its mapping was unmapped.
   */
  RMMAP_CANCELLED = 23,
  /**
   * The server's disk is full: written data is kept in the server's
   * memory and not yet on its disk (a sync says so), or no more writes
   * are accepted until space is freed.
   */
  RMMAP_NO_SPACE = 24,
  /**
   * The file's shard is owned by another member of a cluster (the
   * message is its address): map it there.
   */
  RMMAP_MOVED = 25,
  /**
   * The mapping was unmapped while the operation waited.
   */
  RMMAP_UNMAPPED = 100,
  /**
   * The session was lost while the operation was in flight: it may or
   * may not have taken effect.
   */
  RMMAP_OUTCOME_UNKNOWN = 101,
  /**
   * Disconnected from the server for longer than the give-up time; the
   * client keeps trying to reconnect.
   */
  RMMAP_DISCONNECTED = 102,
  /**
   * The client was closed, or failed for good.
   */
  RMMAP_CLOSED = 103,
  /**
   * The operation does not apply (the message says why).
   */
  RMMAP_UNSUPPORTED = 104,
  /**
   * The first connection could not be opened.
   */
  RMMAP_CONNECT_FAILED = 105,
  /**
   * The connection opened but the handshake failed (credentials, TLS,
   * protocol version, not an rmmap server).
   */
  RMMAP_HANDSHAKE_FAILED = 106,
  /**
   * An argument is invalid: a NULL pointer, a string that is not UTF-8,
   * unknown flags, a handle of the wrong kind.
   */
  RMMAP_INVALID_ARGUMENT = 107,
  /**
   * Memory mappings are not available here (the message says what is
   * missing: userfaultfd, its write-protection, the page size).
   */
  RMMAP_NO_MEMORY_MAPPINGS = 108,
  /**
   * A local file (CA certificate, token) could not be used.
   */
  RMMAP_CONFIG = 109,
  /**
   * A bug in librmmap (a Rust panic, caught at the boundary).
   */
  RMMAP_INTERNAL = 110,
  /**
   * The server sent an error code this library does not know.
   */
  RMMAP_UNKNOWN = 111,
} rmmap_error;

/**
 * A connection to one rmmap server that carries every mapping made
 * through it. Thread-safe: any number of threads may use one client and
 * its mappings at once. Opaque.
 */
typedef struct rmmap_client rmmap_client;

/**
 * A mapped byte range of a remote file. Thread-safe: any number of
 * threads may read, write and sync it at once. Opaque.
 */
typedef struct rmmap_mapping rmmap_mapping;

/**
 * How to connect: what `rmmap_options_new` sets up and the
 * `rmmap_options_set_*` functions change. Opaque.
 */
typedef struct rmmap_options rmmap_options;

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
 * New connection options with the defaults: plaintext, no token, 10 s to
 * connect, operations fail after 30 s disconnected.
 *
 * Ownership: the caller owns the result and frees it with
 * `rmmap_options_free` (`rmmap_connect` does not take it). Never NULL.
 */
struct rmmap_options *rmmap_options_new(void);

/**
 * Frees options made by `rmmap_options_new`. NULL is ignored.
 *
 * # Safety
 * `options` is NULL or came from `rmmap_options_new` and was not freed.
 */
void rmmap_options_free(struct rmmap_options *options);

/**
 * Connects over TLS, trusting only the certificate authority in the PEM
 * file at `ca_file` (read now). The server's certificate must name the
 * host of the address (see `rmmap_options_set_tls_name`).
 *
 * Ownership: `ca_file` is only read during the call.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`; `ca_file` is a NUL-terminated
 * string.
 */
enum rmmap_error rmmap_options_set_tls_ca_file(struct rmmap_options *options, const char *ca_file);

/**
 * Connects over TLS, trusting the operating system's certificate
 * authorities.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`.
 */
enum rmmap_error rmmap_options_set_tls_system_roots(struct rmmap_options *options);

/**
 * Checks the server's certificate against `name` instead of the host
 * part of the address. Set the trust (CA file or system roots) first.
 *
 * Ownership: `name` is only read during the call.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`; `name` is a NUL-terminated
 * string.
 */
enum rmmap_error rmmap_options_set_tls_name(struct rmmap_options *options, const char *name);

/**
 * Authenticates with the token file at `token_file` (one line,
 * `NAME SECRET_HEX`; read now). Use it with TLS: see the README's
 * "Secure deployment".
 *
 * Ownership: `token_file` is only read during the call.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`; `token_file` is a
 * NUL-terminated string.
 */
enum rmmap_error rmmap_options_set_token_file(struct rmmap_options *options,
                                              const char *token_file);

/**
 * Connecting plus the handshake must finish within `ms` milliseconds
 * (default 10,000), else `rmmap_connect` fails.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`.
 */
enum rmmap_error rmmap_options_set_connect_timeout_ms(struct rmmap_options *options, uint64_t ms);

/**
 * Operations fail with `RMMAP_DISCONNECTED` once the client has been
 * disconnected for `ms` milliseconds (default 30,000); the client keeps
 * reconnecting. `0` waits forever.
 *
 * # Safety
 * `options` comes from `rmmap_options_new`.
 */
enum rmmap_error rmmap_options_set_give_up_ms(struct rmmap_options *options, uint64_t ms);

/**
 * Connects to the server at `addr` (`"host:port"`) and completes the
 * handshake; later losses of the connection are repaired in the
 * background (sessions resume, requests apply exactly once). `options`
 * may be NULL for the defaults.
 *
 * `addr` may also list the members of a cluster, `"host:port,host:port"`
 * (docs/CLUSTER.md): the client connects to the first that answers, and a
 * map or set-length that a member sends on (`moved`) goes to the member
 * that owns the file, on one connection per member. A byte mapping
 * follows its file when the cluster moves it: after a planned move
 * nothing is reported; after its member died, one call on the mapping
 * fails with `RMMAP_SESSION_LOST` naming the writes that member had not
 * synced, and the next ones go to the new owner. A memory mapping
 * (`RMMAP_MAP_MEMORY`) moves the same way, at the same address: after a
 * member died, one access raises SIGBUS (`SI_QUEUE`) for the lost writes,
 * and retried it reads the new owner's bytes.
 *
 * On success `*client` is a new client. Ownership: the caller owns it and
 * must end it with `rmmap_close`; `addr` and `options` are only read
 * during the call (free the options when you like).
 *
 * # Safety
 * `addr` is a NUL-terminated string; `options` is NULL or from
 * `rmmap_options_new`; `client` is valid for writing a pointer.
 */
enum rmmap_error rmmap_connect(const char *addr,
                               const struct rmmap_options *options,
                               struct rmmap_client **client);

/**
 * Writes back everything dirty, ends the session, closes the connection
 * and frees `client`. Mappings made through it stay allocated (their
 * operations fail with `RMMAP_CLOSED`) until `rmmap_unmap` frees them.
 *
 * Ownership: takes `client`, which is freed even when an error is
 * returned (the error says the write-back or the goodbye failed). NULL is
 * ignored.
 *
 * # Safety
 * `client` is NULL or from `rmmap_connect`, not yet closed, and no other
 * thread uses it during or after the call.
 */
enum rmmap_error rmmap_close(struct rmmap_client *client);

/**
 * Sets the length of the file at `path` (relative to the export root) to
 * `len` bytes, truncating it or extending it with zeros; with `create`
 * true, creates it if missing.
 *
 * Ownership: `path` is only read during the call.
 *
 * # Safety
 * `client` is from `rmmap_connect`; `path` is a NUL-terminated string.
 */
enum rmmap_error rmmap_set_len(const struct rmmap_client *client,
                               const char *path,
                               uint64_t len,
                               bool create);

/**
 * The word of the code numbered `code` (`"not_found"` for
 * `RMMAP_NOT_FOUND`), or `"unknown"` for a number that is no code.
 *
 * Owned by the library: a static string, never freed.
 */
const char *rmmap_error_name(int code);

/**
 * Maps `len` bytes at `offset` of the file at `path` (relative to the
 * export root). `flags`: `RMMAP_MAP_READ_ONLY` (0) or `RMMAP_MAP_READ_WRITE`, plus
 * `RMMAP_MAP_CREATE`, plus `RMMAP_MAP_MEMORY`. The range must lie within the file
 * unless `RMMAP_MAP_CREATE` extends it. Every read then sees the latest
 * completed write of every client to each page (docs/CONSISTENCY.md).
 *
 * On success `*mapping` is a new mapping. Ownership: the caller owns it
 * and must end it with `rmmap_unmap`; `path` is only read during the call.
 * The mapping keeps the client's connection in use, not the `client`
 * handle: closing the client makes its operations fail.
 *
 * # Safety
 * `client` is from `rmmap_connect`; `path` is a NUL-terminated string;
 * `mapping` is valid for writing a pointer.
 */
enum rmmap_error rmmap_map(const struct rmmap_client *client,
                           const char *path,
                           uint64_t offset,
                           uint64_t len,
                           uint32_t flags,
                           struct rmmap_mapping **mapping);

/**
 * The mapping's length in bytes (0 for NULL).
 *
 * # Safety
 * `mapping` is NULL or from `rmmap_map` and not unmapped.
 */
uint64_t rmmap_mapping_len(const struct rmmap_mapping *mapping);

/**
 * The file's length when it was mapped (0 for NULL).
 *
 * # Safety
 * `mapping` is NULL or from `rmmap_map` and not unmapped.
 */
uint64_t rmmap_mapping_file_len(const struct rmmap_mapping *mapping);

/**
 * The first byte of a memory mapping (`RMMAP_MAP_MEMORY`): `len` bytes,
 * page-aligned, read and written with loads and stores (stores only for
 * `RMMAP_MAP_READ_WRITE`), coherent with every other client. NULL for other
 * mappings.
 *
 * Ownership: the memory belongs to the mapping and is valid until
 * `rmmap_unmap`. A load or store that cannot be served raises SIGBUS
 * (see the README's "Memory mappings"); `rmmap_read` and `rmmap_write`
 * on the same mapping return errors instead.
 *
 * # Safety
 * `mapping` is NULL or from `rmmap_map` and not unmapped.
 */
void *rmmap_mapping_ptr(const struct rmmap_mapping *mapping);

/**
 * Reads `len` bytes at `offset` (from the start of the mapping) into
 * `buf`: the latest completed write of any client to each page. The whole
 * range must lie within the mapping (`RMMAP_OUT_OF_RANGE` otherwise).
 *
 * Ownership: `buf` stays the caller's; it is written during the call only.
 *
 * # Safety
 * `mapping` is from `rmmap_map`; `buf` is valid for writing `len` bytes.
 */
enum rmmap_error rmmap_read(const struct rmmap_mapping *mapping,
                            uint64_t offset,
                            void *buf,
                            size_t len);

/**
 * Writes `len` bytes from `buf` at `offset`. When it returns
 * `RMMAP_OK`, every later read by any client sees them; they are on the
 * server's disk after `rmmap_sync`.
 *
 * Ownership: `buf` stays the caller's; it is read during the call only.
 *
 * # Safety
 * `mapping` is from `rmmap_map`; `buf` is valid for reading `len` bytes.
 */
enum rmmap_error rmmap_write(const struct rmmap_mapping *mapping,
                             uint64_t offset,
                             const void *buf,
                             size_t len);

/**
 * Makes every write completed so far on this mapping (for a memory
 * mapping, every store) durable on the server's disk (fsync).
 *
 * # Safety
 * `mapping` is from `rmmap_map`.
 */
enum rmmap_error rmmap_sync(const struct rmmap_mapping *mapping);

/**
 * Adds `value` (wrapping) to the little-endian 64-bit word at `offset`,
 * at the server, atomically with every client's loads, stores, reads,
 * writes and atomics; stores the previous value in `*previous` (if not
 * NULL). The word must be 8-byte aligned in the file; the mapping
 * read-write.
 *
 * # Safety
 * `mapping` is from `rmmap_map`; `previous` is NULL or valid for writing.
 */
enum rmmap_error rmmap_fetch_add(const struct rmmap_mapping *mapping,
                                 uint64_t offset,
                                 uint64_t value,
                                 uint64_t *previous);

/**
 * Stores `value` in the little-endian 64-bit word at `offset`, at the
 * server, atomically; stores the previous value in `*previous` (if not
 * NULL). Alignment and access as for `rmmap_fetch_add`.
 *
 * # Safety
 * `mapping` is from `rmmap_map`; `previous` is NULL or valid for writing.
 */
enum rmmap_error rmmap_swap(const struct rmmap_mapping *mapping,
                            uint64_t offset,
                            uint64_t value,
                            uint64_t *previous);

/**
 * Stores `desired` in the little-endian 64-bit word at `offset` if it
 * holds `expected`, at the server, atomically. Stores the value the word
 * held in `*previous` (if not NULL) and whether it was replaced in
 * `*exchanged` (if not NULL): like C11's `atomic_compare_exchange_strong`,
 * it fails only when the word held something else. Alignment and access
 * as for `rmmap_fetch_add`.
 *
 * # Safety
 * `mapping` is from `rmmap_map`; `previous` and `exchanged` are NULL or
 * valid for writing.
 */
enum rmmap_error rmmap_compare_exchange(const struct rmmap_mapping *mapping,
                                        uint64_t offset,
                                        uint64_t expected,
                                        uint64_t desired,
                                        uint64_t *previous,
                                        bool *exchanged);

/**
 * Writes back the mapping's dirty pages, ends it and frees `mapping`; a
 * memory mapping's memory goes with it. Call `rmmap_sync` first for the
 * writes to be on the server's disk.
 *
 * Ownership: takes `mapping`, which is freed even when an error is
 * returned (the error says the write-back failed). NULL is ignored.
 *
 * # Safety
 * `mapping` is NULL or from `rmmap_map`, not yet unmapped, and no other
 * thread uses it during or after the call; no pointer into its memory is
 * used after it.
 */
enum rmmap_error rmmap_unmap(struct rmmap_mapping *mapping);

/**
 * Whether this process can make memory mappings (`RMMAP_MAP_MEMORY`):
 * `RMMAP_OK`, or `RMMAP_NO_MEMORY_MAPPINGS` with the reason in
 * `rmmap_strerror_last` (no userfaultfd, no write-protection, not Linux).
 * The server's page size must also be a multiple of the OS page size,
 * which only mapping can tell.
 */
enum rmmap_error rmmap_memory_supported(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* RMMAP_H */
