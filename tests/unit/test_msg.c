/* The control-plane codec: every message round-trips, every bad input is
 * refused with its exact error text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "msg_samples.h"

/* ---- helpers ---------------------------------------------------------------- */

struct bytes {
	uint8_t *p;
	size_t n;
};

static void bytes_free(struct bytes *b)
{
	free(b->p);
	b->p = NULL;
	b->n = 0;
}

static void bytes_put(struct bytes *b, const void *p, size_t n)
{
	b->p = realloc(b->p, b->n + n + 1);
	assert_non_null(b->p);
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

static int sample_index(const char *name)
{
	struct ovl_msg m;

	for (int i = 0; i < msg_sample_count(); i++) {
		const char *n = msg_sample_build(i, &m);

		ovl_msg_release(&m);
		if (strcmp(n, name) == 0)
			return i;
	}
	fail_msg("no sample '%s'", name);
	return -1;
}

/* Encoded bytes of a sample. */
static struct bytes sample(const char *name)
{
	struct bytes b = { NULL, 0 };
	msgpack_sbuffer sb;
	struct ovl_msg m;
	char err[256];

	msg_sample_build(sample_index(name), &m);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	bytes_put(&b, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	ovl_msg_release(&m);
	return b;
}

/* noinline: gcc 12 takes the memstream buffer for the local pointer (-Wdangling-pointer) */
__attribute__((noinline)) static char *dump(const struct ovl_msg *m)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	assert_non_null(f);
	msg_dump(m, f);
	fclose(f);
	return s;
}

/* Size of the msgpack object at p (well-formed or not: 0 when not). */
static size_t obj_size(const uint8_t *p, size_t left)
{
	struct ovl_mp_limits l = { .max_depth = OVL_MP_DEPTH_MAX, .max_bytes = SIZE_MAX,
				   .max_elems = UINT32_MAX, .max_str = UINT32_MAX,
				   .allow_ext = true, .allow_float = true };
	size_t used = 0;
	char err[128];

	if (ovl_mp_check(p, left, &l, &used, err, sizeof(err)) < 0)
		return 0;
	return used;
}

/* Container header at p: 1 = map, 2 = array, 0 = neither. */
static int container(const uint8_t *p, size_t *hlen, uint32_t *count)
{
	uint8_t b = p[0];

	if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
		*hlen = 1;
		*count = b & 0x0f;
		return (b & 0xf0) == 0x80 ? 1 : 2;
	}
	if (b == 0xde || b == 0xdc) {
		*hlen = 3;
		*count = (uint32_t)p[1] << 8 | p[2];
		return b == 0xde ? 1 : 2;
	}
	if (b == 0xdf || b == 0xdd) {
		*hlen = 5;
		*count = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
		return b == 0xdf ? 1 : 2;
	}
	return 0;
}

enum edit_op { SET, DROP, ADD };

static void put_header(struct bytes *out, int kind, uint32_t count)
{
	uint8_t h[5] = { kind == 1 ? 0xdf : 0xdd, (uint8_t)(count >> 24), (uint8_t)(count >> 16),
			 (uint8_t)(count >> 8), (uint8_t)count };

	bytes_put(out, h, 5);
}

/*
 * Copy the object at in[0..len) into out, changing the element at `path`
 * ("members.1.domain.site": map keys and array indexes): SET replaces its
 * value with the raw bytes val (appending the key when it is missing), DROP
 * removes it, ADD appends the key again even when present. Containers on the
 * path are rewritten with map32/array32 headers.
 */
static void edit_obj(const uint8_t *in, size_t len, const char *path, enum edit_op op,
		     const void *val, size_t vlen, struct bytes *out)
{
	char tok[64];
	const char *dot = strchr(path, '.');
	size_t tlen = dot ? (size_t)(dot - path) : strlen(path), hlen = 0, off;
	const char *rest = dot ? dot + 1 : NULL;
	uint32_t count = 0, newcount;
	struct bytes body = { NULL, 0 };
	int kind = container(in, &hlen, &count);
	bool done = false;

	assert_true(kind != 0);
	assert_true(tlen < sizeof(tok));
	memcpy(tok, path, tlen);
	tok[tlen] = '\0';
	newcount = count;
	off = hlen;
	for (uint32_t i = 0; i < count; i++) {
		size_t ks = 0, vs, start = off;
		bool match;

		if (kind == 1) {
			ks = obj_size(in + off, len - off);
			assert_true(ks > 0);
			match = in[off] >= 0xa0 && in[off] <= 0xbf && (size_t)(in[off] & 0x1f) == tlen &&
				memcmp(in + off + 1, tok, tlen) == 0;
			off += ks;
		} else {
			match = (uint32_t)atoi(tok) == i;
		}
		vs = obj_size(in + off, len - off);
		assert_true(vs > 0);
		off += vs;
		if (!match || (op == ADD && !rest)) {
			bytes_put(&body, in + start, off - start);
			continue;
		}
		done = true;
		if (rest) {
			bytes_put(&body, in + start, ks);
			edit_obj(in + start + ks, vs, rest, op, val, vlen, &body);
		} else if (op == DROP) {
			newcount--;
		} else {
			bytes_put(&body, in + start, ks);
			bytes_put(&body, val, vlen);
		}
	}
	if (!done && !rest && op != DROP) {
		uint8_t k = (uint8_t)(0xa0 | tlen);

		assert_int_equal(kind, 1);
		bytes_put(&body, &k, 1);
		bytes_put(&body, tok, tlen);
		bytes_put(&body, val, vlen);
		newcount++;
	} else {
		assert_true(done || op == DROP);
	}
	put_header(out, kind, newcount);
	bytes_put(out, body.p, body.n);
	bytes_free(&body);
}

static struct bytes edited(const char *name, const char *path, enum edit_op op,
			   const void *val, size_t vlen)
{
	struct bytes in = sample(name), out = { NULL, 0 };

	edit_obj(in.p, in.n, path, op, val, vlen, &out);
	bytes_free(&in);
	return out;
}

/* Decode b, expect ret and the exact error text; nothing may stay allocated. */
static void expect(struct bytes b, int ret, const char *text)
{
	struct ovl_msg m;
	char err[512];

	memset(&m, 0xa5, sizeof(m));
	strcpy(err, "untouched");
	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, err, sizeof(err)), ret);
	if (ret < 0) {
		assert_string_equal(err, text);
		assert_int_equal(m.type, OVL_MSG_NONE);
	}
	ovl_msg_release(&m);
}

static void expect_edit(const char *name, const char *path, enum edit_op op, const char *val,
			size_t vlen, int ret, const char *text)
{
	struct bytes b = edited(name, path, op, val, vlen);

	expect(b, ret, text);
	bytes_free(&b);
}

#define V(lit) lit, sizeof(lit) - 1 /* a raw msgpack value from a string literal */

static size_t find(const struct bytes *b, const void *needle, size_t n)
{
	const uint8_t *p = memmem(b->p, b->n, needle, n);

	assert_non_null(p);
	return (size_t)(p - b->p);
}

/* ---- round trips ------------------------------------------------------------- */

static void test_round_trip_every_message(void **state)
{
	bool seen[OVL_MSG_TYPE_COUNT] = { false };

	for (int i = 0; i < msg_sample_count(); i++) {
		struct ovl_msg m, d, d2;
		msgpack_sbuffer sb, sb2;
		char err[256], *a = NULL, *b = NULL;
		uint8_t *buf = NULL;
		const char *name = msg_sample_build(i, &m);
		int n;

		msgpack_sbuffer_init(&sb);
		msgpack_sbuffer_init(&sb2);
		assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
		assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
		assert_int_equal(d.type, m.type);
		assert_int_equal(d.ver_major, 1);
		assert_int_equal(d.ver_minor, 0);
		assert_int_equal(d.rid, m.rid);
		a = dump(&m);
		b = dump(&d);
		assert_string_equal(a, b);
		seen[d.type] = true;

		/* the decoded message encodes to the same bytes */
		assert_int_equal(ovl_msg_encode(&d, &sb2, err, sizeof(err)), 0);
		assert_int_equal(sb2.size, sb.size);
		assert_memory_equal(sb2.data, sb.data, sb.size);
		assert_int_equal(ovl_msg_decode(sb2.data, sb2.size, &d2, err, sizeof(err)), 0);
		ovl_msg_release(&d2);

		/* into a caller buffer: same bytes; one byte short is -ENOSPC */
		buf = malloc(sb.size);
		assert_int_equal(ovl_msg_encode_buf(&m, buf, sb.size, err, sizeof(err)), (int)sb.size);
		assert_memory_equal(buf, sb.data, sb.size);
		n = ovl_msg_encode_buf(&m, buf, sb.size - 1, err, sizeof(err));
		assert_int_equal(n, -ENOSPC);
		{
			char want[128];

			snprintf(want, sizeof(want), "%s: message does not fit in %zu bytes",
				 ovl_msg_type_name(m.type), sb.size - 1);
			assert_string_equal(err, want);
		}
		(void)name;
		free(buf);
		free(a);
		free(b);
		ovl_msg_release(&d);
		ovl_msg_release(&m);
		msgpack_sbuffer_destroy(&sb);
		msgpack_sbuffer_destroy(&sb2);
	}
	for (int t = OVL_MSG_NONE + 1; t < OVL_MSG_TYPE_COUNT; t++)
		assert_true(seen[t]);
}

