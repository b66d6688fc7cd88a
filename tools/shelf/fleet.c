/*
 * fleet.c: `shelf fleet ...`, fleet updates (issue 16):
 *
 *   shelf fleet publish IMAGE [--slice system]
 *   shelf fleet rollout start VERSION [--board B] [--stages canary,chassis,100%]
 *                       [--max-failed N] [--soak DURATION]
 *   shelf fleet rollout status [--json] [--watch [SECONDS]] [--count N]
 *   shelf fleet rollout halt | resume | abort
 *   shelf fleet versions [--json]
 *
 * publish verifies the image whole (head, release certificate against the
 * site CA of the client directory, signature, expiry, every block and the
 * payload's SHA-256) before storing anything, then stores each block,
 * checked again as it is read, under its reserved key through libshelf with
 * the client identity, and only then tells the broker (admin request
 * `publish`). The other commands are admin requests `fleet` (request and
 * reply: msgpack maps, fleet_design.md 3.7).
 *
 * Exit codes: 0 ok; 1 refused or failed (the message says why); 2 usage;
 * 3 not found (broker answer); 4 `rollout status` of a rollout that is
 * halted (or whose state file was unreadable).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <sodium.h>

#include "overlay.h"
#include "ovl_fleet.h"
#include "admin.h"
#include "data.h"
#include "json.h"
#include "shelf.h"
#include "text.h"

#define FLEET_TIMEOUT_MS 10000

struct fopts {
	const char *broker, *admin, *client, *slice, *board, *stages, *max_failed, *soak;
	bool json, watch;
	unsigned watch_s, count;
	int timeout_ms;
	const char *arg;
};

static int fusage(FILE *f, int code)
{
	fprintf(f,
		"usage: shelf fleet publish IMAGE [--slice NAME] [--client DIR]\n"
		"       shelf fleet rollout start VERSION [--board B] [--stages canary,chassis,5%%,100%%]\n"
		"                           [--max-failed N] [--soak DURATION]\n"
		"       shelf fleet rollout status [--json] [--watch [SECONDS]] [--count N]\n"
		"       shelf fleet rollout halt | resume | abort\n"
		"       shelf fleet versions [--json]\n"
		"common: [--broker ENDPOINT] [--admin DIR] [--timeout MS]\n"
		"  --broker ENDPOINT  broker (default $SHELF_BROKER, else tcp://[::1]:7400)\n"
		"  --admin DIR        admin.key and broker.pub (default $SHELF_ADMIN, else .)\n"
		"  --client DIR       publish: the client identity that stores the blocks\n"
		"                     (default $SHELF_CLIENT; its ca.pub checks the image)\n"
		"  --slice NAME       publish: the slice of the blocks (default system)\n"
		"  --stages LIST      canary (1 node), chassis (the canary's chassis), N%% of the\n"
		"                     nodes to update (cumulative); the last must be 100%%\n"
		"                     (default canary,chassis,100%%)\n"
		"  --max-failed N     failures a rollout tolerates before it halts (default 0)\n"
		"  --soak DURATION    time each stage runs healthy before the next (default: the\n"
		"                     broker's fleet_soak_ms, 60s)\n"
		"exit codes: 0 ok, 1 refused/failed, 2 usage, 3 not found, 4 status: halted\n");
	return code;
}

static int fparse(int argc, char **argv, struct fopts *o)
{
	static const struct option lo[] = {
		{ "broker", 1, NULL, 'b' }, { "admin", 1, NULL, 'a' }, { "client", 1, NULL, 'c' },
		{ "slice", 1, NULL, 's' }, { "board", 1, NULL, 'B' }, { "stages", 1, NULL, 'S' },
		{ "max-failed", 1, NULL, 'm' }, { "soak", 1, NULL, 'k' }, { "json", 0, NULL, 'j' },
		{ "watch", 2, NULL, 'w' }, { "count", 1, NULL, 'n' }, { "timeout", 1, NULL, 't' },
		{ "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 }
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	o->admin = cli_env("SHELF_ADMIN", ".");
	o->client = getenv("SHELF_CLIENT");
	o->slice = "system";
	o->timeout_ms = FLEET_TIMEOUT_MS;
	o->watch_s = 2;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'b': o->broker = optarg; break;
		case 'a': o->admin = optarg; break;
		case 'c': o->client = optarg; break;
		case 's': o->slice = optarg; break;
		case 'B': o->board = optarg; break;
		case 'S': o->stages = optarg; break;
		case 'm': o->max_failed = optarg; break;
		case 'k': o->soak = optarg; break;
		case 'j': o->json = true; break;
		case 'w':
			o->watch = true;
			if (optarg) {
				char *end = NULL;
				unsigned long v = strtoul(optarg, &end, 10);

				if (!*optarg || *end || v < 1 || v > 86400) {
					fprintf(stderr, "shelf fleet: --watch '%s': seconds 1..86400\n",
						optarg);
					return 2;
				}
				o->watch_s = (unsigned)v;
			}
			break;
		case 'n': {
			char *end = NULL;
			unsigned long v = strtoul(optarg, &end, 10);

			if (!*optarg || *end || v < 1 || v > 1000000) {
				fprintf(stderr, "shelf fleet: --count '%s': 1..1000000\n", optarg);
				return 2;
			}
			o->count = (unsigned)v;
			break;
		}
		case 't': {
			char *end = NULL;
			long v = strtol(optarg, &end, 10);

			if (!*optarg || *end || v < 100 || v > 3600000) {
				fprintf(stderr, "shelf fleet: --timeout '%s': 100..3600000 ms\n", optarg);
				return 2;
			}
			o->timeout_ms = (int)v;
			break;
		}
		case 'h': fusage(stdout, 0); return -1;
		default: return fusage(stderr, 2);
		}
	}
	if (optind < argc)
		o->arg = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "shelf fleet: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return 0;
}

/* ---- the admin request and its reply -------------------------------------------- */

