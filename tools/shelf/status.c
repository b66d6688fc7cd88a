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
 *
 * Self-healing (issue 14; counters of NODE_STAT asked with the slice's
 * name, docs/PROTOCOL.md 7.7): per slice, the sums over the members reached
 * of heal_objects_full/degraded/lost and heal_bytes_full/degraded (each key
 * is counted by one member, its primary), the repair work (done and left,
 * objects and bytes; failed; the rate, the sum of repair_rate_bps; the ETA,
 * the bytes left and planned over that rate, or the largest repair_eta_s
 * while no member has a rate yet), anti-entropy
 * (the oldest ae_last_unix of the members, and the sum of ae_diffs_last)
 * and scrub (the oldest scrub_last_unix, scrub_damaged, scrub_repaired). A
 * counter no member reports is shown "-" (JSON null): nodes that predate
 * it. Lost objects are a problem (exit 4); degraded ones a warning.
 *
 * --watch [SECONDS] (default 2) prints the status again every SECONDS,
 * clearing the screen first on a terminal (plain blocks one after the other
 * otherwise), until interrupted or, with --count N, N times.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
		"                    [--node ADDR]... [--timeout MS] [--json] [--watch [SECONDS]] [--count N]\n"
		"  --broker ENDPOINT  broker (default $SHELF_BROKER, else tcp://[::1]:7400; 'none': skip it)\n"
		"  --admin DIR        admin identity from `shelf-broker init` (default $SHELF_ADMIN, else .)\n"
		"  --client DIR       client identity for node health (default $SHELF_CLIENT); without\n"
		"                     one only the broker's view is shown\n"
		"  --slice NAME       slices to check (default: the broker's slices the client may use,\n"
		"                     else those its certificate lists); repeatable\n"
		"  --node ADDR        node to ask for maps when no broker answers (or $SHELF_NODES)\n"
		"  --json             print JSON\n"
		"  --watch [SECONDS]  print it again every SECONDS (default 2), clearing a terminal\n"
		"  --count N          with --watch: stop after N refreshes\n"
		"exit codes: 0 healthy, 4 something unhealthy (listed), 1 nothing reachable, 2 usage\n");
	return code;
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

/* The sum of counter `name` over the members reached that report it; false
 * (and *v 0) when none does. mode 's' sum, 'x' max, 'n' min. */
static bool heal_sum(struct snode **rows, uint32_t n, const char *name, char mode, uint64_t *v)
{
	bool any = false;

	*v = 0;
	for (uint32_t i = 0; i < n && rows[i]; i++) {
		uint64_t x;

		if (!rows[i]->reached || !has_counter(rows[i], name))
			continue;
		x = counter(rows[i], name);
		if (!any)
			*v = x;
		else if (mode == 's')
			*v = *v + x < *v ? UINT64_MAX : *v + x; /* from the network: saturate */
		else if (mode == 'x')
			*v = x > *v ? x : *v;
		else
			*v = x < *v ? x : *v;
		any = true;
	}
	return any;
}

/* The heal figures of one slice, in the order shown. */
static const struct {
	const char *json, *counter;
	char mode;
} heal_fields[] = {
	{ "objects_full", "heal_objects_full", 's' },
	{ "objects_degraded", "heal_objects_degraded", 's' },
	{ "objects_lost", "heal_objects_lost", 's' },
	{ "bytes_full", "heal_bytes_full", 's' },
	{ "bytes_degraded", "heal_bytes_degraded", 's' },
	{ "repair_objects_done", "repair_objects_done", 's' },
	{ "repair_bytes_done", "repair_bytes_done", 's' },
	{ "repair_objects_left", "repair_objects_left", 's' },
	{ "repair_bytes_left", "repair_bytes_left", 's' },
	{ "repair_failed", "repair_failed", 's' },
	{ "repair_rate_bps", "repair_rate_bps", 's' },
	{ "repair_eta_s", "repair_eta_s", 'x' },
	{ "repair_paused", "repair_paused", 's' },
	{ "repair_inbound", "repair_inbound", 's' },
	{ "ae_passes", "ae_passes", 's' },
	{ "ae_last_unix", "ae_last_unix", 'n' },
	{ "ae_diffs_last", "ae_diffs_last", 's' },
	{ "ae_bytes_last", "ae_bytes_last", 's' },
	{ "scrub_passes", "scrub_passes", 's' },
	{ "scrub_last_unix", "scrub_last_unix", 'n' },
	{ "scrub_damaged", "scrub_damaged", 's' },
	{ "scrub_repaired", "scrub_repaired", 's' },
	{ "repair_objects_planned", "repair_objects_planned", 's' },
	{ "repair_bytes_planned", "repair_bytes_planned", 's' },
};
#define HEAL_FIELDS (sizeof(heal_fields) / sizeof(heal_fields[0]))
enum {
	H_OFULL, H_ODEG, H_OLOST, H_BFULL, H_BDEG, H_RODONE, H_RBDONE, H_ROLEFT, H_RBLEFT,
	H_RFAIL, H_RATE, H_ETA, H_PAUSED, H_INBOUND, H_AEPASS, H_AELAST, H_AEDIFF, H_AEBYTES,
	H_SCPASS, H_SCLAST, H_SCDMG, H_SCFIX, H_ROPLAN, H_RBPLAN,
};

