/*
 * Fuzzes the control-plane decoder with arbitrary bytes. Beyond "no crash, no
 * leak, no sanitizer report", it checks two properties:
 *  - a refusal always comes with a NUL-terminated error text naming a subject;
 *  - whatever decodes also encodes, decodes again, and encodes to the very
 *    same bytes (the encoder never writes what the decoder refuses, and the
 *    decoder loses nothing the encoder writes).
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ovl_msg m, m2;
	msgpack_sbuffer a, b;
	char err[256];
	int ret;

	memset(err, 'x', sizeof(err));
	ret = ovl_msg_decode(data, size, &m, err, sizeof(err));
	if (ret < 0) {
		if (!memchr(err, '\0', sizeof(err)) || !strchr(err, ':') || m.type != OVL_MSG_NONE)
			abort();
		return 0;
	}
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	if (ovl_msg_encode(&m, &a, err, sizeof(err)) != 0) {
		fprintf(stderr, "decoded but cannot encode: %s\n", err);
		abort();
	}
	if (ovl_msg_decode(a.data, a.size, &m2, err, sizeof(err)) != 0) {
		fprintf(stderr, "re-encoded message refused: %s\n", err);
		abort();
	}
	if (ovl_msg_encode(&m2, &b, err, sizeof(err)) != 0 || a.size != b.size ||
	    memcmp(a.data, b.data, a.size) != 0) {
		fprintf(stderr, "second encoding differs\n");
		abort();
	}
	ovl_msg_release(&m2);
	ovl_msg_release(&m);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
	return 0;
}
