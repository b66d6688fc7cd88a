/*
 * ovl_crc32c: CRC-32C (Castagnoli), the checksum of every stored record and
 * every payload on the wire. Uses the SSE4.2 instruction when the CPU has it
 * and a table otherwise; both give identical results.
 *
 * ovl_crc32c(0, buf, len) is the standard CRC-32C of buf (init and final
 * xor 0xffffffff handled inside); pass a previous result as `crc` to extend
 * it over more bytes.
 */
#ifndef OVL_CRC32C_H
#define OVL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t ovl_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