/* A string field as a C string into buf (empty when absent or not a string). */
static const char *mstr(const msgpack_object *m, const char *key, char *buf, size_t cap)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);
	size_t n;

	buf[0] = '\0';
	if (!o || o->type != MSGPACK_OBJECT_STR)
		return buf;
	n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
	memcpy(buf, o->via.str.ptr, n);
	buf[n] = '\0';
	return buf;
}

static uint64_t mu(const msgpack_object *m, const char *key)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

static int64_t mi(const msgpack_object *m, const char *key)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : 0;
}

static bool mb(const msgpack_object *m, const char *key)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	return o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
}

/* A reply document, decoded. */
struct reply {
	msgpack_unpacked up;
	const msgpack_object *doc;
	uint8_t *bytes;          /* the document's bytes: its strings point into them */
};

static void reply_release(struct reply *r)
{
	msgpack_unpacked_destroy(&r->up);
	free(r->bytes);
	r->bytes = NULL;
	r->doc = NULL;
}

/*
 * Send the fleet request req[0..len) and decode the reply into r. Returns 0
 * with r (reply_release), or an exit code with a message printed (1: the
 * broker refused, ok false, or failed; 3 not found).
 */
static int fleet_call(const struct fopts *o, const char *what, const msgpack_sbuffer *req,
		      struct reply *r)
{
	struct ovl_msg m;
	struct admin_call a;
	char err[512], e[512];
	int code;

