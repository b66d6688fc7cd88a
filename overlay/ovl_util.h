/*
 * ovl_util: the small helpers every shelf process needs, once.
 *
 * - a crash-safe file write (write fully, fsync, rename, fsync the folder);
 * - hex encoding and decoding;
 * - an all-zero check;
 * - the monotonic clock.
 *
 * Every function returns 0 or -errno and never sets errno for the caller.
 */
#ifndef OVL_UTIL_H
#define OVL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Replace the file at `path` with `len` bytes from `buf`, crash-safely:
 * the bytes go to a new temporary file beside it (mode `mode`), written in
 * full (short writes and EINTR are continued), fsynced; the temporary file
 * is renamed over `path`, and the folder is fsynced so that the new name
 * survives a crash. After a crash the file holds either the old bytes or
 * the new ones, never a mix. 0, or -errno with err saying which step failed
 * and naming the file; on error the temporary file is removed and `path`
 * is as it was.
 */
int ovl_file_write_atomic(const char *path, const void *buf, size_t len, unsigned mode,
			  char *err, size_t errlen);

/* fsync the folder that holds `path`, so that a name created or renamed in
 * it survives a crash. 0 or -errno. */
int ovl_file_sync_parent(const char *path);

/* Write all `len` bytes to fd (continuing short writes and EINTR). 0 or -errno. */
int ovl_file_write_full(int fd, const void *buf, size_t len);

/* `n` bytes as 2n lower-case hex digits and a NUL: `out` holds 2n+1 bytes. */
void ovl_hex_encode(const void *in, size_t n, char *out);

/* Exactly 2n hex digits (either case) at `s` into n bytes; what follows them
 * is not looked at. 0, or -EINVAL (a non-hex digit or a short string) with
 * `out` unchanged. */
int ovl_hex_decode(const char *s, void *out, size_t n);

/* Whether all n bytes at p are zero (true for n = 0). */
bool ovl_mem_is_zero(const void *p, size_t n);

/* CLOCK_MONOTONIC in nanoseconds and in milliseconds. */
uint64_t ovl_mono_ns(void);
uint64_t ovl_mono_ms(void);

#endif
