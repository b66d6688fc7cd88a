/*
 * shelf repair SLICE: start an anti-entropy and repair pass of a slice on
 * every member now (HEAL, docs/PROTOCOL.md 7.13), and print what each
 * answered and the totals.
 *
 * Every member of the slice's map that is not `out` is asked, one after
 * the other; a member that does not answer is named and the others are
 * still asked. --check-only: the members compare with the other homes and
 * count the differences (ae_diffs_last), and repair nothing. --rate and
 * --duty set each member's background repair rate limit (bytes/s, 0 =
 * unlimited) and duty cycle (percent of each second) now, until the next
 * change or restart.
 *
 * HEAL is answered at once, as the pass starts. --wait (the default with
 * --check-only) then reads each member's NODE_STAT until its ae_passes has
 * grown past the value before HEAL, and prints those counters: with
 * --check-only, ae_diffs_last is then the differences that pass found.
 *
 * Exit codes: 0 every member answered (and, waiting, every pass ended);
 * 1 some member did not (or no map, or a pass did not end in time); 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "data.h"
#include "json.h"
#include "overlay.h"
#include "shelf.h"
#include "text.h"

#define REPAIR_NODES_ASKED_MAX 1024

/* The counters shown per node and summed (the others go to --json only). */
static const char *const shown[] = {
	"heal_objects_full",   "heal_objects_degraded", "heal_objects_lost", "repair_objects_left",
	"repair_bytes_left",   "repair_objects_done",   "repair_bytes_done", "repair_failed",
	"ae_diffs_last",       "ae_passes",
};
#define SHOWN (sizeof(shown) / sizeof(shown[0]))

/* One member's answer. */
struct res {
	bool asked;
	int n;                                     /* counters in c, or -errno */
	struct shelf_counter c[SHELF_COUNTERS_MAX];
	char err[SHELF_ERR_BYTES];
	bool has_passes0, done;                    /* --wait: ae_passes before HEAL; the pass ended */
	uint64_t passes0;
};

static int rusage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: shelf repair SLICE [--check-only] [--rate RATE] [--duty PCT] [--json]\n"
		"                    [--wait[=SECONDS] | --no-wait]\n"
		"                    [--client DIR] [--broker ENDPOINT] [--node ADDR]... [--timeout MS]\n"
		"  start an anti-entropy and repair pass of SLICE on every member now\n"
		"  --check-only       compare and count the differences; repair nothing\n"
		"  --rate RATE        each member's repair rate limit, bytes/s (K, M, G: powers of\n"
		"                     1024; 0: unlimited), from now on\n"
		"  --duty PCT         each member's duty cycle for background work, 1..100 %%\n"
		"  --wait[=SECONDS]   wait until each member's pass has ended (ae_passes grew; at most\n"
		"                     SECONDS, default 120) and print its counters then (the\n"
		"                     default with --check-only; --no-wait: print the first answers)\n"
		"  --client DIR       client identity (default $SHELF_CLIENT)\n"
		"  --broker ENDPOINT  broker (default $SHELF_BROKER, else tcp://[::1]:7400; 'none')\n"
		"  --node ADDR        node to ask for the map when no broker answers (or $SHELF_NODES)\n"
		"  --json             print JSON\n"
		"exit codes: 0 every member answered, 1 some did not, 2 usage\n");
	return code;
}

static bool find(const struct shelf_counter *c, int n, const char *name, uint64_t *v)
{
	for (int i = 0; i < n; i++)
		if (strcmp(c[i].name, name) == 0) {
			*v = c[i].value;
			return true;
		}
	return false;
}