/*
 * map_report is a small message (1 MiB, 65,536 objects): it holds a map of
 * 1,500 members with 420-byte certificates and long domain names
 * (PROTOCOL.md 4.5); 2,000 such members do not fit, and 4,000 members
 * without certificates pass the byte limit but not the object limit (21
 * objects a member), which the decoder (the broker's) refuses.
 */
/* 1.7: the fleet documents ride as optional bins in heartbeat, heartbeat_ok,
 * admin and admin_ok; an admin "fleet" request needs its document. */
static void test_fleet_fields(void **state)
{
	static const uint8_t doc[] = { 0x81, 0xa1, 'v', 0x01 };
	struct ovl_msg m, d;
	msgpack_sbuffer sb;
	char err[256];

	(void)state;
	ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
	m.u.hb.seq = 7;
	m.u.hb.fleet = (struct ovl_msg_bin){ doc, sizeof(doc) };
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.hb.fleet.len, sizeof(doc));
	assert_memory_equal(d.u.hb.fleet.ptr, doc, sizeof(doc));
	ovl_msg_release(&d);
	msgpack_sbuffer_destroy(&sb);

	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_FLEET;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "fleet"));
	msgpack_sbuffer_destroy(&sb);
	m.u.admin.fleet = (struct ovl_msg_bin){ doc, sizeof(doc) };
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.admin.op, OVL_MSG_ADMIN_FLEET);
	assert_memory_equal(d.u.admin.fleet.ptr, doc, sizeof(doc));
	ovl_msg_release(&d);
	msgpack_sbuffer_destroy(&sb);
	assert_string_equal(ovl_msg_admin_op_name(OVL_MSG_ADMIN_FLEET), "fleet");
}

static void test_map_report_limits(void **state)
{
	static uint8_t cert[420];
	struct ovl_msg m, d;
	msgpack_sbuffer sb;
	char err[256];
	uint32_t n = 4000;

	(void)state;
	ovl_msg_init(&m, OVL_MSG_MAP_REPORT);
	strcpy(m.u.report.slice, "big");
	m.u.report.epoch = 1ull << 40;
	m.u.report.replicas = 3;
	memset(m.u.report.sig, 7, sizeof(m.u.report.sig));
	m.u.report.members = calloc(n, sizeof(*m.u.report.members));
	assert_non_null(m.u.report.members);
	memset(cert, 0xa5, sizeof(cert));
	for (uint32_t i = 0; i < n; i++) {
		struct ovl_msg_member *mb = &m.u.report.members[i];

		msg_sample_member(mb, i);
		memset(mb->domain.site, 's', 15);
		memset(mb->domain.chassis, 'c', 15);
		mb->cert = (struct ovl_msg_bin){ cert, sizeof(cert) };
	}
	msgpack_sbuffer_init(&sb);
	m.u.report.n_members = 1500;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_true(sb.size <= OVL_MSG_SMALL_MAX_BYTES);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.report.n_members, 1500);
	ovl_msg_release(&d);
	msgpack_sbuffer_clear(&sb);
	m.u.report.n_members = 2000;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -E2BIG);
	for (uint32_t i = 0; i < n; i++)
		m.u.report.members[i].cert = (struct ovl_msg_bin){ NULL, 0 };
	msgpack_sbuffer_clear(&sb);
	m.u.report.n_members = n;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_true(sb.size <= OVL_MSG_SMALL_MAX_BYTES);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), -E2BIG);
	msgpack_sbuffer_destroy(&sb);
	ovl_msg_release(&m);
}

static void test_round_trip_100k_members(void **state)
{
	struct ovl_msg m, d;
	msgpack_sbuffer sb;
	char err[256];
	uint32_t n = OVL_MSG_MEMBERS_MAX;

	ovl_msg_init(&m, OVL_MSG_MAP);
	m.u.map.ts.ptr = (const uint8_t *)"timestamp";
	m.u.map.ts.len = 9;
	strcpy(m.u.map.slice, "big");
	m.u.map.epoch = 1ull << 40;
	m.u.map.replicas = 3;
	m.u.map.members = calloc(n + 1, sizeof(*m.u.map.members));
	assert_non_null(m.u.map.members);
	for (uint32_t i = 0; i < n + 1; i++) {
		struct ovl_msg_member *mb = &m.u.map.members[i];

		msg_sample_member(mb, i);
		/* the longest strings: the worst case must fit the large limit */
		memset(mb->domain.site, 's', sizeof(mb->domain.site) - 1);
		memset(mb->domain.chassis, 'c', sizeof(mb->domain.chassis) - 1);
		memset(mb->domain.slot, 'x', sizeof(mb->domain.slot) - 1);
	}
	m.u.map.n_members = n;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_true(sb.size > 16u << 20); /* array32 and well past the small limits */
	assert_true(sb.size < OVL_MSG_LARGE_MAX_BYTES);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.map.n_members, n);
	assert_memory_equal(d.u.map.members, m.u.map.members, n * sizeof(*m.u.map.members));
	ovl_msg_release(&d);

	/* one more is refused by the encoder, and by the decoder */
	m.u.map.n_members = n + 1;
	msgpack_sbuffer_clear(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'members' has 100001 elements, more than 100000");
	assert_int_equal(sb.size, 0);
	ovl_msg_release(&m);
	msgpack_sbuffer_destroy(&sb);

	{
		struct bytes b = { NULL, 0 };
		uint8_t *elems = malloc(n + 1);
		struct bytes e;

		memset(elems, 0x80, n + 1);
		bytes_put(&b, "\xdd\x00\x01\x86\xa1", 5); /* array32 of 100001 */
		bytes_put(&b, elems, n + 1);
		e = edited("map", "members", SET, b.p, b.n);
		expect(e, -EBADMSG, "map: field 'members' has 100001 elements, more than 100000");
		bytes_free(&e);
		bytes_free(&b);
		free(elems);
	}
}

/* ---- hostile input ----------------------------------------------------------- */

static void test_truncated_every_prefix(void **state)
{
	for (int i = 0; i < msg_sample_count(); i++) {
		struct ovl_msg m;
		const char *name = msg_sample_build(i, &m);
		const char *type = ovl_msg_type_name(m.type);
		struct bytes b;

		ovl_msg_release(&m);
		if (strcmp(name, "map_big") == 0)
			continue; /* quadratic; "map" covers the same shapes */
		b = sample(name);
		for (size_t n = 0; n < b.n; n++) {
			struct ovl_msg d;
			char err[256], a[64], t[64];
			int ret = ovl_msg_decode(b.p, n, &d, err, sizeof(err));

			assert_int_equal(ret, -EBADMSG);
			assert_int_equal(d.type, OVL_MSG_NONE);
			/* the walker says why it stopped: the input ended, or a
			 * header asks for more than is left */
			snprintf(a, sizeof(a), "%s: ", type);
			snprintf(t, sizeof(t), "message: ");
			if (n == 0)
				assert_string_equal(err, "message: empty message");
			else if ((strncmp(err, a, strlen(a)) != 0 && strncmp(err, t, strlen(t)) != 0) ||
				 (!strstr(err, ": truncated at byte ") &&
				  !strstr(err, ": truncated header at byte ") &&
				  !strstr(err, " bytes are left") && !strstr(err, " bytes left")))
				fail_msg("%s prefix %zu: unexpected error '%s'", name, n, err);
		}
		/* exact texts: cut before the last byte, and inside the header */
		{
			char want[128];

			snprintf(want, sizeof(want), "%s: truncated at byte %zu", type, b.n - 1);
			if (b.p[b.n - 1] <= 0x7f && strcmp(name, "register") == 0) {
				struct bytes c = { b.p, b.n - 1 };

				expect(c, -EBADMSG, want);
			}
		}
		bytes_free(&b);
	}
	{
		struct bytes b = sample("register");
		struct bytes c = { b.p, 3 }; /* the map header and key "v" only */

		expect(c, -EBADMSG,
		       "message: container at byte 0 announces 24 elements but only 2 bytes are left");
		bytes_free(&b);
	}
}

