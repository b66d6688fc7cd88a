/*
 * ovl_crc32c: CRC-32C (Castagnoli), the checksum of every stored record and
 * every payload on the wire.
 *
 * The instruction is picked once, at run time: SSE4.2 on x86-64 CPUs that have
 * it, the ARMv8 CRC32C instructions on aarch64 CPUs that have them, and a
 * portable table-driven path everywhere else. Nothing in the build assumes the
 * instruction exists. Every path gives identical results.
 *
 * ovl_crc32c(0, buf, len) is the standard CRC-32C of buf (init and final
 * xor 0xffffffff handled inside); pass a previous result as `crc` to extend
 * it over more bytes. Thread-safe; tables are built on first use.
 */
#ifndef OVL_CRC32C_H
#define OVL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t ovl_crc32c(uint32_t crc, const void *buf, size_t len);

/*
 * The portable table-driven path, whatever the CPU has; same contract as
 * ovl_crc32c(). For tests that check the paths agree and for benchmarks.
 */
uint32_t ovl_crc32c_portable(uint32_t crc, const void *buf, size_t len);

/*
 * The name of the path ovl_crc32c() uses on this CPU: "sse4.2",
 * "armv8-crc" or "portable". A static string.
 */
const char *ovl_crc32c_impl(void);

#endif