int cmd_repair(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "check-only", 0, NULL, 'k' }, { "rate", 1, NULL, 'r' },  { "duty", 1, NULL, 'd' },
		{ "json", 0, NULL, 'j' },       { "client", 1, NULL, 'c' }, { "broker", 1, NULL, 'b' },
		{ "node", 1, NULL, 'n' },       { "timeout", 1, NULL, 't' }, { "help", 0, NULL, 'h' },
		{ "wait", 2, NULL, 'w' },       { "no-wait", 0, NULL, 'W' },
		{ NULL, 0, NULL, 0 },
	};
	const char *client = cli_env("SHELF_CLIENT", NULL), *broker = cli_env("SHELF_BROKER",
									   CLI_BROKER_DEFAULT);
	const char *nodes[SHELF_NODES_MAX], *slice;
	struct shelf_heal_opts ho = { 0 };
	struct res *res = NULL;
	bool wait = false, nowait = false, timed_out = false;
	unsigned long wait_s = 120;
	struct shelf_member *mb = NULL;
	struct shelf_map_info info;
	struct shelf *s = NULL;
	char err[SHELF_ERR_BYTES];
	uint64_t sum[SHELF_COUNTERS_MAX] = { 0 };
	bool has[SHELF_COUNTERS_MAX] = { false };
	unsigned asked = 0, answered = 0;
	int nnodes = 0, timeout_ms = 0, c, code = 1;
	bool json = false;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'k': ho.check_only = true; break;
		case 'r':
			if (ovl_parse_size(optarg, &ho.rate) < 0) {
				fprintf(stderr, "shelf repair: --rate '%s' is not a rate in bytes/s (e.g. 0, "
						"512K, 64M)\n", optarg);
				return 2;
			}
			ho.has_rate = true;
			break;
		case 'd': {
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || (*end && strcmp(end, "%") != 0) || v < 1 || v > 100) {
				fprintf(stderr, "shelf repair: --duty '%s' is not a percentage 1..100\n",
					optarg);
				return 2;
			}
			ho.has_duty = true;
			ho.duty = (unsigned)v;
			break;
		}
		case 'j': json = true; break;
		case 'c': client = optarg; break;
		case 'b': broker = optarg; break;
		case 'n':
			if (nnodes < SHELF_NODES_MAX)
				nodes[nnodes++] = optarg;
			break;
		case 't': {
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > 3600000) {
				fprintf(stderr, "shelf repair: --timeout '%s' is not 1..3600000 (ms)\n",
					optarg);
				return 2;
			}
			timeout_ms = (int)v;
			break;
		}
		case 'w':
			wait = true;
			if (optarg) {
				errno = 0;
				wait_s = strtoul(optarg, &end, 10);
				if (errno || end == optarg || *end || wait_s < 1 || wait_s > 86400) {
					fprintf(stderr, "shelf repair: --wait=SECONDS: 1..86400\n");
					return 2;
				}
			}
			break;
		case 'W': nowait = true; break;
		case 'h': return rusage(0);
		default: return rusage(2);
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "shelf repair: %s\n", optind == argc ? "which slice?" :
			"one slice at a time");
		return rusage(2);
	}
	slice = argv[optind];
	/* a check is read when its pass has ended */
	if (ho.check_only && !nowait)
		wait = true;
	if (nowait)
		wait = false;
	if (!client) {
		fprintf(stderr, "shelf repair: no client identity (give --client DIR or set SHELF_CLIENT)\n");
		return 2;
	}
	code = shelf_cli_open("repair", client, broker, nodes, nnodes, timeout_ms, &s);
	if (code)
		return code;
	code = 1;
	if (shelf_map(s, slice, &info, &mb, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf repair: %s\n", err);
		goto out;
	}
	if (json) {
		printf("{\n  \"slice\": ");
		cli_json_str(stdout, slice, strlen(slice));
		printf(", \"epoch\": %llu, \"check_only\": %s,\n  \"nodes\": [",
		       (unsigned long long)info.epoch, ho.check_only ? "true" : "false");
	} else {
		printf("%s of slice %s (epoch %llu, %u members)%s%s\n",
		       ho.check_only ? "check" : "repair", slice, (unsigned long long)info.epoch,
		       info.n_members, ho.has_rate ? ", rate set" : "", ho.has_duty ? ", duty set" : "");
		printf("  %-16s %-5s %9s %9s %6s %9s %10s %9s %6s %6s  %s\n", "NODE", "STATE", "FULL",
		       "DEGRADED", "LOST", "LEFT", "LEFT_MIB", "DONE", "FAILED", "DIFFS", "ANSWER");
	}
	res = calloc(info.n_members ? info.n_members : 1, sizeof(*res));
	if (!res)
		goto out;
	/* 1. HEAL to every member not out (ae_passes before it, to wait for the pass) */
	for (uint32_t i = 0; i < info.n_members && asked < REPAIR_NODES_ASKED_MAX; i++) {
		struct res *x = &res[i];

		if (strcmp(mb[i].state, "out") == 0)
			continue;
		x->asked = true;
		asked++;
		if (wait) {
			x->n = shelf_node_stat(s, slice, mb[i].addr, mb[i].port, x->c, SHELF_COUNTERS_MAX,
					       x->err, sizeof(x->err));
			x->has_passes0 = x->n >= 0 && find(x->c, x->n, "ae_passes", &x->passes0);
		}
		x->n = shelf_heal(s, slice, mb[i].addr, mb[i].port, &ho, x->c, SHELF_COUNTERS_MAX,
				  x->err, sizeof(x->err));
	}
	/* 2. with --wait (--check-only's default): until each pass has ended */
	if (wait) {
		uint64_t until = ovl_mono_ms() + (uint64_t)wait_s * 1000;
		bool left = true;

		while (left) {
			left = false;
			for (uint32_t i = 0; i < info.n_members; i++) {
				struct res *x = &res[i];
				uint64_t p;
				int n;

				if (!x->asked || x->n < 0 || !x->has_passes0 || x->done)
					continue;
				n = shelf_node_stat(s, slice, mb[i].addr, mb[i].port, x->c,
						    SHELF_COUNTERS_MAX, x->err, sizeof(x->err));
				x->n = n;
				if (n >= 0 && find(x->c, n, "ae_passes", &p) && p > x->passes0)
					x->done = true;
				else
					left |= n >= 0;
			}
			if (!left)
				break;
			if (ovl_mono_ms() >= until) {
				timed_out = true;
				break;
			}
			usleep(200000);
		}
	}
	/* 3. what each answered, and the totals */
	for (uint32_t i = 0, k = 0; i < info.n_members; i++) {
		struct res *x = &res[i];
		char hex[OVL_ID_HEX_BYTES];
		int n = x->n;

		if (!x->asked)
			continue;
		ovl_nodeid_format(mb[i].id, hex);
		if (n >= 0) {
			answered++;
			for (int j = 0; j < n; j++)
				for (size_t f = 0; f < SHOWN; f++)
					if (strcmp(x->c[j].name, shown[f]) == 0) {
						/* from the network: saturate, never wrap */
						has[f] = true;
						sum[f] = sum[f] + x->c[j].value < sum[f]
							 ? UINT64_MAX : sum[f] + x->c[j].value;
					}
		}
		if (json) {
			printf("%s\n    {\"id\": \"%s\", \"addr\": \"%s\", \"state\": \"%s\", \"ok\": %s",
			       k++ ? "," : "", hex, mb[i].addr, mb[i].state, n >= 0 ? "true" : "false");
			if (wait)
				printf(", \"pass_ended\": %s", x->done ? "true" : "false");
			if (n < 0) {
				printf(", \"error\": ");
				cli_json_str(stdout, x->err, strlen(x->err));
			} else {
				printf(", \"counters\": {");
				for (int j = 0; j < n; j++)
					printf("%s%s: %llu", j ? ", " : "", cli_json_q(x->c[j].name),
					       (unsigned long long)x->c[j].value);
				printf("}");
			}
			printf("}");
			continue;
		}
		if (n < 0) {
			printf("  %.16s %-5s %s\n", hex, mb[i].state, x->err);
			continue;
		}
		{
			char col[SHOWN][24];
			uint64_t v;

			for (size_t f = 0; f < SHOWN; f++) {
				if (!find(x->c, n, shown[f], &v))
					snprintf(col[f], sizeof(col[f]), "-");
				else if (strcmp(shown[f], "repair_bytes_left") == 0)
					snprintf(col[f], sizeof(col[f]), "%.1f", (double)v / 1048576.0);
				else
					snprintf(col[f], sizeof(col[f]), "%llu", (unsigned long long)v);
			}
			printf("  %.16s %-5s %9s %9s %6s %9s %10s %9s %6s %6s  %s\n", hex, mb[i].state,
			       col[0], col[1], col[2], col[3], col[4], col[5], col[7], col[8],
			       !wait ? "ok" : x->done ? "ok, pass ended" : x->has_passes0 ? "ok, pass still running"
							    : "ok (no ae_passes: not waited for)");
		}
	}
	if (json) {
		printf("\n  ],\n  \"asked\": %u, \"answered\": %u, \"timed_out\": %s, \"totals\": {",
		       asked, answered, timed_out ? "true" : "false");
		for (size_t f = 0; f < SHOWN; f++) {
			printf("%s\"%s\": ", f ? ", " : "", shown[f]);
			if (has[f])
				printf("%llu", (unsigned long long)sum[f]);
			else
				printf("null");
		}
		printf("}\n}\n");
	} else {
		char t[SHOWN][24];

		for (size_t f = 0; f < SHOWN; f++) {
			if (!has[f])
				snprintf(t[f], sizeof(t[f]), "-");
			else if (strcmp(shown[f], "repair_bytes_left") == 0)
				snprintf(t[f], sizeof(t[f]), "%.1f", (double)sum[f] / 1048576.0);
			else
				snprintf(t[f], sizeof(t[f]), "%llu", (unsigned long long)sum[f]);
		}
		printf("  %-16s %-5s %9s %9s %6s %9s %10s %9s %6s %6s\n", "TOTAL", "", t[0], t[1], t[2],
		       t[3], t[4], t[5], t[7], t[8]);
		printf("%u of %u members answered; %s\n", answered, asked,
		       ho.check_only ? "differences found (DIFFS) are counted by the next pass too; "
				       "nothing was repaired"
				     : "repair runs in the background: watch it with `shelf status --watch`");
	}
	code = answered == asked && asked > 0 && !timed_out ? 0 : 1;
out:
	free(res);
	free(mb);
	shelf_close(&s);
	return code;
}