static void test_wrong_types(void **state)
{
	expect_edit("register", "slices", SET, V("\x01"), -EBADMSG,
		    "register: field 'slices' is not an array");
	expect_edit("register", "node_id", SET, V("\xa3" "abc"), -EBADMSG,
		    "register: field 'node_id' is not a bin");
	expect_edit("register", "port", SET, V("\xa2" "80"), -EBADMSG,
		    "register: field 'port' is not an unsigned integer");
	expect_edit("register", "port", SET, V("\xc0"), -EBADMSG,
		    "register: field 'port' is not an unsigned integer");
	expect_edit("register", "capacity", SET, V("\xff"), -EBADMSG,
		    "register: field 'capacity' is negative");
	expect_edit("register", "capacity", SET, V("\xd3\xff\xff\xff\xff\xff\xff\xff\xfe"),
		    -EBADMSG, "register: field 'capacity' is negative");
	expect_edit("register", "domain", SET, V("\x90"), -EBADMSG,
		    "register: field 'domain' is not a map");
	expect_edit("register", "slices.1.epoch", SET, V("\xc3"), -EBADMSG,
		    "register: field 'slices[1].epoch' is not an unsigned integer");
	expect_edit("map", "members.1.domain.site", SET, V("\x07"), -EBADMSG,
		    "map: field 'members[1].domain.site' is not a string");
	expect_edit("map", "members.2.state", SET, V("\xc3"), -EBADMSG,
		    "map: field 'members[2].state' is not a string");
	expect_edit("map", "members.0.id", SET, V("\xc4\x02" "ab"), -EBADMSG,
		    "map: field 'members[0].id' must be 32 bytes, not 2");
	expect_edit("map_delta", "removed.0", SET, V("\xd9\x20" "0123456789abcdef0123456789abcdef"),
		    -EBADMSG, "map_delta: field 'removed[0]' is not a bin");
	expect_edit("register", "v", SET, V("\xa3" "1.0"), -EBADMSG,
		    "register: field 'v' is not an array of two unsigned integers");
	expect_edit("register", "v", SET, V("\x93\x01\x00\x00"), -EBADMSG,
		    "register: field 'v' is not an array of two unsigned integers");
	expect_edit("register", "t", SET, V("\x05"), -EBADMSG, "message: field 't' is not a string");
	expect_edit("register", "rid", SET, V("\xa1" "x"), -EBADMSG,
		    "register: field 'rid' is not an unsigned integer");
	expect_edit("register", "port", SET, V("\xce\x00\x01\x11\x70"), -EBADMSG,
		    "register: field 'port' is 70000, above the maximum 65535");
	expect_edit("register", "port", SET, V("\x00"), -EBADMSG,
		    "register: field 'port' is 0, below the minimum 1");
	expect_edit("register_ok", "heartbeat_ms", SET, V("\x0a"), -EBADMSG,
		    "register_ok: field 'heartbeat_ms' is 10, below the minimum 100");
	expect_edit("register", "board", SET, V("\xd9\x28" "0123456789012345678901234567890123456789"),
		    -EBADMSG, "register: field 'board' is longer than 31 bytes");
	expect_edit("register", "board", SET, V("\xa3" "a\0b"), -EBADMSG,
		    "register: field 'board' contains a NUL byte");
	expect_edit("register", "board", SET, V("\xa2\xc3\x28"), -EBADMSG,
		    "register: field 'board' is not valid UTF-8");
	expect_edit("register", "board", SET, V("\xa3\xed\xa0\x80"), -EBADMSG,
		    "register: field 'board' is not valid UTF-8"); /* a surrogate */
	expect_edit("register", "board", SET, V("\xa6" "h\xc3\xa9llo"), 0, NULL);
	/* runs of eight and more, where UTF-8 checks go eight bytes at a time */
	expect_edit("register", "board", SET, V("\xaa" "a\0\0\0\0\0\0\0\0b"), -EBADMSG,
		    "register: field 'board' contains a NUL byte");
	expect_edit("register", "board", SET, V("\xa9" "\x80\x80\x80\x80\x80\x80\x80\x80" "a"),
		    -EBADMSG, "register: field 'board' is not valid UTF-8");
	expect_edit("register", "board", SET, V("\xd9\x20" "0123456789abcdef\x7f\x01xxxxxxxxxxxxx\xc3"),
		    -EBADMSG, "register: field 'board' is longer than 31 bytes");
	expect_edit("register", "board", SET, V("\xbf" "0123456789abcdef\x7f\x01xxxxxxxxxxx\xc3\xa9"),
		    0, NULL);
	expect_edit("register", "board", SET, V("\xbf" "0123456789abcdef\x7f\x01xxxxxxxxxxxx\xc3"),
		    -EBADMSG, "register: field 'board' is not valid UTF-8");
	expect_edit("admin", "op", SET, V("\xa6" "reboot"), -EBADMSG,
		    "admin: field 'op' has unknown value 'reboot'");
	expect_edit("admin", "op", SET, V("\xa4" "a'\x01z"), -EBADMSG,
		    "admin: field 'op' has unknown value 'a??z'");
	expect_edit("map_delta", "epoch", SET, V("\x09"), -EBADMSG,
		    "map_delta: field 'epoch' (9) must be greater than 'base_epoch' (9)");
	expect_edit("admin", "op", SET, V("\xab" "revoke_node"), -EBADMSG,
		    "admin: op 'revoke_node' requires field 'node_id'");
	{
		struct bytes b = edited("register", "port", SET, V("\xca\x3f\xc0\x00\x00"));
		char want[96];

		snprintf(want, sizeof(want), "register: float at byte %zu is not allowed",
			 find(&b, "\xca\x3f\xc0", 3));
		expect(b, -EBADMSG, want);
		bytes_free(&b);
	}
	/* not a map; a key that is not a string */
	{
		struct bytes b = { NULL, 0 };

		bytes_put(&b, "\x92\x01\x02", 3);
		expect(b, -EBADMSG, "message: not a map");
		bytes_free(&b);
		bytes_put(&b, V("\x83\xa1v\x92\x01\x00\xa1t\xa8register\x07\x01"));
		expect(b, -EBADMSG, "register: a key is not a string");
		bytes_free(&b);
	}
	expect_edit("register", "domain", SET, V("\x81\x01\x02"), -EBADMSG,
		    "register: field 'domain' has a key that is not a string");
}

static void test_wrong_type_variants_accepted(void **state)
{
	/* any integer encoding of a non-negative value is fine */
	struct bytes b = edited("register", "port", SET, V("\xd3\x00\x00\x00\x00\x00\x00\x1b\xbc"));
	struct ovl_msg m;
	char err[256];

	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, err, sizeof(err)), 0);
	assert_int_equal(m.u.reg.port, 7100);
	ovl_msg_release(&m);
	bytes_free(&b);
	/* a state this build does not know decodes as "unknown" */
	b = edited("map", "members.1.state", SET, V("\xa8" "draining"));
	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, err, sizeof(err)), 0);
	assert_int_equal(m.u.map.members[1].state, OVL_MSG_STATE_UNKNOWN);
	assert_int_equal(m.u.map.members[0].state, OVL_MSG_STATE_UP);
	ovl_msg_release(&m);
	bytes_free(&b);
}