struct heal {
	bool has[HEAL_FIELDS];
	uint64_t v[HEAL_FIELDS];
	bool any;               /* some member reports some heal counter */
};

static void heal_collect(struct snode **rows, uint32_t n, struct heal *h)
{
	memset(h, 0, sizeof(*h));
	for (size_t i = 0; i < HEAL_FIELDS; i++) {
		h->has[i] = heal_sum(rows, n, heal_fields[i].counter, heal_fields[i].mode, &h->v[i]);
		h->any |= h->has[i];
	}
	/* The slice's ETA: the work left (queued and planned) over the sum of
	 * the members' rates. Each member's own ETA rests on its own rate,
	 * which in a repair's first seconds rests on a copy or two: their
	 * largest overshot the time left by 2-3 times in shelf-bench heal. The
	 * members' largest stays the answer when no member has a rate yet. */
	if (h->has[H_RATE] && h->v[H_RATE] && h->has[H_RBLEFT]) {
		uint64_t left = h->v[H_RBLEFT] + (h->has[H_RBPLAN] ? h->v[H_RBPLAN] : 0);

		h->v[H_ETA] = left ? (left + h->v[H_RATE] / 2) / h->v[H_RATE] : 0;
		if (left && !h->v[H_ETA])
			h->v[H_ETA] = 1;
		h->has[H_ETA] = true;
	}
}

/* A count, or "-" when no member reports it. */
static const char *hnum(const struct heal *h, int f, char *buf, size_t len)
{
	if (!h->has[f])
		return "-";
	snprintf(buf, len, "%llu", (unsigned long long)h->v[f]);
	return buf;
}

/* Bytes as MiB with one decimal, or "-". */
static const char *hmib(const struct heal *h, int f, char *buf, size_t len)
{
	if (!h->has[f])
		return "-";
	snprintf(buf, len, "%.1f MiB", (double)h->v[f] / 1048576.0);
	return buf;
}

/* How long ago unix time t was: "12 s ago", "never" (0), "-" (unknown). */
static const char *hago(const struct heal *h, int f, char *buf, size_t len)
{
	time_t now = time(NULL);
	uint64_t t = h->v[f];

	if (!h->has[f])
		return "-";
	if (t == 0)
		return "never";
	if ((uint64_t)now <= t)
		snprintf(buf, len, "just now");
	else if ((uint64_t)now - t < 120)
		snprintf(buf, len, "%llu s ago", (unsigned long long)((uint64_t)now - t));
	else if ((uint64_t)now - t < 7200)
		snprintf(buf, len, "%llu min ago", (unsigned long long)(((uint64_t)now - t) / 60));
	else
		snprintf(buf, len, "%.1f h ago", (double)((uint64_t)now - t) / 3600.0);
	return buf;
}

static void heal_print(const struct heal *h)
{
	char a[32], b[32], c[32], d[32], e[32], f[32];

	printf("  redundancy: objects %s full, %s degraded, %s lost; bytes %s full, %s degraded\n",
	       hnum(h, H_OFULL, a, sizeof(a)), hnum(h, H_ODEG, b, sizeof(b)),
	       hnum(h, H_OLOST, c, sizeof(c)), hmib(h, H_BFULL, d, sizeof(d)),
	       hmib(h, H_BDEG, e, sizeof(e)));
	printf("  repair: done %s objects (%s), left %s objects (%s), failed %s", hnum(h, H_RODONE, a,
	       sizeof(a)), hmib(h, H_RBDONE, b, sizeof(b)), hnum(h, H_ROLEFT, c, sizeof(c)),
	       hmib(h, H_RBLEFT, d, sizeof(d)), hnum(h, H_RFAIL, e, sizeof(e)));
	if (h->has[H_RATE])
		printf(", rate %.1f MiB/s", (double)h->v[H_RATE] / 1048576.0);
	else
		printf(", rate -");
	if (h->has[H_ETA] && h->has[H_ROLEFT] && h->v[H_ROLEFT])
		printf(", ETA %llu s", (unsigned long long)h->v[H_ETA]);
	else if (h->has[H_ROLEFT] && !h->v[H_ROLEFT])
		printf(", ETA 0 s");
	else
		printf(", ETA -");
	if (h->has[H_PAUSED] && h->v[H_PAUSED])
		printf(", PAUSED on %llu node%s (drive full: see their logs)",
		       (unsigned long long)h->v[H_PAUSED], h->v[H_PAUSED] == 1 ? "" : "s");
	printf("\n");
	printf("  anti-entropy: last run %s (the oldest member's), differences %s, passes %s\n",
	       hago(h, H_AELAST, a, sizeof(a)), hnum(h, H_AEDIFF, b, sizeof(b)),
	       hnum(h, H_AEPASS, c, sizeof(c)));
	printf("  scrub: last pass %s (the oldest member's), damage found %s, fixed %s\n",
	       hago(h, H_SCLAST, d, sizeof(d)), hnum(h, H_SCDMG, e, sizeof(e)),
	       hnum(h, H_SCFIX, f, sizeof(f)));
}

