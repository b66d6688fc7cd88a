/*
 * shelf status: one summary of the cluster for an operator.
 *
 * It asks the broker (admin interface) for its nodes and slices when it
 * answers; then, with a client identity, reads each slice's map (from the
 * broker, else from the nodes and the cache, as every command does) and asks
 * every member that is not `out` for NODE_STAT (capacity, counters, health).
 * Without a broker the slices are those the client certificate lists, and
 * node states come from the maps.
 *
 * Per slice it shows the policy (replicas R, min-write W: W from the
 * broker's list, "?" without a broker), the members by state (which are
 * down), and, when any node reports hint counters, the hints waiting for
 * each member (below).
 *
 * Exit codes: 0 everything healthy; 4 something is unhealthy (the broker does
 * not answer, a node is down, out or unreachable, read-only, reports checksum
 * errors, or is full: refuses puts; fewer members up than a slice's
 * min-write); 1 nothing could be reached at all; 2 usage. A node whose live
 * data is above 90% of its usable capacity is shown `nearly-full`, which is
 * not a problem by itself; nor is a slice whose members (not `out`) span
 * fewer failure domains (distinct site/chassis) than its replicas: that is
 * a warning, unless the slice was created with --allow-same-domain.
 *
 * Hint counters (NODE_STAT, PROTOCOL.md 7.7), reported by a node that holds
 * hinted copies for other nodes: `hints_waiting`, the hints it holds in all;
 * `hints_for_<hex>`, the hints it holds for the node whose id, in lower-case
 * hex, starts with <hex> (8 to 64 digits; nodes send 16). Counters of
 * targets without hints are left out, and a node lists at most
 * STATUS_HINT_TARGETS_SENT targets (the largest), so they fit the 64
 * counters of a NODE_STAT answer; `hints_waiting` still counts them all.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "json.h"
#include "data.h"
#include "overlay.h"
#include "shelf.h"
#include "text.h"

#define STATUS_EXIT_UNHEALTHY 4
#define STATUS_BROKER_TIMEOUT_MS 3000
#define STATUS_SLICES_MAX 64
#define STATUS_PROBLEMS_MAX 64
#define STATUS_HINT_TARGETS_SENT 32  /* what nodes are asked to keep to (documentation) */

/* One node seen in a map, with its NODE_STAT. */
struct snode {
	uint8_t id[32];
	char addr[46];
	uint16_t port;
	const char *state;      /* from the broker when it answered, else the map */
	bool asked, reached;
	char error[256];
	struct shelf_counter c[SHELF_COUNTERS_MAX];
	int nc;
	const char *health;     /* "ok", "nearly-full", "full", "down", "out", "unreachable", "read-only", ... */
};

struct status {
	bool json;
	const char *broker, *admin_dir, *client;
	const char *nodes_opt[SHELF_NODES_MAX];
	int nnodes_opt, timeout_ms;
	const char *slices_opt[STATUS_SLICES_MAX];
	int nslices_opt;
	/* what was learned */
	bool broker_ok;
	char broker_err[512];
	unsigned b_up, b_down, b_out, b_nodes;
	struct admin_call nodes_call;
	bool have_nodes;
	struct snode *nodes;
	size_t n_nodes, cap_nodes;
	char problems[STATUS_PROBLEMS_MAX][200];
	unsigned n_problems;
	char warnings[STATUS_PROBLEMS_MAX][200]; /* shown, but not unhealthy */
	unsigned n_warnings;
};