static void test_counts_larger_than_message(void **state)
{
	struct bytes b = edited("register", "slices", SET, V("\xdd\xff\xff\xff\xff"));
	char want[160];

	snprintf(want, sizeof(want),
		 "register: container at byte %zu announces 4294967295 elements but only 0 bytes are left",
		 b.n - 5);
	expect(b, -EBADMSG, want);
	bytes_free(&b);

	/* the walker admits 2000 one-byte elements; a member needs far more */
	{
		struct bytes v = { NULL, 0 };
		uint8_t e[2000];

		memset(e, 0x80, sizeof(e));
		bytes_put(&v, "\xdc\x07\xd0", 3);
		bytes_put(&v, e, sizeof(e));
		b = edited("map", "members", SET, v.p, v.n);
		expect(b, -EBADMSG,
		       "map: field 'members' announces 2000 elements but only 2000 bytes are left");
		bytes_free(&b);
		bytes_free(&v);
	}
	/* a map header announcing more keys than there are */
	b = sample("heartbeat");
	b.p[0] = 0x8f;
	snprintf(want, sizeof(want), "heartbeat: truncated at byte %zu", b.n);
	expect(b, -EBADMSG, want);
	bytes_free(&b);
}

static void test_nesting_10000_deep(void **state)
{
	struct bytes v = { NULL, 0 }, b;
	uint8_t *deep = malloc(10001);
	char want[96];

	memset(deep, 0x91, 10000);
	deep[10000] = 0x01;
	bytes_put(&v, deep, 10001);
	b = edited("register", "x_deep", SET, v.p, v.n);
	/* the top map is level 1: the 8th array is one too many */
	snprintf(want, sizeof(want), "register: nesting deeper than 8 at byte %zu",
		 find(&b, deep, 16) + 7);
	expect(b, -ELOOP, want);
	bytes_free(&b);
	/* no envelope at all */
	expect(v, -ELOOP, "message: nesting deeper than 8 at byte 8");
	/* nested maps inside a member */
	memset(deep, 0x81, 10000);
	for (int i = 0; i < 5000; i++) {
		deep[2 * i] = 0x81;
		deep[2 * i + 1] = 0x00; /* {0: {0: ...}} */
	}
	b = edited("map", "members.0.x", SET, deep, 10001);
	/* top map, members, member: the 6th nested map is level 9 */
	snprintf(want, sizeof(want), "map: nesting deeper than 8 at byte %zu", find(&b, deep, 16) + 10);
	expect(b, -ELOOP, want);
	bytes_free(&b);
	bytes_free(&v);
	free(deep);
}

static void test_str32_4gib_header(void **state)
{
	struct bytes b = edited("register", "board", SET, V("\xdb\xff\xff\xff\xff" "a"));
	char want[128];

	snprintf(want, sizeof(want), "register: string of 4294967295 bytes at byte %zu exceeds 65536",
		 find(&b, "\xdb\xff\xff\xff\xff", 5));
	expect(b, -E2BIG, want);
	bytes_free(&b);
	/* bin32 in a field this build does not know */
	b = edited("heartbeat", "x_blob", SET, V("\xc6\xff\xff\xff\xff"));
	snprintf(want, sizeof(want), "heartbeat: string of 4294967295 bytes at byte %zu exceeds 65536",
		 b.n - 5);
	expect(b, -E2BIG, want);
	bytes_free(&b);
	/* within the limit but longer than the message */
	b = edited("heartbeat", "x_blob", SET, V("\xc5\x10\x00"));
	snprintf(want, sizeof(want), "heartbeat: length 4096 at byte %zu exceeds the 0 bytes left",
		 b.n - 3);
	expect(b, -EBADMSG, want);
	bytes_free(&b);
}

static void test_versions(void **state)
{
	expect_edit("register", "v", SET, V("\x92\x02\x00"), -EPROTONOSUPPORT,
		    "register: protocol major version 2 is not supported (this build speaks 1)");
	expect_edit("register", "v", SET, V("\x92\x00\x09"), -EPROTONOSUPPORT,
		    "register: protocol major version 0 is not supported (this build speaks 1)");
	{
		/* a major version 2 message of a type we have never heard of */
		struct bytes b = { NULL, 0 };

		bytes_put(&b, V("\x83\xa1v\x92\x02\x00\xa1t\xa5hello\xa1x\xc0"));
		expect(b, -EPROTONOSUPPORT,
		       "message: protocol major version 2 is not supported (this build speaks 1)");
		bytes_free(&b);
	}
	expect_edit("register", "t", SET, V("\xaa" "frobnicate"), -ENOMSG,
		    "message: unknown message type 'frobnicate'");
	expect_edit("register", "t", SET, V("\xa0"), -ENOMSG, "message: unknown message type ''");
}

static void test_newer_minor_unknown_fields(void **state)
{
	struct bytes a = edited("map", "v", SET, V("\x92\x01\x07"));
	struct bytes b = { NULL, 0 }, c = { NULL, 0 }, d = { NULL, 0 };
	struct ovl_msg orig, m;
	char err[256], *want = NULL, *got = NULL, *p = NULL;

	/* unknown keys at every level, holding nested containers of all kinds */
	edit_obj(a.p, a.n, "x_future", SET,
		 V("\x82\xa1" "a\x93\x01\xa1" "b\x81\xa1" "c\xc4\x03" "xyz\xa1" "d\xc0"), &b);
	edit_obj(b.p, b.n, "members.0.x_zone", SET, V("\xa2" "z9"), &c);
	edit_obj(c.p, c.n, "members.3.domain.x_rack", SET, V("\xcd\x01\x00"), &d);
	assert_int_equal(ovl_msg_decode(d.p, d.n, &m, err, sizeof(err)), 0);
	assert_int_equal(m.type, OVL_MSG_MAP);
	assert_int_equal(m.ver_major, 1);
	assert_int_equal(m.ver_minor, 7);
	msg_sample_build(sample_index("map"), &orig);
	want = dump(&orig);
	got = dump(&m);
	p = strstr(want, "v=1.0\n");
	assert_non_null(p);
	p[4] = '7';
	assert_string_equal(got, want);
	free(want);
	free(got);
	ovl_msg_release(&orig);
	ovl_msg_release(&m);
	bytes_free(&a);
	bytes_free(&b);
	bytes_free(&c);
	bytes_free(&d);

	/* keys in another order than the encoder writes them */
	{
		struct bytes s = sample("heartbeat"), r = { NULL, 0 }, t = { NULL, 0 };

		edit_obj(s.p, s.n, "v", DROP, NULL, 0, &r);
		edit_obj(r.p, r.n, "v", SET, V("\x92\x01\x02"), &t);
		assert_int_equal(ovl_msg_decode(t.p, t.n, &m, err, sizeof(err)), 0);
		assert_int_equal(m.ver_minor, 2);
		assert_int_equal(m.u.hb.seq, 123456);
		ovl_msg_release(&m);
		bytes_free(&s);
		bytes_free(&r);
		bytes_free(&t);
	}
}

static void test_missing_required(void **state)
{
	expect_edit("register", "node_id", DROP, NULL, 0, -EBADMSG,
		    "register: required field 'node_id' is missing");
	expect_edit("register", "domain.slot", DROP, NULL, 0, -EBADMSG,
		    "register: required field 'domain.slot' is missing");
	expect_edit("map", "members.1.addr", DROP, NULL, 0, -EBADMSG,
		    "map: required field 'members[1].addr' is missing");
	expect_edit("map", "members", DROP, NULL, 0, -EBADMSG,
		    "map: required field 'members' is missing");
	expect_edit("register_ok", "slices.0.epoch", DROP, NULL, 0, -EBADMSG,
		    "register_ok: required field 'slices[0].epoch' is missing");
	expect_edit("register", "v", DROP, NULL, 0, -EBADMSG,
		    "register: required field 'v' is missing");
	expect_edit("register", "t", DROP, NULL, 0, -EBADMSG,
		    "message: required field 't' is missing");
	/* optional fields may go */
	expect_edit("register", "token", DROP, NULL, 0, 0, NULL);
	expect_edit("register", "slices", DROP, NULL, 0, 0, NULL);
	expect_edit("register", "rid", DROP, NULL, 0, 0, NULL);
}

static void test_duplicate_keys(void **state)
{
	expect_edit("register", "port", ADD, V("\x01"), -EBADMSG, "register: duplicate key 'port'");
	expect_edit("register", "t", ADD, V("\xa8" "register"), -EBADMSG,
		    "register: duplicate key 't'");
	expect_edit("register", "v", ADD, V("\x92\x01\x00"), -EBADMSG,
		    "register: duplicate key 'v'");
	expect_edit("register", "rid", ADD, V("\x01"), -EBADMSG, "register: duplicate key 'rid'");
	expect_edit("map", "members.0.port", ADD, V("\x01"), -EBADMSG,
		    "map: field 'members[0]' has a duplicate key 'port'");
	{
		struct bytes a = edited("register", "x", SET, V("\x01"));
		struct bytes b = { NULL, 0 };

		edit_obj(a.p, a.n, "x", ADD, V("\x02"), &b);
		expect(b, -EBADMSG, "register: duplicate key 'x'");
		bytes_free(&a);
		bytes_free(&b);
	}
}