static void heal_json(const struct heal *h)
{
	printf(", \"heal\": {");
	for (size_t i = 0; i < HEAL_FIELDS; i++) {
		printf("%s\"%s\": ", i ? ", " : "", heal_fields[i].json);
		if (h->has[i])
			printf("%llu", (unsigned long long)h->v[i]);
		else
			printf("null");
	}
	printf("}");
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
	struct heal heal;

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
	heal_collect(rows, info.n_members, &heal);
	if (heal.has[H_OLOST] && heal.v[H_OLOST])
		problem(st, "slice %s: %llu object%s lost (no intact copy found on any member)", slice,
			(unsigned long long)heal.v[H_OLOST], heal.v[H_OLOST] == 1 ? "" : "s");
	if (heal.has[H_ODEG] && heal.v[H_ODEG])
		warning(st, "slice %s: %llu object%s degraded (fewer than %u copies): being repaired",
			slice, (unsigned long long)heal.v[H_ODEG], heal.v[H_ODEG] == 1 ? "" : "s",
			info.replicas);
	if (heal.has[H_PAUSED] && heal.v[H_PAUSED])
		warning(st, "slice %s: repair paused on %llu node%s (a drive is nearly full)", slice,
			(unsigned long long)heal.v[H_PAUSED], heal.v[H_PAUSED] == 1 ? "" : "s");
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
		heal_json(&heal);
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
		heal_print(&heal);
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

static int status_once(int argc, char **argv)
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
	st->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	st->admin_dir = cli_env("SHELF_ADMIN", ".");
	st->client = cli_env("SHELF_CLIENT", NULL);
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

/*
 * --watch [SECONDS] and --count N are taken out of argv here; the rest goes
 * to status_once() at each refresh. The exit code is the last refresh's.
 */
int cmd_status(int argc, char **argv)
{
	char **av = calloc((size_t)argc + 1, sizeof(*av));
	int ac = 0, code = 0;
	bool watch = false, json = false, tty = isatty(STDOUT_FILENO);
	long interval = 2, count = 0;

	if (!av)
		return 1;
	for (int i = 0; i < argc; i++) {
		if (i > 0 && (strcmp(argv[i], "--watch") == 0 || strncmp(argv[i], "--watch=", 8) == 0)) {
			const char *v = argv[i][7] == '=' ? argv[i] + 8 : NULL;
			char *end = NULL;

			watch = true;
			if (!v && i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9')
				v = argv[++i];
			if (v) {
				interval = strtol(v, &end, 10);
				if (*end || interval < 1 || interval > 86400) {
					fprintf(stderr, "shelf status: --watch '%s': seconds 1..86400\n", v);
					free(av);
					return 2;
				}
			}
			continue;
		}
		if (i > 0 && strcmp(argv[i], "--count") == 0) {
			char *end = NULL;

			if (i + 1 >= argc || (count = strtol(argv[i + 1], &end, 10), *end) || count < 1) {
				fprintf(stderr, "shelf status: --count needs a number >= 1\n");
				free(av);
				return 2;
			}
			i++;
			continue;
		}
		json |= strcmp(argv[i], "--json") == 0;
		av[ac++] = argv[i];
	}
	if (!watch) {
		code = status_once(ac, av);
		free(av);
		return code;
	}
	for (long n = 0; !count || n < count; n++) {
		char when[32];
		time_t t = time(NULL);

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		/* JSON: one document after the other, nothing between them */
		if (tty)
			printf("\033[H\033[2J");
		else if (n && !json)
			printf("\n");
		if (!json)
			printf("=== shelf status, %s (every %ld s) ===\n", when, interval);
		fflush(stdout);
		code = status_once(ac, av);
		fflush(stdout);
		if (code == 2)
			break;
		if (count && n + 1 >= count)
			break;
		sleep((unsigned)interval);
	}
	free(av);
	return code;
}
