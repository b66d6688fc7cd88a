/*
 * admin.c: shelf CLI commands that talk to a broker's admin interface
 * (docs/PROTOCOL.md section 6) over CURVE with the admin identity that
 * `shelf-broker init` created.
 *
 * Every command takes:
 *   --broker ENDPOINT   the broker (default $SHELF_BROKER, else tcp://[::1]:7400)
 *   --admin DIR         directory holding admin.key and broker.pub
 *                       (default $SHELF_ADMIN, else the current directory)
 *   --json              machine-readable output (listings)
 */
#include "admin.h"
#include "json.h"
#include "text.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zmq.h>

#include "overlay.h"

#define ADMIN_TIMEOUT_MS 10000
#define ADMIN_RECV_MAX_BYTES (16u << 20)

struct admin_opts {
	const char *broker;
	const char *dir;
	bool json;
	const char *replicas;  /* slice create --replicas (checked there) */
	const char *min_write; /* slice create --min-write-replicas */
	const char *selector;
	bool encrypt;      /* slice create --encrypt */
	bool same_domain;  /* slice create --allow-same-domain */
	const char *chunk_size; /* slice create --chunk-size */
	const char *arg;   /* the positional argument */
};


#define BRK_CLI_REPLICAS_MAX 5 /* as the broker's BRK_REPLICAS_MAX */

/* A decimal count lo..hi, digits only: 0 or -EINVAL. */
static int parse_count(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	unsigned long v;
	char *end = NULL;

	if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 9)
		return -EINVAL;
	v = strtoul(s, &end, 10);
	if (v < lo || v > hi)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int usage(const char *cmd, const char *args, const char *extra, int code)
{
	FILE *f = code ? stderr : stdout;

	fprintf(f, "usage: shelf %s %s[--broker ENDPOINT] [--admin DIR] [--json]\n"
		"  --broker ENDPOINT  broker endpoint (default $SHELF_BROKER, else tcp://[::1]:7400)\n"
		"  --admin DIR        directory with admin.key and broker.pub from `shelf-broker init`\n"
		"                     (default $SHELF_ADMIN, else .)\n"
		"  --json             print JSON\n%s", cmd, args, extra);
	return code;
}

static int parse(int argc, char **argv, struct admin_opts *o, const char *cmd, const char *args,
		 const char *extra, bool need_arg)
{
	static const struct option lopts[] = {
		{ "broker", 1, NULL, 'b' }, { "admin", 1, NULL, 'a' }, { "json", 0, NULL, 'j' },
		{ "replicas", 1, NULL, 'r' }, { "members", 1, NULL, 'm' }, { "encrypt", 0, NULL, 'e' },
		{ "min-write-replicas", 1, NULL, 'w' }, { "allow-same-domain", 0, NULL, 'd' },
		{ "chunk-size", 1, NULL, 'c' },
		{ "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 }
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	o->dir = cli_env("SHELF_ADMIN", ".");
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': o->broker = optarg; break;
		case 'a': o->dir = optarg; break;
		case 'j': o->json = true; break;
		case 'r': o->replicas = optarg; break;
		case 'w': o->min_write = optarg; break;
		case 'd': o->same_domain = true; break;
		case 'c': o->chunk_size = optarg; break;
		case 'm': o->selector = optarg; break;
		case 'e': o->encrypt = true; break;
		case 'h': return usage(cmd, args, extra, 0) - 1;
		default: return usage(cmd, args, extra, 2);
		}
	}
	if (optind < argc)
		o->arg = argv[optind];
	if (need_arg && !o->arg)
		return usage(cmd, args, extra, 2);
	return 0;
}