static void test_oversized_bins(void **state)
{
	struct bytes v = { NULL, 0 }, b;
	uint8_t big[70000];
	char want[128];

	memset(big, 0x5a, sizeof(big));
	bytes_put(&v, "\xc5\x10\x01", 3); /* bin16 of 4097 */
	bytes_put(&v, big, 4097);
	b = edited("register_ok", "cert", SET, v.p, v.n);
	expect(b, -EBADMSG, "register_ok: field 'cert' is longer than 4096 bytes");
	bytes_free(&b);
	b = edited("map", "ts", SET, v.p, v.n);
	expect(b, -EBADMSG, "map: field 'ts' is longer than 4096 bytes");
	bytes_free(&b);
	bytes_free(&v);
	/* exactly 4096 is fine (the "cert" sample carries one) */
	b = sample("cert");
	expect(b, 0, NULL);
	bytes_free(&b);
	/* fixed-size keys */
	expect_edit("register", "node_id", SET, V("\xc4\x1f" "0123456789012345678901234567890"),
		    -EBADMSG, "register: field 'node_id' must be 32 bytes, not 31");
	expect_edit("register", "curve_key", SET,
		    V("\xc4\x21" "012345678901234567890123456789012"), -EBADMSG,
		    "register: field 'curve_key' must be 32 bytes, not 33");
	/* over the walker's limit for any str/bin, in an unknown field */
	bytes_put(&v, "\xc6\x00\x01\x11\x70", 5);
	bytes_put(&v, big, 70000);
	b = edited("heartbeat", "x_big", SET, v.p, v.n);
	snprintf(want, sizeof(want), "heartbeat: string of 70000 bytes at byte %zu exceeds 65536",
		 b.n - 70005);
	expect(b, -E2BIG, want);
	bytes_free(&b);
	bytes_free(&v);
}

static void test_limits(void **state)
{
	struct bytes b = sample("register"), c = { NULL, 0 };
	uint8_t *big = NULL;

	/* trailing bytes */
	bytes_put(&b, "\xc0\xc0", 2);
	expect(b, -EBADMSG, "register: trailing data after the message (2 bytes)");
	/* larger than a register may be */
	big = calloc(1, OVL_MSG_SMALL_MAX_BYTES + 1);
	memcpy(big, b.p, b.n);
	c.p = big;
	c.n = OVL_MSG_SMALL_MAX_BYTES + 1;
	expect(c, -E2BIG, "register: message is larger than 1048576 bytes");
	free(big);
	bytes_free(&b);

	/* more than 64 keys in a map */
	b = sample("heartbeat");
	for (int i = 0; i < 60; i++) {
		struct bytes n = { NULL, 0 };
		char key[8];

		snprintf(key, sizeof(key), "x%02d", i);
		edit_obj(b.p, b.n, key, SET, V("\x01"), &n);
		bytes_free(&b);
		b = n;
	}
	expect(b, -EBADMSG, "heartbeat: message has 65 keys, more than 64");
	bytes_free(&b);
	{
		struct bytes v = { NULL, 0 };

		bytes_put(&v, "\xde\x00\x41", 3);
		for (int i = 0; i < 65; i++) {
			uint8_t kv[3] = { 0xa1, (uint8_t)(0x30 + i), 0x01 };

			bytes_put(&v, kv, 3);
		}
		b = edited("map", "members.2", SET, v.p, v.n);
		expect(b, -EBADMSG, "map: field 'members[2]' has 65 keys, more than 64");
		bytes_free(&b);
		bytes_free(&v);
	}
	/* ext types are refused anywhere */
	b = edited("heartbeat", "x_ext", SET, V("\xd4\x01\x02"));
	{
		char want[96];

		snprintf(want, sizeof(want), "heartbeat: ext type at byte %zu is not allowed", b.n - 3);
		expect(b, -EBADMSG, want);
	}
	bytes_free(&b);
	/* unknown keys must be UTF-8 too */
	b = sample("heartbeat");
	{
		struct bytes n = { NULL, 0 };

		edit_obj(b.p, b.n, "x\xff", SET, V("\x01"), &n);
		expect(n, -EBADMSG, "heartbeat: a key is not valid UTF-8");
		bytes_free(&n);
	}
	bytes_free(&b);
	/* NULL buffer */
	b.p = NULL;
	b.n = 10;
	expect(b, -EBADMSG, "message: empty message");
}

static void test_encoder_refuses_invalid(void **state)
{
	struct ovl_msg m;
	msgpack_sbuffer sb;
	char err[256];

	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_write(&sb, "abc", 3);

	msg_sample_build(sample_index("register"), &m);
	memset(m.u.reg.board, 'x', sizeof(m.u.reg.board));
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "register: field 'board' is longer than 31 bytes");
	assert_int_equal(sb.size, 3); /* left as it was */
	strcpy(m.u.reg.board, "\xc3");
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "register: field 'board' is not valid UTF-8");
	strcpy(m.u.reg.board, "sim");
	m.u.reg.port = 0;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "register: field 'port' is 0, below the minimum 1");
	m.u.reg.port = 1;
	m.u.reg.slices[1].epoch = 5;
	strcpy(m.u.reg.slices[1].name, "");
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0); /* empty name is a value */
	m.u.reg.n_slices = OVL_MSG_SLICES_MAX + 1;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "register: field 'slices' has 1025 elements, more than 1024");
	m.u.reg.n_slices = 2;
	ovl_msg_release(&m);

	msg_sample_build(sample_index("map"), &m);
	m.u.map.members[3].state = (enum ovl_msg_state)9;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'members[3].state' has no valid value (9)");
	m.u.map.members[3].state = OVL_MSG_STATE_UNKNOWN; /* an open enum: "unknown" */
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	m.u.map.ts.len = OVL_MSG_OPAQUE_MAX_BYTES + 1;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'ts' is longer than 4096 bytes");
	m.u.map.ts.ptr = NULL;
	m.u.map.ts.len = 3;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'ts' has a length but no bytes");
	ovl_msg_release(&m);

	ovl_msg_init(&m, OVL_MSG_MAP);
	m.u.map.replicas = 1;
	m.u.map.n_members = 2;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'members' has a count but no elements");

	ovl_msg_init(&m, OVL_MSG_ADMIN);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "admin: field 'op' has no valid value (0)");
	m.u.admin.op = OVL_MSG_ADMIN_SHOW_MAP;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "admin: op 'show_map' requires field 'slice'");
	m.u.admin.op = OVL_MSG_ADMIN_LIST_NODES;
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);

	ovl_msg_init(&m, OVL_MSG_NONE);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "message: unknown message type 0");
	msgpack_sbuffer_destroy(&sb);
}

static void test_worst_case_small_message_fits(void **state)
{
	struct ovl_msg m;
	msgpack_sbuffer sb;
	char err[256];
	uint8_t ts[OVL_MSG_OPAQUE_MAX_BYTES] = { 0 };

	/* the largest small message the schemas allow stays under the small limit */
	ovl_msg_init(&m, OVL_MSG_HEARTBEAT_OK);
	m.u.hb_ok.ts.ptr = ts;
	m.u.hb_ok.ts.len = sizeof(ts);
	m.u.hb_ok.slices = calloc(OVL_MSG_SLICES_MAX, sizeof(struct ovl_msg_slice));
	m.u.hb_ok.n_slices = OVL_MSG_SLICES_MAX;
	for (int i = 0; i < OVL_MSG_SLICES_MAX; i++) {
		memset(m.u.hb_ok.slices[i].name, 'n', OVL_MSG_NAME_SIZE - 1);
		m.u.hb_ok.slices[i].epoch = UINT64_MAX;
	}
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_true(sb.size < OVL_MSG_SMALL_MAX_BYTES);
	msgpack_sbuffer_destroy(&sb);
	ovl_msg_release(&m);
}