	msgpack_unpacked_init(&r->up);
	r->doc = NULL;
	r->bytes = NULL;
	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_FLEET;
	m.u.admin.fleet = (struct ovl_msg_bin){ (const uint8_t *)req->data, req->size };
	code = admin_query(o->broker, o->admin, o->timeout_ms, &m, &a, err, sizeof(err));
	if (code) {
		fprintf(stderr, "shelf fleet %s: %s\n", what, err);
		return code;
	}
	code = 1;
	if (a.reply.type != OVL_MSG_ADMIN_OK || !a.reply.u.admin_ok.fleet.len) {
		fprintf(stderr, "shelf fleet %s: the broker answered without a fleet document "
			"(does it know fleet updates?)\n", what);
		goto out;
	}
	r->bytes = malloc(a.reply.u.admin_ok.fleet.len);
	if (!r->bytes) {
		fprintf(stderr, "shelf fleet %s: out of memory\n", what);
		goto out;
	}
	memcpy(r->bytes, a.reply.u.admin_ok.fleet.ptr, a.reply.u.admin_ok.fleet.len);
	if (ovl_mp_check(r->bytes, a.reply.u.admin_ok.fleet.len, &ovl_mp_limits_default, NULL, e,
			 sizeof(e)) < 0 ||
	    msgpack_unpack_next(&r->up, (const char *)r->bytes, a.reply.u.admin_ok.fleet.len,
				NULL) != MSGPACK_UNPACK_SUCCESS ||
	    r->up.data.type != MSGPACK_OBJECT_MAP) {
		fprintf(stderr, "shelf fleet %s: the broker's answer does not decode\n", what);
		goto out;
	}
	r->doc = &r->up.data;
	if (!mb(r->doc, "ok")) {
		fprintf(stderr, "shelf fleet %s: %s\n", what, mstr(r->doc, "error", e, sizeof(e)));
		goto out;
	}
	code = 0;
out:
	admin_call_release(&a);
	if (code)
		reply_release(r);
	return code;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pk_head(msgpack_packer *pk, size_t extra, const char *cmd)
{
	msgpack_pack_map(pk, 2 + extra);
	pk_str(pk, "v");
	msgpack_pack_uint64(pk, 1);
	pk_str(pk, "cmd");
	pk_str(pk, cmd);
}

/* ---- JSON of a msgpack document ---------------------------------------------------- */

static void json_obj(FILE *f, const msgpack_object *o, int ind)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: fputs("null", f); break;
	case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%llu", (unsigned long long)o->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%lld", (long long)o->via.i64); break;
	case MSGPACK_OBJECT_STR: cli_json_str(f, o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN: {
		fputc('"', f);
		for (uint32_t i = 0; i < o->via.bin.size; i++)
			fprintf(f, "%02x", (uint8_t)o->via.bin.ptr[i]);
		fputc('"', f);
		break;
	}
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', f);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			fprintf(f, "%s\n%*s", i ? "," : "", ind + 2, "");
			json_obj(f, &o->via.array.ptr[i], ind + 2);
		}
		if (o->via.array.size)
			fprintf(f, "\n%*s", ind, "");
		fputc(']', f);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', f);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];

			fprintf(f, "%s\n%*s", i ? "," : "", ind + 2, "");
			if (kv->key.type == MSGPACK_OBJECT_STR)
				cli_json_str(f, kv->key.via.str.ptr, kv->key.via.str.size);
			else
				fputs("\"?\"", f);
			fputs(": ", f);
			json_obj(f, &kv->val, ind + 2);
		}
		if (o->via.map.size)
			fprintf(f, "\n%*s", ind, "");
		fputc('}', f);
		break;
	default: fputs("null", f); break; /* floats and ext: not in these documents */
	}
}

/* ---- publish ----------------------------------------------------------------------- */

static int read_ca(const char *dir, uint8_t ca[OVL_ID_BYTES], char *err, size_t errlen)
{
	char path[600], buf[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f) || (buf[strcspn(buf, "\r\n")] = 0) ||
	    ovl_nodeid_parse(buf, ca) < 0) {
		if (f)
			fclose(f);
		snprintf(err, errlen, "cannot read the site CA key from '%s'", path);
		return -EINVAL;
	}
	fclose(f);
	return 0;
}