static void problem(struct status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct status *st, const char *fmt, ...)
{
	va_list ap;

	if (st->n_problems == STATUS_PROBLEMS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(st->problems[st->n_problems++], sizeof(st->problems[0]), fmt, ap);
	va_end(ap);
}

static void warning(struct status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warning(struct status *st, const char *fmt, ...)
{
	va_list ap;

	if (st->n_warnings == STATUS_PROBLEMS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(st->warnings[st->n_warnings++], sizeof(st->warnings[0]), fmt, ap);
	va_end(ap);
}

static int susage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: shelf status [--broker ENDPOINT] [--admin DIR] [--client DIR] [--slice NAME]...\n"
		"                    [--node ADDR]... [--timeout MS] [--json]\n"
		"  --broker ENDPOINT  broker (default $SHELF_BROKER, else tcp://[::1]:7400; 'none': skip it)\n"
		"  --admin DIR        admin identity from `shelf-broker init` (default $SHELF_ADMIN, else .)\n"
		"  --client DIR       client identity for node health (default $SHELF_CLIENT); without\n"
		"                     one only the broker's view is shown\n"
		"  --slice NAME       slices to check (default: the broker's slices the client may use,\n"
		"                     else those its certificate lists); repeatable\n"
		"  --node ADDR        node to ask for maps when no broker answers (or $SHELF_NODES)\n"
		"  --json             print JSON\n"
		"exit codes: 0 healthy, 4 something unhealthy (listed), 1 nothing reachable, 2 usage\n");
	return code;
}

static const char *envor(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

static struct snode *node_get(struct status *st, const uint8_t id[32])
{
	for (size_t i = 0; i < st->n_nodes; i++)
		if (memcmp(st->nodes[i].id, id, 32) == 0)
			return &st->nodes[i];
	if (st->n_nodes == st->cap_nodes) {
		size_t cap = st->cap_nodes ? st->cap_nodes * 2 : 32;
		struct snode *g = realloc(st->nodes, cap * sizeof(*g));

		if (!g)
			return NULL;
		st->nodes = g;
		st->cap_nodes = cap;
	}
	memset(&st->nodes[st->n_nodes], 0, sizeof(st->nodes[0]));
	memcpy(st->nodes[st->n_nodes].id, id, 32);
	return &st->nodes[st->n_nodes++];
}

static uint64_t counter(const struct snode *n, const char *name)
{
	for (int i = 0; i < n->nc; i++)
		if (strcmp(n->c[i].name, name) == 0)
			return n->c[i].value;
	return 0;
}

static bool has_counter(const struct snode *n, const char *name)
{
	for (int i = 0; i < n->nc; i++)
		if (strcmp(n->c[i].name, name) == 0)
			return true;
	return false;
}

/* Does any node reached report hint counters? */
static bool hints_reported(const struct status *st)
{
	for (size_t i = 0; i < st->n_nodes; i++)
		if (st->nodes[i].reached && has_counter(&st->nodes[i], CLI_HINTS_TOTAL))
			return true;
	return false;
}

/* The hints the nodes reached hold for node `id`: the sum of their
 * hints_for_<hex> counters whose <hex> starts id's hex form. */
static uint64_t hints_for(const struct status *st, const uint8_t id[32])
{
	char hex[OVL_ID_HEX_BYTES];
	uint64_t sum = 0;

	ovl_nodeid_format(id, hex);
	for (size_t i = 0; i < st->n_nodes; i++) {
		const struct snode *n = &st->nodes[i];

		if (!n->reached)
			continue;
		for (int k = 0; k < n->nc; k++) {
			uint64_t v = cli_hints_for(n->c[k].name, n->c[k].value, hex);

			/* the values come from the network: saturate, never wrap */
			sum = sum + v < sum ? UINT64_MAX : sum + v;
		}
	}
	return sum;
}

/* The broker's view: node states and slice names. */
static void ask_broker(struct status *st, struct admin_call *slices_call, bool *have_slices)
{
	struct ovl_msg req;
	char err[512];

	*have_slices = false;
	if (strcmp(st->broker, "none") == 0) {
		snprintf(st->broker_err, sizeof(st->broker_err), "no broker given");
		return;
	}
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_LIST_NODES;
	if (admin_query(st->broker, st->admin_dir, STATUS_BROKER_TIMEOUT_MS, &req, &st->nodes_call,
			err, sizeof(err)) != 0) {
		snprintf(st->broker_err, sizeof(st->broker_err), "%s", err);
		return;
	}
	st->have_nodes = true;
	st->broker_ok = true;
	for (uint32_t i = 0; i < st->nodes_call.reply.u.admin_ok.n_nodes; i++) {
		const struct ovl_msg_node_info *n = &st->nodes_call.reply.u.admin_ok.nodes[i];

		st->b_nodes++;
		st->b_up += n->state == OVL_MSG_STATE_UP;
		st->b_down += n->state == OVL_MSG_STATE_DOWN;
		st->b_out += n->state == OVL_MSG_STATE_OUT;
	}
	ovl_msg_init(&req, OVL_MSG_ADMIN);
	req.u.admin.op = OVL_MSG_ADMIN_LIST_SLICES;
	if (admin_query(st->broker, st->admin_dir, STATUS_BROKER_TIMEOUT_MS, &req, slices_call, err,
			sizeof(err)) == 0)
		*have_slices = true;
}

/* The slices the client certificate lists (who may read what). */
static int client_slices(const char *dir, char names[][OVL_MSG_NAME_SIZE], int cap)
{
	char path[600];
	uint8_t buf[OVL_CERT_MAX_BYTES + 1];
	struct ovl_cert c;
	char err[256];
	size_t n;
	FILE *f;
	int k = 0;

	snprintf(path, sizeof(path), "%s/client.cert", dir);
	f = fopen(path, "rb");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (ovl_cert_decode(&c, buf, n, err, sizeof(err)) < 0)
		return 0;
	for (unsigned i = 0; i < c.nslices && k < cap; i++)
		snprintf(names[k++], OVL_MSG_NAME_SIZE, "%s", c.slices[i]);
	return k;
}

static bool listed(char names[][OVL_MSG_NAME_SIZE], int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

/* Health of a member from its state and its NODE_STAT. */
static void judge(struct status *st, struct snode *n, const char *slice)
{
	char hex[OVL_ID_HEX_BYTES];

	ovl_nodeid_format(n->id, hex);
	if (strcmp(n->state, "out") == 0)
		n->health = "out";
	else if (!n->reached)
		n->health = strcmp(n->state, "down") == 0 ? "down" : "unreachable";
	else if (counter(n, "read_only"))
		n->health = "read-only";
	else if (counter(n, "checksum_errors"))
		n->health = "checksum-errors";
	else if (has_counter(n, "full") ? counter(n, "full") != 0
		 : counter(n, "capacity_bytes") && !counter(n, "segments_free"))
		n->health = "full"; /* puts are refused (older nodes: no segment free) */
	else if (counter(n, "nearly_full"))
		n->health = "nearly-full";
	else if (strcmp(n->state, "up") != 0)
		n->health = n->state; /* answers, but the broker has not heard from it */
	else
		n->health = "ok";
	/* nearly-full is shown, not a problem: puts still succeed */
	if (strcmp(n->health, "ok") != 0 && strcmp(n->health, "nearly-full") != 0)
		problem(st, "slice %s: node %.16s (%s) is %s%s%s", slice, hex, n->addr, n->health,
			n->error[0] ? ": " : "", n->error);
}

static void json_escape(const char *s)
{
	cli_json_str(stdout, s, strlen(s));
}

static void print_node(const struct status *st, const struct snode *n, bool first, bool hints,
		       uint64_t nhints)
{
	char hex[OVL_ID_HEX_BYTES], hcol[24] = "";
	uint64_t cap = counter(n, "capacity_bytes"), used = counter(n, "live_bytes");

	ovl_nodeid_format(n->id, hex);
	if (hints)
		snprintf(hcol, sizeof(hcol), " %13llu", (unsigned long long)nhints);
	if (!st->json) {
		if (n->reached)
			printf("  %.16s  %-5s %-39s %10.1f %10.1f %9llu%s  %s\n", hex, n->state, n->addr,
			       used / 1048576.0, (cap > used ? cap - used : 0) / 1048576.0,
			       (unsigned long long)counter(n, "objects"), hcol, n->health);
		else
			printf("  %.16s  %-5s %-39s %10s %10s %9s%s  %s%s%s\n", hex, n->state, n->addr, "-",
			       "-", "-", hcol, n->health, n->error[0] ? ": " : "", n->error);
		return;
	}
	printf("%s\n      {\"id\": \"%s\", \"addr\": \"%s\", \"port\": %u, \"state\": \"%s\", "
	       "\"health\": \"%s\", \"reachable\": %s, \"error\": ", first ? "" : ",", hex, n->addr,
	       n->port, n->state, n->health, n->reached ? "true" : "false");
	json_escape(n->error);
	if (hints)
		printf(", \"hints_waiting\": %llu", (unsigned long long)nhints);
	printf(", \"counters\": {");
	for (int i = 0; i < n->nc; i++)
		printf("%s%s: %llu", i ? ", " : "", cli_json_q(n->c[i].name), (unsigned long long)n->c[i].value);
	printf("}}");
}

/* How many distinct (site, chassis) pairs the members not `out` span. */
static unsigned domains_of(const struct shelf_member *mb, uint32_t n)
{
	unsigned d = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t k;

		if (strcmp(mb[i].state, "out") == 0)
			continue;
		for (k = 0; k < i; k++)
			if (strcmp(mb[k].state, "out") != 0 && strcmp(mb[k].site, mb[i].site) == 0 &&
			    strcmp(mb[k].chassis, mb[i].chassis) == 0)
				break;
		d += k == i;
	}
	return d;
}

/* Look at one slice: its map, then each member's NODE_STAT, then print it.
 * def: the broker's entry for the slice (policy), NULL when unknown. */
static void check_slice(struct status *st, struct shelf *s, const char *slice,
			const struct ovl_msg_slice *def, bool first)
{
	struct shelf_map_info info;
	struct shelf_member *mb = NULL;
	struct snode **rows = NULL;
	char err[512], downs[160] = "";
	unsigned up = 0, down = 0, out = 0, other = 0, domains, w = 0;
	uint64_t hints_total = 0;
	bool hints;

	if (shelf_map(s, slice, &info, &mb, err, sizeof(err)) < 0) {
		problem(st, "slice %s: no map: %s", slice, err);
		if (st->json) {
			printf("%s\n    {\"name\": ", first ? "" : ",");
			json_escape(slice);
			printf(", \"error\": ");
			json_escape(err);
			printf("}");
		} else {
			printf("slice %s: no map: %s\n", slice, err);
		}
		return;
	}
	rows = calloc(info.n_members + 1u, sizeof(*rows));
	if (!rows) {
		problem(st, "slice %s: out of memory", slice);
		free(mb);
		return;
	}
	/* every member's NODE_STAT first: hints for one are held by the others */
	for (uint32_t i = 0; i < info.n_members; i++) {
		struct snode *n = node_get(st, mb[i].id);
		int r;

		if (!n)
			break;
		rows[i] = n;
		snprintf(n->addr, sizeof(n->addr), "%s", mb[i].addr);
		n->port = mb[i].port;
		if (!n->state)
			n->state = mb[i].state;
		if (st->have_nodes) {
			const struct ovl_msg_admin_ok *ok = &st->nodes_call.reply.u.admin_ok;

			for (uint32_t k = 0; k < ok->n_nodes; k++)
				if (memcmp(ok->nodes[k].id, n->id, 32) == 0)
					n->state = ovl_msg_state_name(ok->nodes[k].state);
		}
		if (!n->state)
			n->state = "unknown";
		if (!n->asked && strcmp(n->state, "out") != 0) {
			n->asked = true;
			r = shelf_node_stat(s, slice, n->addr, n->port, n->c, SHELF_COUNTERS_MAX, err,
					    sizeof(err));
			if (r >= 0) {
				n->nc = r;
				n->reached = true;
			} else {
				snprintf(n->error, sizeof(n->error), "%.255s", err);
			}
		}
		judge(st, n, slice);
	}
	/* `rows` may be shorter than the map when node_get ran out of memory */
	for (uint32_t i = 0; i < info.n_members && rows[i]; i++) {
		const char *x = rows[i]->state;

		if (strcmp(x, "up") == 0) {
			up++;
		} else if (strcmp(x, "down") == 0) {
			char hex[OVL_ID_HEX_BYTES];
			size_t len = strlen(downs);

			down++;
			ovl_nodeid_format(rows[i]->id, hex);
			if (down <= 8)
				snprintf(downs + len, sizeof(downs) - len, "%s%.16s", down > 1 ? " " : "",
					 hex);
			else if (down == 9)
				snprintf(downs + len, sizeof(downs) - len, " ...");
		} else if (strcmp(x, "out") == 0) {
			out++;
		} else {
			other++;
		}
	}
	hints = hints_reported(st);
	if (hints)
		for (uint32_t i = 0; i < info.n_members && rows[i]; i++) {
			uint64_t h = hints_for(st, rows[i]->id);

			hints_total = hints_total + h < hints_total ? UINT64_MAX : hints_total + h;
		}
	domains = domains_of(mb, info.n_members);
	if (def)
		w = def->min_write_replicas ? def->min_write_replicas : def->replicas;
	if (info.replicas > 1 && domains < info.replicas && !(def && def->allow_same_domain))
		warning(st, "slice %s: replicas %u but its members span %u failure domain%s (distinct "
			"site/chassis): copies share a chassis", slice, info.replicas, domains,
			domains == 1 ? "" : "s");
	if (info.replicas > 1 && up + down + other < info.replicas)
		warning(st, "slice %s: replicas %u but only %u member%s not out: fewer copies than "
			"replicas", slice, info.replicas, up + down + other,
			up + down + other == 1 ? "" : "s");
	if (w && up < w)
		problem(st, "slice %s: %u member%s up, fewer than min-write %u: writes fail", slice, up,
			up == 1 ? "" : "s", w);
	if (st->json) {
		printf("%s\n    {\"name\": ", first ? "" : ",");
		json_escape(slice);
		/* the keys of older versions first, in their order */
		printf(", \"epoch\": %llu, \"replicas\": %u, \"encrypt\": %s, \"map_source\": ",
		       (unsigned long long)info.epoch, info.replicas, info.encrypt ? "true" : "false");
		json_escape(info.source);
		if (w)
			printf(", \"min_write_replicas\": %u", w);
		if (def)
			printf(", \"allow_same_domain\": %s", def->allow_same_domain ? "true" : "false");
		printf(", \"domains\": %u, \"member_states\": {\"up\": %u, \"down\": %u, "
		       "\"out\": %u, \"unknown\": %u}, \"down\": [", domains, up, down, out, other);
		for (uint32_t i = 0, k = 0; i < info.n_members && rows[i]; i++) {
			char hex[OVL_ID_HEX_BYTES];

			if (strcmp(rows[i]->state, "down") != 0)
				continue;
			ovl_nodeid_format(rows[i]->id, hex);
			printf("%s\"%s\"", k++ ? ", " : "", hex);
		}
		printf("]");
		if (hints)
			printf(", \"hints_waiting\": %llu", (unsigned long long)hints_total);
		printf(", \"members\": [");
	} else {
		char wtxt[16] = "?";

		if (w)
			snprintf(wtxt, sizeof(wtxt), "%u", w);
		printf("\nslice %s  epoch %llu  replicas %u  encrypt %s  members %u  min-write %s  "
		       "(map from %s)\n", slice, (unsigned long long)info.epoch, info.replicas,
		       info.encrypt ? "yes" : "no", info.n_members, wtxt, info.source);
		printf("  members: %u up, %u down%s%s%s, %u out%s; %u failure domain%s%s\n", up, down,
		       down ? " (" : "", downs, down ? ")" : "", out, other ? ", some unknown" : "",
		       domains, domains == 1 ? "" : "s",
		       def && def->allow_same_domain ? " (same domain allowed)" : "");
		if (hints)
			printf("  hints waiting: %llu\n", (unsigned long long)hints_total);
		printf("  %-16s  %-5s %-39s %10s %10s %9s%s  %s\n", "NODE", "STATE", "ADDRESS",
		       "USED_MIB", "FREE_MIB", "OBJECTS", hints ? " HINTS_WAITING" : "", "HEALTH");
	}
	for (uint32_t i = 0; i < info.n_members && rows[i]; i++)
		print_node(st, rows[i], i == 0, hints, hints ? hints_for(st, rows[i]->id) : 0);
	if (st->json)
		printf("\n    ]}");
	free(rows);
	free(mb);
}

int cmd_status(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "broker", 1, NULL, 'b' }, { "admin", 1, NULL, 'a' }, { "client", 1, NULL, 'c' },
		{ "slice", 1, NULL, 's' }, { "node", 1, NULL, 'n' }, { "timeout", 1, NULL, 't' },
		{ "json", 0, NULL, 'j' }, { "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct status *st = calloc(1, sizeof(*st));
	struct admin_call slices_call;
	char names[STATUS_SLICES_MAX][OVL_MSG_NAME_SIZE], allowed[STATUS_SLICES_MAX][OVL_MSG_NAME_SIZE];
	struct shelf *s = NULL;
	bool have_slices = false;
	int c, nnames = 0, nallowed = 0, code = 0, nreached = 0;

	if (!st)
		return 1;
	memset(&slices_call, 0, sizeof(slices_call));
	st->broker = envor("SHELF_BROKER", "tcp://[::1]:7400");
	st->admin_dir = envor("SHELF_ADMIN", ".");
	st->client = envor("SHELF_CLIENT", NULL);
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'b': st->broker = optarg; break;
		case 'a': st->admin_dir = optarg; break;
		case 'c': st->client = optarg; break;
		case 's':
			if (st->nslices_opt < STATUS_SLICES_MAX)
				st->slices_opt[st->nslices_opt++] = optarg;
			break;
		case 'n':
			if (st->nnodes_opt < SHELF_NODES_MAX)
				st->nodes_opt[st->nnodes_opt++] = optarg;
			break;
		case 't': st->timeout_ms = atoi(optarg); break;
		case 'j': st->json = true; break;
		case 'h': free(st); return susage(0);
		default: free(st); return susage(2);
		}
	}
	if (optind != argc) {
		free(st);
		return susage(2);
	}
	/* the client first: a bad directory is a usage error, before any output */
	if (st->client) {
		code = shelf_cli_open("status", st->client, st->broker, st->nodes_opt, st->nnodes_opt,
				      st->timeout_ms ? st->timeout_ms : 3000, &s);
		if (code)
			goto out;
	}
	ask_broker(st, &slices_call, &have_slices);
	if (!st->broker_ok)
		problem(st, "broker %s: %s", st->broker, st->broker_err);
	if (st->client)
		nallowed = client_slices(st->client, allowed, STATUS_SLICES_MAX);
	/* which slices: asked for, else the broker's the client may read, else the cert's */
	for (int i = 0; i < st->nslices_opt && nnames < STATUS_SLICES_MAX; i++)
		snprintf(names[nnames++], OVL_MSG_NAME_SIZE, "%s", st->slices_opt[i]);
	if (!nnames && have_slices) {
		for (uint32_t i = 0; i < slices_call.reply.u.admin_ok.n_slices && nnames < STATUS_SLICES_MAX;
		     i++) {
			const char *n = slices_call.reply.u.admin_ok.slices[i].name;

			if (!st->client || listed(allowed, nallowed, n))
				snprintf(names[nnames++], OVL_MSG_NAME_SIZE, "%s", n);
		}
	}
	if (!nnames && !have_slices)
		for (int i = 0; i < nallowed; i++)
			snprintf(names[nnames++], OVL_MSG_NAME_SIZE, "%.*s", OVL_MSG_NAME_SIZE - 1, allowed[i]);
	if (st->json) {
		printf("{\n  \"broker\": {\"endpoint\": ");
		json_escape(st->broker);
		printf(", \"reachable\": %s, \"error\": ", st->broker_ok ? "true" : "false");
		json_escape(st->broker_ok ? "" : st->broker_err);
		if (st->broker_ok)
			printf(", \"nodes\": %u, \"up\": %u, \"down\": %u, \"out\": %u", st->b_nodes,
			       st->b_up, st->b_down, st->b_out);
		printf("},\n  \"slices\": [");
	} else if (st->broker_ok) {
		printf("broker %s: reachable, %u nodes (%u up, %u down, %u out), %u slices\n",
		       st->broker, st->b_nodes, st->b_up, st->b_down, st->b_out,
		       have_slices ? slices_call.reply.u.admin_ok.n_slices : 0);
	} else {
		printf("broker %s: NOT reachable: %s\n", st->broker, st->broker_err);
	}
	if (s) {
		for (int i = 0; i < nnames; i++) {
			const struct ovl_msg_slice *def = NULL;

			for (uint32_t k = 0; have_slices && k < slices_call.reply.u.admin_ok.n_slices; k++)
				if (strcmp(slices_call.reply.u.admin_ok.slices[k].name, names[i]) == 0)
					def = &slices_call.reply.u.admin_ok.slices[k];
			check_slice(st, s, names[i], def, i == 0);
		}
	} else if (have_slices) {
		/* the broker's view only: names, epochs, sizes, policy */
		for (uint32_t i = 0; i < slices_call.reply.u.admin_ok.n_slices; i++) {
			const struct ovl_msg_slice *x = &slices_call.reply.u.admin_ok.slices[i];
			unsigned w = x->min_write_replicas ? x->min_write_replicas : x->replicas;

			if (st->json)
				printf("%s\n    {\"name\": %s, \"epoch\": %llu, \"replicas\": %u, "
				       "\"encrypt\": %s, \"members\": %u, \"min_write_replicas\": %u, "
				       "\"allow_same_domain\": %s}", i ? "," : "", cli_json_q(x->name),
				       (unsigned long long)x->epoch, x->replicas,
				       x->encrypt ? "true" : "false", x->members, w,
				       x->allow_same_domain ? "true" : "false");
			else
				printf("slice %s  epoch %llu  replicas %u  encrypt %s  members %u  "
				       "min-write %u%s\n", x->name, (unsigned long long)x->epoch,
				       x->replicas, x->encrypt ? "yes" : "no", x->members, w,
				       x->allow_same_domain ? "  (same domain allowed)" : "");
		}
	}
	if (!s && !st->json)
		printf("(no client identity: give --client DIR or SHELF_CLIENT for node health)\n");
	/* nodes by state, over what was seen (the broker's list when it answered) */
	{
		unsigned up = 0, down = 0, out = 0, other = 0;

		for (size_t i = 0; i < st->n_nodes; i++) {
			const char *x = st->nodes[i].state;

			nreached += st->nodes[i].reached;
			if (strcmp(x, "up") == 0)
				up++;
			else if (strcmp(x, "down") == 0)
				down++;
			else if (strcmp(x, "out") == 0)
				out++;
			else
				other++;
		}
		if (st->broker_ok) {
			up = st->b_up;
			down = st->b_down;
			out = st->b_out;
			other = st->b_nodes - up - down - out;
			if (down)
				problem(st, "%u node(s) down", down);
			if (out)
				problem(st, "%u node(s) out", out);
		}
		if (st->json)
			printf("\n  ],\n  \"nodes\": {\"up\": %u, \"down\": %u, \"out\": %u, \"unknown\": %u},\n",
			       up, down, out, other);
		else
			printf("\nnodes: %u up, %u down, %u out%s\n", up, down, out,
			       other ? " (and some in an unknown state)" : "");
	}
	code = st->n_problems ? STATUS_EXIT_UNHEALTHY : 0;
	if (!st->broker_ok && nreached == 0)
		code = 1;
	if (st->json) {
		printf("  \"healthy\": %s,\n  \"problems\": [", st->n_problems ? "false" : "true");
		for (unsigned i = 0; i < st->n_problems; i++) {
			printf("%s\n    ", i ? "," : "");
			json_escape(st->problems[i]);
		}
		printf("%s],\n  \"warnings\": [", st->n_problems ? "\n  " : "");
		for (unsigned i = 0; i < st->n_warnings; i++) {
			printf("%s\n    ", i ? "," : "");
			json_escape(st->warnings[i]);
		}
		printf("%s]\n}\n", st->n_warnings ? "\n  " : "");
	} else {
		printf("status: %s\n", st->n_problems ? "UNHEALTHY" : "healthy");
		for (unsigned i = 0; i < st->n_problems; i++)
			printf("  - %s\n", st->problems[i]);
		for (unsigned i = 0; i < st->n_warnings; i++)
			printf("warning: %s\n", st->warnings[i]);
	}
out:
	shelf_close(&s);
	if (have_slices)
		admin_call_release(&slices_call);
	if (st->have_nodes)
		admin_call_release(&st->nodes_call);
	free(st->nodes);
	free(st);
	return code;
}
