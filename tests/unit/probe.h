/*
 * Run-time probes for what a test needs from the machine. A test that cannot
 * run here (no io_uring under qemu-user, for example) asks at run time, and
 * skips saying why, instead of failing or being left out by a list.
 */
#ifndef SHELF_TEST_PROBE_H
#define SHELF_TEST_PROBE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Whether this kernel (or emulator) runs io_uring: false only when setting up
 * a ring fails with ENOSYS or EPERM (not implemented, or disabled by
 * kernel.io_uring_disabled). On false, `why` (may be NULL) gets the reason.
 */
bool test_have_io_uring(char *why, size_t len);

/*
 * For test programs that need io_uring throughout: when test_have_io_uring()
 * is false, prints the reason as its last line and exits 77 (skipped).
 */
void test_require_io_uring(void);

#endif