void admin_call_release(struct admin_call *a)
{
	ovl_msg_release(&a->reply);
	ovl_link_client_destroy(&a->cl);
	if (a->ctx)
		zmq_ctx_term(a->ctx);
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

int admin_query(const char *broker, const char *dir, int timeout_ms, struct ovl_msg *req,
		struct admin_call *a, char *err, size_t errlen)
{
	char path[400], z85[64];
	uint8_t server_key[OVL_KEY_BYTES];
	struct ovl_link_opts lo = ovl_link_opts_default;
	struct ovl_link_client_cfg cfg = { 0 };
	struct ovl_id *id = NULL;
	msgpack_sbuffer sb;
	FILE *f = NULL;
	int rc, code = 1;

	memset(a, 0, sizeof(*a));
	msgpack_sbuffer_init(&sb);
	snprintf(path, sizeof(path), "%s/broker.pub", dir);
	f = fopen(path, "r");
	if (!f || !fgets(z85, sizeof(z85), f) || (z85[strcspn(z85, "\r\n")] = 0) ||
	    ovl_key_z85_decode(z85, server_key) < 0) {
		snprintf(err, errlen, "cannot read the broker key from '%s'", path);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/admin.key", dir);
	if (ovl_id_load(&id, path, err, errlen) < 0)
		goto out;
	a->ctx = zmq_ctx_new();
	a->buf = malloc(ADMIN_RECV_MAX_BYTES);
	if (!a->ctx || !a->buf) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	lo.max_msg_bytes = ADMIN_RECV_MAX_BYTES;
	lo.linger_ms = 0;
	cfg.endpoint = broker;
	cfg.server_key = server_key;
	cfg.secret_key = id->curve_sk;
	cfg.opts = &lo;
	if (ovl_link_client_new(&a->cl, a->ctx, &cfg, err, errlen) < 0)
		goto out;
	rc = ovl_link_client_wait_ready(a->cl, timeout_ms, err, errlen);
	if (rc < 0) {
		char e2[512];

		snprintf(e2, sizeof(e2), "cannot reach broker '%s': %s", broker, err);
		snprintf(err, errlen, "%s", e2);
		goto out;
	}
	req->rid = 1;
	if (ovl_msg_encode(req, &sb, err, errlen) < 0)
		goto out;
	if (ovl_link_client_send(a->cl, sb.data, sb.size, timeout_ms) < 0) {
		snprintf(err, errlen, "cannot send to broker '%s'", broker);
		goto out;
	}
	rc = ovl_link_client_recv(a->cl, a->buf, ADMIN_RECV_MAX_BYTES, timeout_ms);
	if (rc < 0) {
		snprintf(err, errlen, "no answer from broker '%s': %s", broker, strerror(-rc));
		goto out;
	}
	if (ovl_msg_decode(a->buf, (size_t)rc, &a->reply, err, errlen) < 0)
		goto out;
	if (a->reply.type == OVL_MSG_ERROR) {
		snprintf(err, errlen, "%s", a->reply.u.error.message);
		code = a->reply.u.error.code == OVL_MSG_ERR_NOT_FOUND ? 3 : 1;
		goto out;
	}
	code = 0;
out:
	if (code)
		admin_call_release(a);
	if (f)
		fclose(f);
	ovl_id_destroy(&id);
	msgpack_sbuffer_destroy(&sb);
	return code;
}

/* Send req and wait for the reply; prints the error and returns an exit code. */
static int call(const char *cmd, const struct admin_opts *o, struct ovl_msg *req,
		struct admin_call *a)
{
	char err[512] = "";
	int code = admin_query(o->broker, o->dir, ADMIN_TIMEOUT_MS, req, a, err, sizeof(err));

	if (code)
		fprintf(stderr, "shelf %s: %s\n", cmd, err);
	return code;
}

static int simple(const char *cmd, const struct admin_opts *o, struct ovl_msg *req,
		  struct admin_call *a)
{
	return call(cmd, o, req, a);
}

int cmd_slices(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "slices", "", "", false);

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_LIST_SLICES;
	if ((rc = simple("slices", &o, &req, &a)))
		return rc;
	if (o.json)
		printf("[");
	else
		printf("%-24s %8s %9s %10s %8s %-7s  %s\n", "SLICE", "REPLICAS", "MIN_WRITE", "EPOCH",
		       "MEMBERS", "ENCRYPT", "SELECTOR");
	for (uint32_t i = 0; i < a.reply.u.admin_ok.n_slices; i++) {
		const struct ovl_msg_slice *s = &a.reply.u.admin_ok.slices[i];
		/* a broker without the field (before 1.5) has W = replicas */
		unsigned w = s->min_write_replicas ? s->min_write_replicas : s->replicas;

		if (o.json)
			/* new keys after the older ones: readers that match text keep working */
			printf("%s\n  {\"name\": %s, \"replicas\": %u, \"epoch\": %llu, "
			       "\"members\": %u, \"encrypt\": %s, \"selector\": %s, "
			       "\"min_write_replicas\": %u, \"allow_same_domain\": %s, "
			       "\"chunk_size\": %u}", i ? "," : "",
			       cli_json_q(s->name), s->replicas, (unsigned long long)s->epoch,
			       s->members, s->encrypt ? "true" : "false", cli_json_q(s->selector), w,
			       s->allow_same_domain ? "true" : "false",
			       s->chunk_size ? s->chunk_size : OVL_MSG_CHUNK_SIZE_DEFAULT);
		else
			printf("%-24s %8u %9u %10llu %8u %-7s  %s%s\n", s->name, s->replicas, w,
			       (unsigned long long)s->epoch, s->members, s->encrypt ? "yes" : "no",
			       s->selector, s->allow_same_domain ? " (same domain allowed)" : "");
	}
	if (o.json)
		printf("\n]\n");
	admin_call_release(&a);
	return 0;
}

int cmd_slice_create(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	char err[256];
	unsigned replicas = 0, min_write = 0;
	uint64_t chunk = OVL_MSG_CHUNK_SIZE_DEFAULT;
	int rc = parse(argc, argv, &o, "slice create",
		       "NAME --replicas R [--min-write-replicas W] [--members SELECTOR]\n"
		       "       [--allow-same-domain] [--encrypt] [--chunk-size SIZE] ",
		       "  --replicas R       copies per object, 1..5, each in its own failure domain\n"
		       "                     (distinct site/chassis): the broker refuses an R above\n"
		       "                     the domains of the nodes SELECTOR matches now\n"
		       "  --min-write-replicas W\n"
		       "                     copies a write needs before it is acknowledged while\n"
		       "                     members are down, 1..R (default R)\n"
		       "  --members SELECTOR all (default), board=X, group=X, chassis=X or site=X\n"
		       "  --allow-same-domain\n"
		       "                     accept an R above the failure domains (copies may\n"
		       "                     share a chassis)\n"
		       "  --encrypt          payloads on this slice must be encrypted (AEAD, fixed\n"
		       "                     for the slice's life)\n"
		       "  --chunk-size SIZE  objects larger than this are stored as chunks of it\n"
		       "                     and a manifest: 1M..64M in multiples of 64K (default\n"
		       "                     16M, fixed for the slice's life)\n",
		       true);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (!o.replicas || parse_count(o.replicas, 1, BRK_CLI_REPLICAS_MAX, &replicas) < 0) {
		fprintf(stderr, "shelf slice create: --replicas must be 1..%d\n", BRK_CLI_REPLICAS_MAX);
		return 2;
	}
	min_write = replicas;
	if (o.min_write && parse_count(o.min_write, 1, replicas, &min_write) < 0) {
		fprintf(stderr, "shelf slice create: --min-write-replicas must be 1..%u (--replicas)\n",
			replicas);
		return 2;
	}
	if (o.chunk_size && (ovl_parse_size(o.chunk_size, &chunk) < 0 || chunk > UINT32_MAX ||
			     ovl_msg_chunk_size_check((uint32_t)chunk, NULL, 0) < 0 || !chunk)) {
		fprintf(stderr, "shelf slice create: --chunk-size '%s' must be 1M..64M in multiples "
			"of 64K\n", o.chunk_size);
		return 2;
	}
	if (ovl_slice_name_check(o.arg, "slice name", err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf slice create: %s\n", err);
		return 2;
	}
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_CREATE_SLICE;
	/* only when not the default: a broker before 1.6 would skip it */
	req.u.admin.chunk_size = chunk != OVL_MSG_CHUNK_SIZE_DEFAULT ? (uint32_t)chunk : 0;
	snprintf(req.u.admin.slice, sizeof(req.u.admin.slice), "%s", o.arg);
	req.u.admin.replicas = replicas;
	/* only when below R: a broker before 1.5 would skip it, and R is its W */
	req.u.admin.min_write_replicas = min_write < replicas ? min_write : 0;
	req.u.admin.allow_same_domain = o.same_domain;
	snprintf(req.u.admin.selector, sizeof(req.u.admin.selector), "%s",
		 o.selector ? o.selector : "all");
	req.u.admin.encrypt = o.encrypt;
	if ((rc = simple("slice create", &o, &req, &a)))
		return rc;
	printf("created slice %s (replicas %u, min-write %u, members %s%s, %s, chunk size %llu, "
	       "epoch %llu)\n", o.arg, replicas, min_write, o.selector ? o.selector : "all",
	       o.same_domain ? ", same domain allowed" : "",
	       o.encrypt ? "encrypted" : "not encrypted", (unsigned long long)chunk,
	       (unsigned long long)a.reply.u.admin_ok.epoch);
	admin_call_release(&a);
	return 0;
}

int cmd_slice_rm(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "slice rm", "NAME ", "", true);

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_DELETE_SLICE;
	snprintf(req.u.admin.slice, sizeof(req.u.admin.slice), "%s", o.arg);
	if ((rc = simple("slice rm", &o, &req, &a)))
		return rc;
	printf("deleted slice %s\n", o.arg);
	admin_call_release(&a);
	return 0;
}

int cmd_slice_show(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "slice show", "NAME ", "", true);
	const struct ovl_msg_map *m = NULL;

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_SHOW_MAP;
	snprintf(req.u.admin.slice, sizeof(req.u.admin.slice), "%s", o.arg);
	if ((rc = simple("slice show", &o, &req, &a)))
		return rc;
	m = &a.reply.u.map;
	if (o.json)
		printf("{\"slice\": %s, \"epoch\": %llu, \"replicas\": %u, \"encrypt\": %s, "
		       "\"min_write_replicas\": %u, \"members\": [", cli_json_q(m->slice),
		       (unsigned long long)m->epoch, m->replicas, m->encrypt ? "true" : "false",
		       ovl_msg_map_min_write(m));
	else
		printf("slice %s epoch %llu replicas %u min-write %u encrypt %s members %u\n", m->slice,
		       (unsigned long long)m->epoch, m->replicas, ovl_msg_map_min_write(m),
		       m->encrypt ? "yes" : "no", m->n_members);
	for (uint32_t i = 0; i < m->n_members; i++) {
		const struct ovl_msg_member *mm = &m->members[i];
		char hex[OVL_ID_HEX_BYTES], addr[OVL_SLICE_ADDR_STRLEN];
		struct in6_addr in;

		ovl_nodeid_format(mm->id, hex);
		memcpy(&in, mm->addr, sizeof(in));
		ovl_slice_addr_format(&in, addr, sizeof(addr));
		if (o.json)
			printf("%s\n  {\"id\": \"%s\", \"state\": \"%s\", \"addr\": \"%s\", "
			       "\"port\": %u, \"site\": %s, \"chassis\": %s, \"slot\": %s, "
			       "\"capacity\": %llu}", i ? "," : "", hex,
			       ovl_msg_state_name(mm->state), addr, mm->port, cli_json_q(mm->domain.site),
			       cli_json_q(mm->domain.chassis), cli_json_q(mm->domain.slot),
			       (unsigned long long)mm->capacity);
		else
			printf("  %.16s  %-5s %s port %u  %s/%s/%s\n", hex,
			       ovl_msg_state_name(mm->state), addr, mm->port, mm->domain.site,
			       mm->domain.chassis, mm->domain.slot);
	}
	if (o.json)
		printf("\n]}\n");
	admin_call_release(&a);
	return 0;
}