static bool no_arrays(const struct ovl_msg_schema *s)
{
	for (unsigned i = 0; i < s->nfields; i++) {
		if (s->fields[i].type == OVL_MSG_F_ARRAY)
			return false;
		if (s->fields[i].type == OVL_MSG_F_STRUCT && !no_arrays(s->fields[i].sub))
			return false;
	}
	return true;
}

static void test_errors_and_api_edges(void **state)
{
	struct bytes b = edited("register", "port", SET, V("\xc0"));
	struct ovl_msg m;
	char small[12];

	/* a short error buffer is truncated and terminated */
	memset(small, 'x', sizeof(small));
	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, small, sizeof(small)), -EBADMSG);
	assert_string_equal(small, "register: f");
	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, NULL, 0), -EBADMSG);
	bytes_free(&b);
	ovl_msg_release(NULL);

	/* release frees the arrays, NULLs them, and a second release is harmless */
	b = sample("admin_ok");
	assert_int_equal(ovl_msg_decode(b.p, b.n, &m, small, sizeof(small)), 0);
	assert_non_null(m.u.admin_ok.nodes);
	assert_int_equal(m.u.admin_ok.n_stats, 2);
	ovl_msg_release(&m);
	assert_int_equal(m.type, OVL_MSG_NONE);
	assert_null(m.u.admin_ok.nodes);
	assert_null(m.u.admin_ok.slices);
	assert_null(m.u.admin_ok.stats);
	assert_int_equal(m.u.admin_ok.n_nodes + m.u.admin_ok.n_slices + m.u.admin_ok.n_stats, 0);
	ovl_msg_release(&m);
	bytes_free(&b);

	assert_string_equal(ovl_msg_type_name(OVL_MSG_MAP_DELTA), "map_delta");
	assert_null(ovl_msg_type_name(OVL_MSG_NONE));
	assert_null(ovl_msg_type_name(OVL_MSG_TYPE_COUNT));
	assert_string_equal(ovl_msg_state_name(OVL_MSG_STATE_OUT), "out");
	assert_null(ovl_msg_state_name((enum ovl_msg_state)7));
	assert_string_equal(ovl_msg_admin_op_name(OVL_MSG_ADMIN_STATS), "stats");
	assert_null(ovl_msg_admin_op_name(OVL_MSG_ADMIN_NONE));
	for (int t = OVL_MSG_NONE + 1; t < OVL_MSG_TYPE_COUNT; t++) {
		const struct ovl_msg_schema *s = ovl_msg_schema_find((enum ovl_msg_type)t);

		assert_non_null(s);
		assert_string_equal(s->name, ovl_msg_type_name((enum ovl_msg_type)t));
		assert_true(s->nfields <= 60);
		assert_true(s->max_bytes >= OVL_MSG_SMALL_MAX_BYTES);
		for (unsigned i = 0; i < s->nfields; i++) {
			const struct ovl_msg_field *f = &s->fields[i];

			/* ovl_msg_release() relies on arrays being message fields only */
			if (f->type == OVL_MSG_F_ARRAY)
				assert_true(f->elem->type != OVL_MSG_F_ARRAY &&
					    (f->elem->type != OVL_MSG_F_STRUCT || no_arrays(f->elem->sub)));
			if (f->type == OVL_MSG_F_STRUCT)
				assert_true(no_arrays(f->sub));
			assert_int_equal(strlen(s->fields[i].name), s->fields[i].name_len);
			assert_true(strcmp(s->fields[i].name, "v") && strcmp(s->fields[i].name, "t") &&
				    strcmp(s->fields[i].name, "rid"));
			for (unsigned j = 0; j < i; j++)
				assert_true(strcmp(s->fields[i].name, s->fields[j].name));
		}
	}
	assert_null(ovl_msg_schema_find(OVL_MSG_NONE));
}

/* The sample called name, built into *m (NULL when there is none). */
static const char *msg_sample_build_named(const char *name, struct ovl_msg *m)
{
	for (int i = 0; i < msg_sample_count(); i++) {
		const char *n = msg_sample_build(i, m);

		if (strcmp(n, name) == 0)
			return n;
		ovl_msg_release(m);
	}
	return NULL;
}

/* Map signatures (PROTOCOL.md 6.4): what they cover and what they do not. */
static void test_map_signature(void **state)
{
	uint8_t seed[32], pk[32], sk[64], other_pk[32], other_sk[64];
	struct ovl_msg m, d;
	struct ovl_msg_member tmp;
	msgpack_sbuffer sb, in1, in2;
	char err[256];

	(void)state;
	memset(seed, 0x22, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	memset(seed, 0x33, sizeof(seed));
	crypto_sign_seed_keypair(other_pk, other_sk, seed);
	assert_non_null(msg_sample_build_named("map", &m));
	/* unsigned: refused */
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
	assert_int_equal(ovl_msg_map_sign(&m.u.map, sk), 0);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), 0);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, other_pk), -EKEYREJECTED);

	/* the signed bytes start with the domain and its 0x00, then an array of 5 */
	msgpack_sbuffer_init(&in1);
	assert_int_equal(ovl_msg_map_sig_input(&m.u.map, &in1), 0);
	assert_memory_equal(in1.data, "shelf-map-v1\0\x95\xa5" "alpha\x09\x03\xc2\x95", 22);

	/* member order does not matter (nodes apply deltas in their own order) */
	tmp = m.u.map.members[0];
	m.u.map.members[0] = m.u.map.members[4];
	m.u.map.members[4] = tmp;
	msgpack_sbuffer_init(&in2);
	assert_int_equal(ovl_msg_map_sig_input(&m.u.map, &in2), 0);
	assert_int_equal(in1.size, in2.size);
	assert_memory_equal(in1.data, in2.data, in1.size);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), 0);
	msgpack_sbuffer_destroy(&in1);
	msgpack_sbuffer_destroy(&in2);

	/* ts and crl are not covered; everything else is */
	m.u.map.ts.len--;
	m.u.map.crl = m.u.map.ts;
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), 0);
	m.u.map.epoch++;
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
	m.u.map.epoch--;
	m.u.map.encrypt = true;
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
	m.u.map.encrypt = false;
	{
		enum ovl_msg_state was = m.u.map.members[2].state;

		m.u.map.members[2].state = was == OVL_MSG_STATE_DOWN ? OVL_MSG_STATE_UP
								      : OVL_MSG_STATE_DOWN;
		assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
		m.u.map.members[2].state = was;
	}
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), 0);
	m.u.map.members[3].port ^= 1;
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
	m.u.map.members[3].port ^= 1;
	m.u.map.members[1].cert = (struct ovl_msg_bin){ seed, 7 };
	assert_int_equal(ovl_msg_map_verify(&m.u.map, pk), -EKEYREJECTED);
	ovl_msg_release(&m);

	/* encrypt and sig survive encoding; a map without them reads as not encrypted */
	assert_non_null(msg_sample_build_named("map", &m));
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_false(d.u.map.encrypt);
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	ovl_msg_release(&d);
	msgpack_sbuffer_clear(&sb);
	m.u.map.encrypt = true;
	assert_int_equal(ovl_msg_map_sign(&m.u.map, sk), 0);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_true(d.u.map.encrypt);
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), 0);
	ovl_msg_release(&d);
	ovl_msg_release(&m);
	msgpack_sbuffer_destroy(&sb);
}

/* Removal records (`left`, 1.3): they survive encoding, a map with them
 * signs them (a sixth element), a map without them signs as before. */
