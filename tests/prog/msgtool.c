/*
 * msgtool: encodes the codec's sample messages to files and decodes files,
 * so that an independent msgpack implementation can check both directions
 * (tests/integration/codec_python.sh).
 *
 *   msgtool encode DIR     write DIR/<sample>.mp for every sample
 *   msgtool decode FILE    print the decoded message as "path=value" lines
 *                          (see msg_dump), or "error <ERRNO> <text>" and exit 1
 *   msgtool list           print the sample names
 */
#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "tests/unit/msg_samples.h"

static const char *errno_name(int e)
{
	switch (e) {
	case EBADMSG: return "EBADMSG";
	case E2BIG: return "E2BIG";
	case ELOOP: return "ELOOP";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	case ENOMSG: return "ENOMSG";
	case ENOMEM: return "ENOMEM";
	case EINVAL: return "EINVAL";
	default: return "E?";
	}
}

static int encode_all(const char *dir)
{
	int ret = 0;

	for (int i = 0; i < msg_sample_count() && ret == 0; i++) {
		struct ovl_msg m;
		msgpack_sbuffer sb;
		char err[256], path[4096];
		const char *name = msg_sample_build(i, &m);
		FILE *f = NULL;

		msgpack_sbuffer_init(&sb);
		if (ovl_msg_encode(&m, &sb, err, sizeof(err)) < 0) {
			fprintf(stderr, "msgtool: cannot encode '%s': %s\n", name, err);
			ret = 1;
		} else {
			snprintf(path, sizeof(path), "%s/%s.mp", dir, name);
			f = fopen(path, "wb");
			if (!f || fwrite(sb.data, 1, sb.size, f) != sb.size) {
				fprintf(stderr, "msgtool: cannot write '%s': %s\n", path, strerror(errno));
				ret = 1;
			}
			if (f && fclose(f) != 0)
				ret = 1;
		}
		msgpack_sbuffer_destroy(&sb);
		ovl_msg_release(&m);
	}
	return ret;
}

static int decode_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;
	struct ovl_msg m;
	char err[512];
	int ret;

	if (!f) {
		fprintf(stderr, "msgtool: cannot open '%s': %s\n", path, strerror(errno));
		return 2;
	}
	do {
		if (len == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap);
			if (!buf) {
				fclose(f);
				return 2;
			}
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	ret = ovl_msg_decode(buf, len, &m, err, sizeof(err));
	if (ret < 0) {
		printf("error %s %s\n", errno_name(-ret), err);
		free(buf);
		return 1;
	}
	msg_dump(&m, stdout);
	ovl_msg_release(&m);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "encode") == 0)
		return encode_all(argv[2]);
	if (argc == 3 && strcmp(argv[1], "decode") == 0)
		return decode_file(argv[2]);
	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		for (int i = 0; i < msg_sample_count(); i++) {
			struct ovl_msg m;

			printf("%s\n", msg_sample_build(i, &m));
			ovl_msg_release(&m);
		}
		return 0;
	}
	fprintf(stderr, "usage: msgtool encode DIR | decode FILE | list\n");
	return 2;
}
