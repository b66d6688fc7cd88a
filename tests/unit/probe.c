#include "probe.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool test_have_io_uring(char *why, size_t len)
{
	struct io_uring ring;
	int ret = io_uring_queue_init(2, &ring, 0);

	if (ret == 0) {
		io_uring_queue_exit(&ring);
		return true;
	}
	if (ret != -ENOSYS && ret != -EPERM)
		return true; /* it exists; let the test meet the real error */
	if (why)
		snprintf(why, len, "io_uring is not available here (io_uring_setup: %s%s)",
			 strerror(-ret), ret == -ENOSYS ? "; qemu-user does not emulate it" : "");
	return false;
}

void test_require_io_uring(void)
{
	char why[160];

	if (test_have_io_uring(why, sizeof(why)))
		return;
	fflush(stdout);
	fprintf(stderr, "skipped: %s\n", why);
	exit(77);
}
