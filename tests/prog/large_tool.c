/*
 * large_tool: what tests/integration/large_objects.sh needs below libshelf's
 * public API, to look at and damage large objects' parts:
 *
 *   large_tool CLIENT_DIR BROKER SLICE intents
 *       every intent key (fe x 8 'G' id), one line each:
 *       "intent ID count=N key=K" (count "unknown" for 0xffffffff)
 *   large_tool CLIENT_DIR BROKER SLICE manifest KEY
 *       KEY's manifest, checked: "id ID n N size S chunk_size C", then one
 *       line per chunk: "chunk I HEXKEY OFF SIZE CRC"
 *   large_tool CLIENT_DIR BROKER SLICE raw-put KEY FILE
 *       store FILE's bytes under KEY as one plain object, no large-object
 *       rule (KEY "hex:..." for a binary key, such as a chunk's)
 *   large_tool CLIENT_DIR BROKER SLICE raw-rm KEY
 *       delete KEY as one plain object
 *   large_tool CLIENT_DIR BROKER SLICE put-fd KEY FILE INFLIGHT
 *       shelf_put_fd() of FILE with shelf_set_inflight(INFLIGHT)
 *   large_tool CLIENT_DIR BROKER SLICE get-fd KEY FILE INFLIGHT [SLOW_MS]
 *       shelf_get_stream() into FILE with shelf_set_inflight(INFLIGHT),
 *       the write callback sleeping SLOW_MS after each piece (to keep a
 *       GET going while a test kills a node)
 *   large_tool CLIENT_DIR BROKER SLICE async-get KEY OFF LEN FILE
 *       shelf_get_async() of [OFF, OFF+LEN) (LEN "-": to the end) and
 *       shelf_run(); the bytes into FILE, "total N" on stdout
 *   large_tool CLIENT_DIR BROKER SLICE batch-get DIR KEY...
 *       shelf_get_batch() of the KEYs: item i's bytes into DIR/i, or the
 *       line "i RES WHY" on stdout when it failed
 *
 * Exit 0, or 1 with the error on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/lib/shelf_int.h"

struct slow {
	int fd;
	long ms;
};

static int slow_write(void *arg, const void *buf, size_t len)
{
	struct slow *w = arg;
	const uint8_t *p = buf;
	struct timespec ts = { w->ms / 1000, (w->ms % 1000) * 1000000 };

	while (len) {
		ssize_t n = write(w->fd, p, len);

		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	if (w->ms > 0)
		nanosleep(&ts, NULL);
	return 0;
}

struct ctx {
	struct shelf *s;
	const char *slice;
};

static int key_arg(const char *a, uint8_t *out, size_t *len)
{
	if (strncmp(a, "hex:", 4) == 0) {
		size_t n = strlen(a + 4) / 2;

		if (n == 0 || n > OVL_WIRE_KEY_MAX_BYTES || ovl_hex_decode(a + 4, out, n) < 0)
			return -EINVAL;
		*len = n;
		return 0;
	}
	*len = strlen(a);
	if (*len == 0 || *len > OVL_WIRE_KEY_MAX_BYTES)
		return -EINVAL;
	memcpy(out, a, *len);
	return 0;
}

static void print_hex(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
}

static int intent_cb(void *arg, const void *key, size_t klen)
{
	struct ctx *c = arg;
	const uint8_t *k = key;
	uint8_t *v = NULL;
	size_t vlen = 0;
	char err[SHELF_ERR_BYTES], why[128];
	struct ovl_large_intent in;

	if (ovl_large_intent_key_parse(key, klen, NULL) < 0)
		return 0;
	if (sh_obj_get(c->s, c->slice, key, klen, 0, UINT64_MAX, &v, &vlen, NULL, err,
		       sizeof(err)) < 0 || ovl_large_intent_parse(v, vlen, &in, why, sizeof(why)) < 0) {
		printf("intent ");
		print_hex(k + 9, OVL_LARGE_ID_BYTES);
		printf(" unreadable\n");
		free(v);
		return 0;
	}
	printf("intent ");
	print_hex(k + 9, OVL_LARGE_ID_BYTES);
	if (in.count == OVL_LARGE_COUNT_UNKNOWN)
		printf(" count=unknown");
	else
		printf(" count=%u", in.count);
	printf(" key=%.*s\n", (int)in.klen, (const char *)in.key);
	free(v);
	return 0;
}

struct aget {
	int res;
	uint64_t total;
	void *data;
	size_t len;
	char err[SHELF_ERR_BYTES];
};

static void aget_done(void *arg, int res, const struct shelf_op *op)
{
	struct aget *g = arg;

	g->res = res;
	g->total = shelf_op_total(op);
	if (res == 0)
		g->data = shelf_op_take(op, &g->len);
	else
		snprintf(g->err, sizeof(g->err), "%s", shelf_op_error(op));
}

static int write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ret = f && fwrite(data, 1, len, f) == len ? 0 : -EIO;

	if (f && fclose(f) != 0)
		ret = -EIO;
	return ret;
}

static int batch_cb(void *arg, size_t index, int res, const void *data, size_t len,
		    const char *why)
{
	char path[1100];

	if (res < 0) {
		printf("%zu %d %s\n", index, res, why);
		return 0;
	}
	snprintf(path, sizeof(path), "%s/%zu", (const char *)arg, index);
	return write_file(path, data, len) < 0;
}

int main(int argc, char **argv)
{
	struct ctx c = { NULL, NULL };
	char err[SHELF_ERR_BYTES], why[256];
	uint8_t *key = malloc(OVL_WIRE_KEY_MAX_BYTES), *data = NULL;
	size_t klen = 0, dlen = 0;
	int ret = -EINVAL;

	if (argc < 5 || !key) {
		fprintf(stderr, "usage: large_tool CLIENT_DIR BROKER SLICE intents|manifest KEY|"
			"raw-put KEY FILE|raw-rm KEY\n");
		free(key);
		return 2;
	}
	c.slice = argv[3];
	if (shelf_open(&c.s, argv[1], strcmp(argv[2], "none") ? argv[2] : NULL, err,
		       sizeof(err)) < 0) {
		fprintf(stderr, "large_tool: %s\n", err);
		free(key);
		return 1;
	}
	shelf_set_timeout(c.s, 20000);
	if (strcmp(argv[4], "intents") == 0) {
		uint8_t prefix[OVL_LARGE_PREFIX_BYTES + 1];

		memset(prefix, OVL_LARGE_PREFIX_BYTE, OVL_LARGE_PREFIX_BYTES);
		prefix[OVL_LARGE_PREFIX_BYTES] = OVL_LARGE_KIND_INTENT;
		ret = sh_list(c.s, c.slice, prefix, sizeof(prefix), NULL, 0, 0, intent_cb, &c, NULL,
			      NULL, true, err, sizeof(err));
		ret = ret < 0 ? ret : 0;
	} else if (strcmp(argv[4], "manifest") == 0 && argc == 6 &&
		   key_arg(argv[5], key, &klen) == 0) {
		struct ovl_large_head m;

		ret = sh_obj_get(c.s, c.slice, key, klen, 0, UINT64_MAX, &data, &dlen, NULL, err,
				 sizeof(err));
		if (ret == 0 && (ret = ovl_large_manifest_check(data, dlen, &m, why, sizeof(why))) < 0)
			snprintf(err, sizeof(err), "not a manifest: %s", why);
		if (ret == 0) {
			printf("id ");
			print_hex(m.id, OVL_LARGE_ID_BYTES);
			printf(" n %u size %llu chunk_size %llu\n", m.n, (unsigned long long)m.size,
			       (unsigned long long)m.chunk_size);
			for (uint32_t i = 0; i < m.n; i++) {
				uint8_t ck[OVL_LARGE_CHUNK_KEY_BYTES];
				struct ovl_large_entry e;

				ovl_large_manifest_entry(data, i, &e);
				ovl_large_chunk_key(ck, m.id, i);
				printf("chunk %u ", i);
				print_hex(ck, sizeof(ck));
				printf(" %llu %u %08x\n", (unsigned long long)e.offset, e.size, e.crc);
			}
		}
	} else if (strcmp(argv[4], "raw-put") == 0 && argc == 7 &&
		   key_arg(argv[5], key, &klen) == 0) {
		FILE *f = fopen(argv[6], "rb");

		data = malloc(OVL_WIRE_OBJECT_MAX_BYTES);
		if (!f || !data) {
			ret = -errno;
			snprintf(err, sizeof(err), "cannot read '%s'", argv[6]);
		} else {
			dlen = fread(data, 1, OVL_WIRE_OBJECT_MAX_BYTES, f);
			ret = sh_obj_put(c.s, c.slice, key, klen, data, dlen, err, sizeof(err));
		}
		if (f)
			fclose(f);
	} else if (strcmp(argv[4], "raw-rm") == 0 && argc == 6 &&
		   key_arg(argv[5], key, &klen) == 0) {
		ret = sh_obj_delete(c.s, c.slice, key, klen, err, sizeof(err));
	} else if (strcmp(argv[4], "put-fd") == 0 && argc == 8 &&
		   key_arg(argv[5], key, &klen) == 0) {
		int fd = open(argv[6], O_RDONLY);

		shelf_set_inflight(c.s, (unsigned)atoi(argv[7]));
		ret = fd < 0 ? -errno : shelf_put_fd(c.s, c.slice, key, klen, fd, err, sizeof(err));
		if (fd < 0)
			snprintf(err, sizeof(err), "cannot open '%s'", argv[6]);
		else
			close(fd);
	} else if (strcmp(argv[4], "get-fd") == 0 && (argc == 8 || argc == 9) &&
		   key_arg(argv[5], key, &klen) == 0) {
		struct slow w = { open(argv[6], O_WRONLY | O_CREAT | O_TRUNC, 0644),
				  argc == 9 ? atol(argv[8]) : 0 };

		shelf_set_inflight(c.s, (unsigned)atoi(argv[7]));
		ret = w.fd < 0 ? -errno : shelf_get_stream(c.s, c.slice, key, klen, 0, UINT64_MAX,
							   slow_write, &w, NULL, err, sizeof(err));
		if (w.fd < 0)
			snprintf(err, sizeof(err), "cannot create '%s'", argv[6]);
		else
			close(w.fd);
	} else if (strcmp(argv[4], "async-get") == 0 && argc == 9 &&
		   key_arg(argv[5], key, &klen) == 0) {
		struct aget g = { .res = 1 };
		uint64_t off = strtoull(argv[6], NULL, 10);
		uint64_t len = strcmp(argv[7], "-") ? strtoull(argv[7], NULL, 10) : UINT64_MAX;

		ret = shelf_get_async(c.s, c.slice, key, klen, off, len, aget_done, &g);
		if (ret == 0)
			ret = shelf_run(c.s, -1);
		if (ret == 0 && g.res < 0)
			snprintf(err, sizeof(err), "%s", g.err);
		if (ret == 0)
			ret = g.res;
		if (ret == 0 && (ret = write_file(argv[8], g.data, g.len)) < 0)
			snprintf(err, sizeof(err), "cannot write '%s'", argv[8]);
		if (ret == 0)
			printf("total %llu\n", (unsigned long long)g.total);
		free(g.data);
	} else if (strcmp(argv[4], "batch-get") == 0 && argc >= 7) {
		int n = argc - 6;
		struct shelf_batch_item *it = calloc((size_t)n, sizeof(*it));

		ret = it ? 0 : -ENOMEM;
		for (int i = 0; i < n && ret == 0; i++)
			it[i] = (struct shelf_batch_item){ argv[6 + i], strlen(argv[6 + i]) };
		if (ret == 0)
			ret = shelf_get_batch(c.s, c.slice, it, (size_t)n, 0, batch_cb, argv[5], err,
					      sizeof(err));
		ret = ret > 0 ? 0 : ret;
		free(it);
	} else {
		snprintf(err, sizeof(err), "bad command or key");
	}
	if (ret < 0)
		fprintf(stderr, "large_tool: %s\n", err);
	free(data);
	free(key);
	shelf_close(&c.s);
	return ret < 0 ? 1 : 0;
}