int cmd_nodes(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "nodes", "", "", false);

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_LIST_NODES;
	if ((rc = simple("nodes", &o, &req, &a)))
		return rc;
	if (o.json)
		printf("[");
	else
		printf("%-64s %-5s %-8s %-24s %10s\n", "NODE", "STATE", "BOARD", "SITE/CHASSIS/SLOT",
		       "SEEN_MS");
	for (uint32_t i = 0; i < a.reply.u.admin_ok.n_nodes; i++) {
		const struct ovl_msg_node_info *n = &a.reply.u.admin_ok.nodes[i];
		char hex[OVL_ID_HEX_BYTES], dom[200];

		ovl_nodeid_format(n->id, hex);
		snprintf(dom, sizeof(dom), "%s/%s/%s", n->domain.site, n->domain.chassis,
			 n->domain.slot);
		if (o.json)
			printf("%s\n  {\"id\": \"%s\", \"state\": \"%s\", \"board\": %s, "
			       "\"version\": %s, \"site\": %s, \"chassis\": %s, "
			       "\"slot\": %s, \"capacity\": %llu, \"used\": %llu, \"seen_ms\": %llu}",
			       i ? "," : "", hex, ovl_msg_state_name(n->state), cli_json_q(n->board),
			       cli_json_q(n->version), cli_json_q(n->domain.site),
			       cli_json_q(n->domain.chassis), cli_json_q(n->domain.slot),
			       (unsigned long long)n->capacity, (unsigned long long)n->used,
			       (unsigned long long)n->seen_ms);
		else
			printf("%s %-5s %-8s %-24s %10llu\n", hex, ovl_msg_state_name(n->state),
			       n->board, dom, (unsigned long long)n->seen_ms);
	}
	if (o.json)
		printf("\n]\n");
	admin_call_release(&a);
	return 0;
}