/* Bytes this process wrote (files and sockets) so far, from /proc/self/io. */
static uint64_t io_written(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	unsigned long long v = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "wchar: %llu", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* Read block i of the payload (at off) into buf and verify it. 0, or -errno with err. */
static int block_read(int fd, uint64_t payload_off, const struct ovl_fleet_release *r,
		      uint32_t i, uint8_t *buf, size_t *len, char *err, size_t errlen)
{
	uint64_t bl = ovl_fleet_block_len(r, i);
	size_t got = 0;

	while (got < bl) {
		ssize_t n = pread(fd, buf + got, bl - got,
				  (off_t)(payload_off + (uint64_t)i * r->block_size + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "block %u: the image is truncated", i);
			return -EIO;
		}
		got += (size_t)n;
	}
	*len = got;
	return ovl_fleet_block_check(r, i, buf, got, err, errlen);
}

static int cmd_publish(int argc, char **argv)
{
	struct fopts o;
	struct ovl_fleet_head_hold { uint8_t *buf; } hh = { NULL };
	struct ovl_fleet_image_head h;
	struct ovl_fleet_release r;
	struct ovl_trust trust;
	struct shelf *s = NULL;
	struct reply rep = { 0 };
	crypto_hash_sha256_state sha;
	uint8_t digest[32], *blk = NULL;
	char err[SHELF_ERR_BYTES], idhex[65], tmp[64];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct stat st;
	uint64_t w0, w1, payload = 0, t0;
	int fd = -1, code = 1, rc;

	memset(&r, 0, sizeof(r));
	memset(&trust, 0, sizeof(trust));
	msgpack_sbuffer_init(&sb);
	rc = fparse(argc, argv, &o);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (!o.arg)
		return fusage(stderr, 2);
	if (!o.client) {
		fprintf(stderr, "shelf fleet publish: no client identity: use --client DIR or "
			"SHELF_CLIENT (made by `shelf-broker client`, for the slice '%s')\n", o.slice);
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	w0 = io_written();
	t0 = ovl_mono_ms();
	fd = open(o.arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "shelf fleet publish: cannot open '%s': %s\n", o.arg, strerror(errno));
		goto out;
	}
	if ((rc = ovl_fleet_image_read_head(fd, &hh.buf, &h, err, sizeof(err))) < 0 ||
	    (rc = read_ca(o.client, trust.ca_pk, err, sizeof(err))) < 0 ||
	    (rc = ovl_fleet_release_verify(&r, h.meta, h.meta_len, h.cert, h.cert_len, &trust,
					   (uint64_t)time(NULL), NULL, NULL, err,
					   sizeof(err))) < 0) {
		fprintf(stderr, "shelf fleet publish: '%s' refused: %s\n", o.arg, err);
		goto out;
	}
	if ((uint64_t)st.st_size != h.head_len + r.size) {
		fprintf(stderr, "shelf fleet publish: '%s' refused: %llu bytes, the metadata says "
			"%llu (head) + %llu (payload)\n", o.arg, (unsigned long long)st.st_size,
			(unsigned long long)h.head_len, (unsigned long long)r.size);
		goto out;
	}
	blk = malloc(r.block_size);
	if (!blk) {
		fprintf(stderr, "shelf fleet publish: out of memory\n");
		goto out;
	}
	/* the whole image verifies before one byte is stored */
	crypto_hash_sha256_init(&sha);
	for (uint32_t i = 0; i < r.nblocks; i++) {
		size_t len;

		if (block_read(fd, h.head_len, &r, i, blk, &len, err, sizeof(err)) < 0) {
			fprintf(stderr, "shelf fleet publish: '%s' refused: %s\n", o.arg, err);
			goto out;
		}
		crypto_hash_sha256_update(&sha, blk, len);
	}
	crypto_hash_sha256_final(&sha, digest);
	if (memcmp(digest, r.sha256, 32) != 0) {
		fprintf(stderr, "shelf fleet publish: '%s' refused: the payload's SHA-256 differs "
			"from the metadata's\n", o.arg);
		goto out;
	}
	if ((code = shelf_cli_open("fleet publish", o.client, o.broker, NULL, 0, 0, &s)) != 0)
		goto out;
	code = 1;
	shelf_set_timeout(s, o.timeout_ms > 60000 ? o.timeout_ms : 60000);
	for (uint32_t i = 0; i < r.nblocks; i++) {
		size_t len;

		/* read again, and checked again: what is stored is what verified */
		if (block_read(fd, h.head_len, &r, i, blk, &len, err, sizeof(err)) < 0) {
			fprintf(stderr, "shelf fleet publish: '%s' changed while publishing: %s\n",
				o.arg, err);
			goto out;
		}
		if (shelf_fleet_block_put(s, o.slice, r.id, i, blk, len, err, sizeof(err)) < 0) {
			fprintf(stderr, "shelf fleet publish: storing block %u of %u in slice '%s': "
				"%s\n", i, r.nblocks, o.slice, err);
			goto out;
		}
		payload += len;
	}
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pk_head(&pk, 3, "publish");
	pk_str(&pk, "release");
	msgpack_pack_bin(&pk, h.meta_len);
	msgpack_pack_bin_body(&pk, h.meta, h.meta_len);
	pk_str(&pk, "cert");
	msgpack_pack_bin(&pk, h.cert_len);
	msgpack_pack_bin_body(&pk, h.cert, h.cert_len);
	pk_str(&pk, "slice");
	pk_str(&pk, o.slice);
	if ((code = fleet_call(&o, "publish", &sb, &rep)) != 0)
		goto out;
	w1 = io_written();
	ovl_hex_encode(r.id, 32, idhex);
	if (o.json) {
		printf("{\n  \"version\": %s,\n  \"board\": %s,\n  \"id\": \"%s\",\n"
		       "  \"slice\": %s,\n  \"size\": %llu,\n  \"blocks\": %u,\n"
		       "  \"block_size\": %u,\n  \"payload_bytes_sent\": %llu,\n"
		       "  \"bytes_written\": %llu,\n  \"replaced\": %s,\n  \"ms\": %llu\n}\n",
		       cli_json_q(r.version), cli_json_q(r.board), idhex, cli_json_q(o.slice),
		       (unsigned long long)r.size, r.nblocks, r.block_size,
		       (unsigned long long)payload, (unsigned long long)(w1 - w0),
		       mb(rep.doc, "replaced") ? "true" : "false",
		       (unsigned long long)(ovl_mono_ms() - t0));
	} else {
		printf("published %s for board %s%s\n", r.version, r.board,
		       mb(rep.doc, "replaced") ? " (replacing the release of that version)" : "");
		printf("  id          %s\n", idhex);
		printf("  payload     %llu bytes in %u blocks of %u, in slice '%s'\n",
		       (unsigned long long)r.size, r.nblocks, r.block_size, o.slice);
		printf("  sent        %llu payload bytes (%llu bytes written by this process)\n",
		       (unsigned long long)payload, (unsigned long long)(w1 - w0));
		printf("  next        shelf fleet rollout start %s\n", mstr(rep.doc, "version", tmp,
									   sizeof(tmp)));
	}
	code = 0;
out:
	reply_release(&rep);
	shelf_close(&s);
	free(blk);
	free(hh.buf);
	ovl_fleet_release_free(&r);
	msgpack_sbuffer_destroy(&sb);
	if (fd >= 0)
		close(fd);
	return code;
}

/* ---- rollout and versions ------------------------------------------------------------ */

static void fp_of(const char *hex, char *out, size_t cap)
{
	uint8_t id[OVL_ID_BYTES];
	char fp[OVL_ID_FP_BYTES];

	if (ovl_nodeid_parse(hex, id) == 0) {
		ovl_nodeid_fingerprint(id, fp);
		snprintf(out, cap, "%s", fp);
	} else {
		snprintf(out, cap, "%.19s", hex);
	}
}

static void dur(int64_t s, char *out, size_t cap)
{
	if (s < 0)
		snprintf(out, cap, "unknown");
	else if (s < 120)
		snprintf(out, cap, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(out, cap, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
	else
		snprintf(out, cap, "%lldh%02lldm", (long long)s / 3600, (long long)(s / 60) % 60);
}

static void status_print(const msgpack_object *d)
{
	static const char *const counts[] = { "pending", "fetching", "installed", "rebooting",
					      "healthy", "failed", "rolled_back" };
	const msgpack_object *c = ovl_fleet_doc_get(d, "counts");
	const msgpack_object *fl = ovl_fleet_doc_get(d, "failures");
	const msgpack_object *nodes = ovl_fleet_doc_get(d, "nodes");
	char a[256], b2[64], e[64], st[32];

	mstr(d, "state", st, sizeof(st));
	if (!strcmp(st, "none")) {
		printf("no rollout\n");
		return;
	}
	printf("rollout     %s %s%s%s\n", mstr(d, "version", a, sizeof(a)), st,
	       mstr(d, "board", b2, sizeof(b2))[0] ? " board " : "", b2);
	printf("stages      %s", mstr(d, "stages", a, sizeof(a)));
	printf("  (now: %s%s, %llu of %llu nodes included)\n", mstr(d, "stage", b2, sizeof(b2)),
	       mb(d, "soaking") ? ", soaking" : "", (unsigned long long)mu(d, "included"),
	       (unsigned long long)mu(d, "targets"));
	printf("max failed  %llu   soak %llus\n", (unsigned long long)mu(d, "max_failed"),
	       (unsigned long long)(mu(d, "soak_ms") / 1000));
	if (mstr(d, "reason", a, sizeof(a))[0])
		printf("reason      %s\n", a);
	dur(mi(d, "eta_s"), e, sizeof(e));
	printf("eta         %s\n", e);
	printf("nodes      ");
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		printf(" %s %llu", counts[i], (unsigned long long)mu(c, counts[i]));
	printf("\n");
	if (fl && fl->type == MSGPACK_OBJECT_ARRAY && fl->via.array.size) {
		printf("failures\n");
		for (uint32_t i = 0; i < fl->via.array.size; i++) {
			const msgpack_object *x = &fl->via.array.ptr[i];
			char node[80], fp[32], s2[32];

			fp_of(mstr(x, "node", node, sizeof(node)), fp, sizeof(fp));
			printf("  %-19s %-11s %s\n", fp, mstr(x, "state", s2, sizeof(s2)),
			       mstr(x, "reason", a, sizeof(a)));
		}
	}
	if (nodes && nodes->type == MSGPACK_OBJECT_ARRAY && nodes->via.array.size) {
		printf("\n%-19s %-8s %-11s %-10s %s\n", "NODE", "STAGE", "STATE", "RUNNING", "NOTE");
		for (uint32_t i = 0; i < nodes->via.array.size; i++) {
			const msgpack_object *x = &nodes->via.array.ptr[i];
			char node[80], fp[32], s1[16], s2[32], rn[32];

			fp_of(mstr(x, "node", node, sizeof(node)), fp, sizeof(fp));
			printf("%-19s %-8s %-11s %-10s %s\n", fp, mstr(x, "stage", s1, sizeof(s1)),
			       mstr(x, "state", s2, sizeof(s2)), mstr(x, "running", rn, sizeof(rn)),
			       mstr(x, "reason", a, sizeof(a)));
		}
	}
}

static int status_code(const msgpack_object *d)
{
	char st[32];

	return !strcmp(mstr(d, "state", st, sizeof(st)), "halted") ? 4 : 0;
}

static int simple(const struct fopts *o, const char *cmd, bool print)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct reply rep;
	int code;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pk_head(&pk, 0, cmd);
	code = fleet_call(o, strcmp(cmd, "versions") ? cmd : "versions", &sb, &rep);
	msgpack_sbuffer_destroy(&sb);
	if (code)
		return code;
	if (o->json) {
		json_obj(stdout, rep.doc, 0);
		printf("\n");
	} else if (print) {
		status_print(rep.doc);
	}
	if (!strcmp(cmd, "status"))
		code = status_code(rep.doc);
	else if (!o->json && !print) {
		char st[32], v[32];

		printf("rollout %s: %s\n", mstr(rep.doc, "version", v, sizeof(v)),
		       mstr(rep.doc, "state", st, sizeof(st)));
	}
	reply_release(&rep);
	return code;
}

static int rollout_start(const struct fopts *o)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct reply rep;
	unsigned long long mf = 0;
	int64_t soak = -1;
	size_t extra = 1;
	int code;

	if (!o->arg) {
		fprintf(stderr, "shelf fleet rollout start: which VERSION?\n");
		return 2;
	}
	if (o->max_failed) {
		char *end = NULL;

		mf = strtoull(o->max_failed, &end, 10);
		if (!*o->max_failed || *end || mf > 1000000) {
			fprintf(stderr, "shelf fleet rollout start: --max-failed '%s': 0..1000000\n",
				o->max_failed);
			return 2;
		}
		extra++;
	}
	if (o->soak) {
		if (ovl_parse_ms(o->soak, &soak) < 0 || soak < 0) {
			fprintf(stderr, "shelf fleet rollout start: --soak '%s': a duration (500ms, "
				"30s, 5m, 1h)\n", o->soak);
			return 2;
		}
		extra++;
	}
	extra += (o->board != NULL) + (o->stages != NULL);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pk_head(&pk, extra, "start");
	pk_str(&pk, "version");
	pk_str(&pk, o->arg);
	if (o->board) {
		pk_str(&pk, "board");
		pk_str(&pk, o->board);
	}
	if (o->stages) {
		pk_str(&pk, "stages");
		pk_str(&pk, o->stages);
	}
	if (o->max_failed) {
		pk_str(&pk, "max_failed");
		msgpack_pack_uint32(&pk, (uint32_t)mf);
	}
	if (o->soak) {
		pk_str(&pk, "soak_ms");
		msgpack_pack_uint64(&pk, (uint64_t)soak);
	}
	code = fleet_call(o, "rollout start", &sb, &rep);
	msgpack_sbuffer_destroy(&sb);
	if (code)
		return code;
	if (o->json) {
		json_obj(stdout, rep.doc, 0);
		printf("\n");
	} else {
		char st[32];

		printf("rollout of %s started: %llu nodes to update, stages %s\n", o->arg,
		       (unsigned long long)mu(rep.doc, "targets"),
		       mstr(rep.doc, "stages", st, sizeof(st)));
	}
	reply_release(&rep);
	return 0;
}

static int cmd_rollout(int argc, char **argv)
{
	struct fopts o;
	const char *sub = argc > 1 ? argv[1] : NULL;
	int rc;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h"))
		return fusage(sub ? stdout : stderr, sub ? 0 : 2);
	rc = fparse(argc - 1, argv + 1, &o);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (!strcmp(sub, "start"))
		return rollout_start(&o);
	if (o.arg) {
		fprintf(stderr, "shelf fleet rollout %s: unexpected argument '%s'\n", sub, o.arg);
		return 2;
	}
	if (!strcmp(sub, "status")) {
		unsigned n = 0;

		if (!o.watch)
			return simple(&o, "status", true);
		for (;;) {
			bool tty = isatty(STDOUT_FILENO);

			if (tty && !o.json)
				printf("\033[H\033[2J");
			rc = simple(&o, "status", true);
			fflush(stdout);
			if (o.count && ++n >= o.count)
				return rc;
			sleep(o.watch_s);
		}
	}
	if (!strcmp(sub, "halt") || !strcmp(sub, "resume") || !strcmp(sub, "abort"))
		return simple(&o, sub, false);
	fprintf(stderr, "shelf fleet rollout: unknown command '%s' (start, status, halt, resume, "
		"abort)\n", sub);
	return 2;
}

static int cmd_versions(int argc, char **argv)
{
	struct fopts o;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct reply rep;
	const msgpack_object *nodes, *rels;
	int rc = fparse(argc, argv, &o);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (o.arg) {
		fprintf(stderr, "shelf fleet versions: unexpected argument '%s'\n", o.arg);
		return 2;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pk_head(&pk, 0, "versions");
	rc = fleet_call(&o, "versions", &sb, &rep);
	msgpack_sbuffer_destroy(&sb);
	if (rc)
		return rc;
	if (o.json) {
		json_obj(stdout, rep.doc, 0);
		printf("\n");
		reply_release(&rep);
		return 0;
	}
	nodes = ovl_fleet_doc_get(rep.doc, "nodes");
	rels = ovl_fleet_doc_get(rep.doc, "releases");
	printf("%-19s %-10s %-6s %-10s %-4s %-14s %-12s %s\n", "NODE", "CHASSIS", "LINK",
	       "RUNNING", "SLOT", "OTHER SLOT", "UPDATE", "TARGET");
	for (uint32_t i = 0; nodes && nodes->type == MSGPACK_OBJECT_ARRAY &&
			     i < nodes->via.array.size; i++) {
		const msgpack_object *x = &nodes->via.array.ptr[i];
		char node[80], fp[32], ch[64], ln[16], rn[32], sl[8], ot[32], os[48], st[32], tg[32];

		fp_of(mstr(x, "node", node, sizeof(node)), fp, sizeof(fp));
		mstr(x, "other", ot, sizeof(ot));
		snprintf(os, sizeof(os), "%s%s", ot[0] ? ot : "-",
			 ot[0] ? (mb(x, "other_good") ? " good" : " untried") : "");
		printf("%-19s %-10s %-6s %-10s %-4s %-14s %-12s %s\n", fp,
		       mstr(x, "chassis", ch, sizeof(ch))[0] ? ch : "-",
		       mstr(x, "link", ln, sizeof(ln)),
		       mstr(x, "running", rn, sizeof(rn))[0] ? rn : "?",
		       mstr(x, "slot", sl, sizeof(sl))[0] ? sl : "-", os,
		       mstr(x, "state", st, sizeof(st))[0] ? st : "-",
		       mstr(x, "target", tg, sizeof(tg))[0] ? tg : "-");
	}
	if (mu(rep.doc, "total") > (nodes ? nodes->via.array.size : 0))
		printf("(%llu nodes, the first %u listed)\n", (unsigned long long)mu(rep.doc, "total"),
		       nodes ? nodes->via.array.size : 0);
	if (rels && rels->type == MSGPACK_OBJECT_ARRAY && rels->via.array.size) {
		printf("\n%-10s %-10s %-12s %-20s %s\n", "RELEASE", "BOARD", "SIZE", "EXPIRES", "ID");
		for (uint32_t i = 0; i < rels->via.array.size; i++) {
			const msgpack_object *x = &rels->via.array.ptr[i];
			char v[32], bd[40], id[80], ex[32];
			time_t t = (time_t)mu(x, "expires");
			struct tm tm;

			gmtime_r(&t, &tm);
			strftime(ex, sizeof(ex), "%Y-%m-%dT%H:%MZ", &tm);
			printf("%-10s %-10s %-12llu %-20s %.16s\n", mstr(x, "version", v, sizeof(v)),
			       mstr(x, "board", bd, sizeof(bd)), (unsigned long long)mu(x, "size"), ex,
			       mstr(x, "id", id, sizeof(id)));
		}
	}
	reply_release(&rep);
	return 0;
}

int cmd_fleet(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))
		return fusage(sub ? stdout : stderr, sub ? 0 : 2);
	if (!strcmp(sub, "publish"))
		return cmd_publish(argc - 1, argv + 1);
	if (!strcmp(sub, "rollout"))
		return cmd_rollout(argc - 1, argv + 1);
	if (!strcmp(sub, "versions"))
		return cmd_versions(argc - 1, argv + 1);
	fprintf(stderr, "shelf fleet: unknown command '%s' (publish, rollout, versions)\n", sub);
	return 2;
}