static void test_map_left_records(void **state)
{
	uint8_t seed[32], pk[32], sk[64];
	struct ovl_msg m, d;
	struct ovl_msg_left rec[2];
	msgpack_sbuffer sb, in;
	char err[256];

	(void)state;
	memset(seed, 0x22, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	assert_non_null(msg_sample_build_named("map", &m));
	memset(rec, 0, sizeof(rec));
	memset(rec[0].id, 0xee, OVL_MSG_ID_BYTES);
	rec[0].epoch = 7;
	rec[0].reason = OVL_MSG_LEFT_EXPIRED;
	memset(rec[1].id, 0x11, OVL_MSG_ID_BYTES);
	rec[1].epoch = 8;
	rec[1].reason = OVL_MSG_LEFT_REVOKED;
	m.u.map.left = rec;
	m.u.map.n_left = 2;
	msgpack_sbuffer_init(&in);
	assert_int_equal(ovl_msg_map_sig_input(&m.u.map, &in), 0);
	assert_memory_equal(in.data, "shelf-map-v1\0\x96", 14);
	msgpack_sbuffer_destroy(&in);
	assert_int_equal(ovl_msg_map_sign(&m.u.map, sk), 0);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.map.n_left, 2);
	assert_int_equal(d.u.map.left[1].epoch, 8);
	assert_int_equal(d.u.map.left[1].reason, OVL_MSG_LEFT_REVOKED);
	assert_string_equal(ovl_msg_left_reason_name(d.u.map.left[0].reason), "expired");
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), 0);
	/* records are covered: another epoch, another reason, or none, fail */
	d.u.map.left[0].epoch++;
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	d.u.map.left[0].epoch--;
	d.u.map.left[1].reason = OVL_MSG_LEFT_DELETED;
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	d.u.map.left[1].reason = OVL_MSG_LEFT_REVOKED;
	d.u.map.n_left = 1;
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	d.u.map.n_left = 2;
	/* their order does not matter */
	rec[0] = d.u.map.left[1];
	d.u.map.left[1] = d.u.map.left[0];
	d.u.map.left[0] = rec[0];
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), 0);
	ovl_msg_release(&d);
	msgpack_sbuffer_destroy(&sb);
	m.u.map.left = NULL;
	m.u.map.n_left = 0;
	ovl_msg_release(&m);
}

/*
 * min_write_replicas (1.5): an optional uint in map and map_report (signed),
 * in slice references and in admin create_slice; at most replicas; absent
 * means replicas; a map without it is, and signs, exactly as before.
 */
static void test_map_min_write(void **state)
{
	uint8_t seed[32], pk[32], sk[64];
	struct bytes plain = sample("map"), with = { NULL, 0 }, old = { NULL, 0 },
		     renamed = { NULL, 0 };
	struct ovl_msg m, d;
	msgpack_sbuffer sb, in1, in2;
	char err[512];

	(void)state;
	memset(seed, 0x22, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);

	/* absent: W = replicas, and the encoding has no such key */
	assert_non_null(msg_sample_build_named("map", &m));
	assert_int_equal(m.u.map.replicas, 3);
	assert_int_equal(ovl_msg_map_min_write(&m.u.map), 3);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(sb.size, plain.n);
	assert_memory_equal(sb.data, plain.p, plain.n);
	assert_null(memmem(sb.data, sb.size, "min_write_replicas", 18));
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_init(&in1);
	assert_int_equal(ovl_msg_map_sig_input(&m.u.map, &in1), 0);

	/* round trip with W = 2, signed: the signed array grows to 7 elements,
	 * [..., members, left (empty), 2] */
	m.u.map.min_write_replicas = 2;
	assert_int_equal(ovl_msg_map_min_write(&m.u.map), 2);
	msgpack_sbuffer_init(&in2);
	assert_int_equal(ovl_msg_map_sig_input(&m.u.map, &in2), 0);
	assert_memory_equal(in2.data, "shelf-map-v1\0\x97", 14);
	assert_int_equal(in2.size, in1.size + 2);
	assert_memory_equal(in2.data + 14, in1.data + 14, in1.size - 14);
	assert_memory_equal(in2.data + in1.size, "\x90\x02", 2);
	msgpack_sbuffer_destroy(&in1);
	msgpack_sbuffer_destroy(&in2);
	assert_int_equal(ovl_msg_map_sign(&m.u.map, sk), 0);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.map.min_write_replicas, 2);
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), 0);
	/* covered by the signature: another W, or none, fails */
	d.u.map.min_write_replicas = 3;
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	d.u.map.min_write_replicas = 0;
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	ovl_msg_release(&d);
	with.p = malloc(sb.size);
	assert_non_null(with.p);
	memcpy(with.p, sb.data, sb.size);
	with.n = sb.size;
	msgpack_sbuffer_destroy(&sb);

	/* an older reader: the key is one it does not know, skipped like any
	 * other (shown here under a name this build does not know either); it
	 * then cannot verify the map (W is signed), so it refuses the map
	 * rather than act on it without W: a broker sends W only below R */
	edit_obj(with.p, with.n, "min_write_replicas", DROP, NULL, 0, &old);
	edit_obj(old.p, old.n, "min_write_replicaz", SET, V("\x02"), &renamed);
	assert_int_equal(ovl_msg_decode(renamed.p, renamed.n, &d, err, sizeof(err)), 0);
	assert_int_equal(d.u.map.min_write_replicas, 0);
	assert_int_equal(d.u.map.replicas, 3);
	assert_int_equal(d.u.map.n_members, m.u.map.n_members);
	assert_int_equal(ovl_msg_map_verify(&d.u.map, pk), -EKEYREJECTED);
	ovl_msg_release(&d);
	bytes_free(&old);
	bytes_free(&renamed);

	/* bounds: 1..replicas (3 here), and 16 at most anywhere */
	expect_edit("map", "min_write_replicas", SET, V("\x03"), 0, "");
	expect_edit("map", "min_write_replicas", SET, V("\x01"), 0, "");
	expect_edit("map", "min_write_replicas", SET, V("\x04"), -EBADMSG,
		    "map: field 'min_write_replicas' (4) must be at most 'replicas' (3)");
	expect_edit("map", "min_write_replicas", SET, V("\x11"), -EBADMSG,
		    "map: field 'min_write_replicas' is 17, above the maximum 16");
	expect_edit("map", "min_write_replicas", SET, V("\xa1" "2"), -EBADMSG,
		    "map: field 'min_write_replicas' is not an unsigned integer");
	expect_edit("map", "min_write_replicas", SET, V("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"),
		    -EBADMSG, "map: field 'min_write_replicas' is 18446744073709551615, above the maximum 16");
	expect_edit("map", "min_write_replicas", SET, V("\xff"), -EBADMSG,
		    "map: field 'min_write_replicas' is negative");
	/* the encoder refuses what the decoder would */
	m.u.map.min_write_replicas = 4;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map: field 'min_write_replicas' (4) must be at most 'replicas' (3)");
	assert_int_equal(sb.size, 0);
	msgpack_sbuffer_destroy(&sb);
	/* map_report: the same field and rule */
	m.type = OVL_MSG_MAP_REPORT;
	m.u.map.min_write_replicas = 2;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), 0);
	assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, OVL_MSG_MAP_REPORT);
	assert_int_equal(d.u.report.min_write_replicas, 2);
	assert_int_equal(ovl_msg_map_verify(&d.u.report, pk), 0);
	ovl_msg_release(&d);
	msgpack_sbuffer_destroy(&sb);
	m.u.map.min_write_replicas = 5;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(&m, &sb, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "map_report: field 'min_write_replicas' (5) must be at most "
			    "'replicas' (3)");
	msgpack_sbuffer_destroy(&sb);
	m.type = OVL_MSG_MAP;
	ovl_msg_release(&m);

	/* a slice reference: W and allow_same_domain round trip; W needs replicas */
	{
		struct ovl_msg a;

		ovl_msg_init(&a, OVL_MSG_ADMIN_OK);
		a.u.admin_ok.ts = (struct ovl_msg_bin){ seed, 8 };
		a.u.admin_ok.op = OVL_MSG_ADMIN_LIST_SLICES;
		a.u.admin_ok.slices = calloc(2, sizeof(*a.u.admin_ok.slices));
		assert_non_null(a.u.admin_ok.slices);
		a.u.admin_ok.n_slices = 2;
		snprintf(a.u.admin_ok.slices[0].name, OVL_MSG_NAME_SIZE, "hot");
		a.u.admin_ok.slices[0].replicas = 3;
		a.u.admin_ok.slices[0].min_write_replicas = 2;
		a.u.admin_ok.slices[0].allow_same_domain = true;
		snprintf(a.u.admin_ok.slices[1].name, OVL_MSG_NAME_SIZE, "cold");
		a.u.admin_ok.slices[1].replicas = 1;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(ovl_msg_encode(&a, &sb, err, sizeof(err)), 0);
		assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
		assert_int_equal(d.u.admin_ok.slices[0].min_write_replicas, 2);
		assert_true(d.u.admin_ok.slices[0].allow_same_domain);
		assert_int_equal(d.u.admin_ok.slices[1].min_write_replicas, 0);
		assert_false(d.u.admin_ok.slices[1].allow_same_domain);
		ovl_msg_release(&d);
		msgpack_sbuffer_destroy(&sb);
		a.u.admin_ok.slices[1].replicas = 0;
		a.u.admin_ok.slices[1].min_write_replicas = 1;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(ovl_msg_encode(&a, &sb, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "field 'min_write_replicas' (1) needs field 'replicas'"));
		msgpack_sbuffer_destroy(&sb);
		ovl_msg_release(&a);
	}
	/* admin create_slice: W at most replicas */
	{
		struct ovl_msg a;

		ovl_msg_init(&a, OVL_MSG_ADMIN);
		a.u.admin.op = OVL_MSG_ADMIN_CREATE_SLICE;
		snprintf(a.u.admin.slice, sizeof(a.u.admin.slice), "hot");
		a.u.admin.replicas = 2;
		a.u.admin.min_write_replicas = 1;
		a.u.admin.allow_same_domain = true;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(ovl_msg_encode(&a, &sb, err, sizeof(err)), 0);
		assert_int_equal(ovl_msg_decode(sb.data, sb.size, &d, err, sizeof(err)), 0);
		assert_int_equal(d.u.admin.min_write_replicas, 1);
		assert_true(d.u.admin.allow_same_domain);
		ovl_msg_release(&d);
		msgpack_sbuffer_destroy(&sb);
		a.u.admin.min_write_replicas = 3;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(ovl_msg_encode(&a, &sb, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "admin: field 'min_write_replicas' (3) must be at most "
				    "'replicas' (2)");
		msgpack_sbuffer_destroy(&sb);
	}
	bytes_free(&with);
	bytes_free(&plain);
}