int cmd_node_revoke(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "node revoke", "NODE_ID ", "", true);

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_REVOKE_NODE;
	if (ovl_nodeid_parse(o.arg, req.u.admin.node_id) < 0) {
		fprintf(stderr, "shelf node revoke: '%s' is not a node id (64 hex digits)\n", o.arg);
		return 2;
	}
	if ((rc = simple("node revoke", &o, &req, &a)))
		return rc;
	printf("revoked node %s (revocation list version %llu)\n", o.arg,
	       (unsigned long long)a.reply.u.admin_ok.epoch);
	admin_call_release(&a);
	return 0;
}

int cmd_broker_stats(int argc, char **argv)
{
	struct admin_opts o;
	struct admin_call a;
	struct ovl_msg req;
	int rc = parse(argc, argv, &o, "broker stats", "", "", false);

	if (rc)
		return rc < 0 ? 0 : rc;
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_STATS;
	if ((rc = simple("broker stats", &o, &req, &a)))
		return rc;
	if (o.json)
		printf("{");
	for (uint32_t i = 0; i < a.reply.u.admin_ok.n_stats; i++) {
		const struct ovl_msg_stat *s = &a.reply.u.admin_ok.stats[i];

		if (o.json)
			printf("%s\n  %s: %llu", i ? "," : "", cli_json_q(s->name), (unsigned long long)s->value);
		else
			printf("%-16s %llu\n", s->name, (unsigned long long)s->value);
	}
	if (o.json)
		printf("\n}\n");
	admin_call_release(&a);
	return 0;
}