/* ---- the succession rule (ovl_map.h) ------------------------------------ */

static void succ_map(struct ovl_msg_map *m, uint64_t epoch, unsigned n, unsigned first)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->slice, sizeof(m->slice), "hot");
	m->epoch = epoch;
	m->replicas = 2;
	m->members = calloc(n + 1, sizeof(*m->members));
	assert_non_null(m->members);
	for (unsigned i = 0; i < n; i++) {
		msg_sample_member(&m->members[i], first + i);
		m->members[i].state = OVL_MSG_STATE_UP;
	}
	m->n_members = n;
}

static void succ_free(struct ovl_msg_map *m)
{
	free(m->members);
	free(m->left);
	memset(m, 0, sizeof(*m));
}

static void succ_left(struct ovl_msg_map *m, const uint8_t *id, uint64_t epoch)
{
	struct ovl_msg_left *g = realloc(m->left, (m->n_left + 1) * sizeof(*g));

	assert_non_null(g);
	m->left = g;
	memset(&g[m->n_left], 0, sizeof(*g));
	memcpy(g[m->n_left].id, id, OVL_MSG_ID_BYTES);
	g[m->n_left].epoch = epoch;
	g[m->n_left++].reason = OVL_MSG_LEFT_EXPIRED;
}

static void test_map_succession(void **state)
{
	struct ovl_msg_map held, next;
	char err[512], fp[OVL_ID_FP_BYTES];

	(void)state;
	succ_map(&held, 10, 8, 0);
	/* nothing held: anything goes */
	succ_map(&next, 1, 0, 0);
	assert_int_equal(ovl_map_succession_check(NULL, &next, err, sizeof(err)), 0);
	succ_free(&next);
	/* the same members, later: accepted; not later: refused */
	succ_map(&next, 11, 8, 0);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	next.epoch = 10;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -ESTALE);
	assert_non_null(strstr(err, "epoch 10 is not newer"));
	next.epoch = 9;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -ESTALE);
	next.epoch = 11;
	/* a state change (down, out), another certificate or port: accepted */
	next.members[3].state = OVL_MSG_STATE_DOWN;
	next.members[4].state = OVL_MSG_STATE_OUT;
	next.members[5].port ^= 1;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	succ_free(&next);
	/* a member added: accepted */
	succ_map(&next, 12, 9, 0);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	succ_free(&next);
	/* members in another order: accepted */
	succ_map(&next, 12, 8, 0);
	{
		struct ovl_msg_member t = next.members[0];

		next.members[0] = next.members[7];
		next.members[7] = t;
	}
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	succ_free(&next);
	/* a member dropped without a record: refused, naming it and the epochs */
	succ_map(&next, 12, 7, 0);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	ovl_nodeid_fingerprint(held.members[7].id, fp);
	assert_non_null(strstr(err, fp));
	assert_non_null(strstr(err, "slice 'hot' epoch 12 drops 1 member of the map held "
				    "(epoch 10)"));
	/* with a record of its removal after the held epoch: accepted */
	succ_left(&next, held.members[7].id, 11);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	/* a record at or before the held epoch (an older removal, then a
	 * rejoin) or after the new epoch does not count */
	next.left[0].epoch = 10;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	next.left[0].epoch = 13;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	next.left[0].epoch = 12;
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), 0);
	/* a record of another member does not count */
	memcpy(next.left[0].id, held.members[0].id, OVL_MSG_ID_BYTES);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	succ_free(&next);
	/* an empty map after a broker lost its state: refused, up to 4 named */
	succ_map(&next, 40, 0, 0);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "drops 8 members"));
	assert_non_null(strstr(err, ", ..."));
	succ_free(&next);
	/* a map with only the members that came back (the restart bug): refused */
	succ_map(&next, 41, 5, 3);
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "drops 3 members"));
	succ_free(&next);
	/* another slice */
	succ_map(&next, 41, 8, 0);
	snprintf(next.slice, sizeof(next.slice), "cold");
	assert_int_equal(ovl_map_succession_check(&held, &next, err, sizeof(err)), -EINVAL);
	succ_free(&next);
	succ_free(&held);
}

static void test_delta_succession(void **state)
{
	struct ovl_msg_map held;
	struct ovl_msg_map_delta d;
	struct ovl_msg_left rec;
	uint8_t rm[2][OVL_MSG_ID_BYTES];
	struct ovl_msg_member added;
	char err[512];

	(void)state;
	succ_map(&held, 10, 4, 0);
	memset(&d, 0, sizeof(d));
	snprintf(d.slice, sizeof(d.slice), "hot");
	d.base_epoch = 10;
	d.epoch = 11;
	/* a state change */
	added = held.members[1];
	added.state = OVL_MSG_STATE_DOWN;
	d.members = &added;
	d.n_members = 1;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), 0);
	/* not at the held epoch */
	d.base_epoch = 9;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), -ESTALE);
	d.base_epoch = 10;
	/* a removal without a record: refused; with one: accepted */
	d.members = NULL;
	d.n_members = 0;
	memcpy(rm[0], held.members[2].id, OVL_MSG_ID_BYTES);
	d.removed = rm;
	d.n_removed = 1;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "delta of slice 'hot' epoch 11 drops 1 member"));
	memset(&rec, 0, sizeof(rec));
	memcpy(rec.id, rm[0], OVL_MSG_ID_BYTES);
	rec.epoch = 11;
	rec.reason = OVL_MSG_LEFT_REVOKED;
	d.left = &rec;
	d.n_left = 1;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), 0);
	rec.epoch = 10;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), -EPERM);
	/* removing an id the map does not hold needs nothing */
	memset(rm[1], 0x5a, OVL_MSG_ID_BYTES);
	d.removed = &rm[1];
	d.left = NULL;
	d.n_left = 0;
	assert_int_equal(ovl_map_delta_check(&held, &d, err, sizeof(err)), 0);
	succ_free(&held);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_message),
		cmocka_unit_test(test_round_trip_100k_members),
		cmocka_unit_test(test_map_report_limits),
		cmocka_unit_test(test_fleet_fields),
		cmocka_unit_test(test_truncated_every_prefix),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_wrong_type_variants_accepted),
		cmocka_unit_test(test_counts_larger_than_message),
		cmocka_unit_test(test_nesting_10000_deep),
		cmocka_unit_test(test_str32_4gib_header),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_newer_minor_unknown_fields),
		cmocka_unit_test(test_missing_required),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_oversized_bins),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_encoder_refuses_invalid),
		cmocka_unit_test(test_worst_case_small_message_fits),
		cmocka_unit_test(test_errors_and_api_edges),
		cmocka_unit_test(test_map_signature),
		cmocka_unit_test(test_map_left_records),
		cmocka_unit_test(test_map_min_write),
		cmocka_unit_test(test_map_succession),
		cmocka_unit_test(test_delta_succession),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
