/*
 * shelf: the command-line tool.
 *
 * Exit codes: 0 success; 1 the operation failed (the message says why);
 * 2 usage error; 3 not found; 4 (status) something is unhealthy; 5 (ls) a
 * partial answer: some node did not answer, the others' keys are listed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"
#include "admin.h"
#include "data.h"
#include "json.h"
#include "xfer.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_NOTFOUND 3

struct cmd {
	const char *group, *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static void default_key_path(char *out, size_t len)
{
	const char *env = getenv("SHELF_ID");
	const char *home = getenv("HOME");

	if (env && *env)
		snprintf(out, len, "%s", env);
	else
		snprintf(out, len, "%s/.config/shelf/id.key", home && *home ? home : ".");
}

static void json_str(const char *k, const char *v, bool last)
{
	printf("  \"%s\": ", k);
	cli_json_str(stdout, v, strlen(v));
	printf("%s\n", last ? "" : ",");
}

static int id_usage(FILE *f, const char *what)
{
	fprintf(f,
		"usage: shelf id %s [--key FILE] %s[--json]\n"
		"  --key FILE     identity file (default $SHELF_ID, else ~/.config/shelf/id.key)\n"
		"%s"
		"  --json         print JSON\n",
		what, strcmp(what, "show") == 0 ? "[--site SITE --slice NAME] " : "",
		strcmp(what, "show") == 0
			? "  --site SITE    site id (default $SHELF_SITE, else sim-site)\n"
			  "  --slice NAME   also print the slice prefix and this identity's address in it\n"
			: "");
	return f == stdout ? 0 : EXIT_USAGE;
}

static int parse_id_opts(int argc, char **argv, const char *what, char *key, size_t keylen,
			 const char **site, const char **slice, bool *json)
{
	static const struct option lo[] = {
		{ "key", required_argument, NULL, 'k' }, { "site", required_argument, NULL, 's' },
		{ "slice", required_argument, NULL, 'l' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	int opt;

	default_key_path(key, keylen);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "k:s:l:jh", lo, NULL)) != -1) {
		switch (opt) {
		case 'k': snprintf(key, keylen, "%s", optarg); break;
		case 's': *site = optarg; break;
		case 'l': *slice = optarg; break;
		case 'j': *json = true; break;
		case 'h': return id_usage(stdout, what) == 0 ? -1 : EXIT_USAGE;
		default: return id_usage(stderr, what);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "shelf id %s: unexpected argument '%s'\n", what, argv[optind]);
		return EXIT_USAGE;
	}
	return 0;
}

static int cmd_id_new(int argc, char **argv)
{
	char key[512], err[256];
	const char *site = NULL, *slice = NULL;
	bool json = false, created = false;
	struct ovl_id *id = NULL;
	int ret = parse_id_opts(argc, argv, "new", key, sizeof(key), &site, &slice, &json);
	char dir[512], *slash;

	if (ret)
		return ret < 0 ? 0 : ret;
	snprintf(dir, sizeof(dir), "%s", key);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		/* create the parent directories, private */
		for (char *p = dir + 1; *p; p++) {
			if (*p == '/') {
				*p = '\0';
				mkdir(dir, 0700);
				*p = '/';
			}
		}
		mkdir(dir, 0700);
	}
	ret = ovl_id_load_or_create(&id, key, &created, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "shelf id new: %s\n", err);
		return EXIT_FAIL;
	}
	if (!created) {
		fprintf(stderr, "shelf id new: '%s' already holds an identity; not replacing it\n", key);
		ovl_id_destroy(&id);
		return EXIT_FAIL;
	}
	printf("created identity in '%s' (mode 0600)\n", key);
	ovl_id_destroy(&id);
	return 0;
}

static int cmd_id_show(int argc, char **argv)
{
	char key[512], err[256], hex[OVL_ID_HEX_BYTES], fp[OVL_ID_FP_BYTES], z85[OVL_ID_Z85_BYTES];
	char prefix[64], addr[64], sid[80];
	const char *site = getenv("SHELF_SITE"), *slice = NULL;
	bool json = false;
	struct ovl_id *id = NULL;
	struct ovl_slice sl;
	struct in6_addr a;
	int ret = parse_id_opts(argc, argv, "show", key, sizeof(key), &site, &slice, &json);

	if (ret)
		return ret < 0 ? 0 : ret;
	if (!site || !*site)
		site = "sim-site";
	ret = ovl_id_load(&id, key, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "shelf id show: %s%s\n", err,
			ret == -ENOENT ? " (create one with 'shelf id new')" : "");
		return ret == -ENOENT ? EXIT_NOTFOUND : EXIT_FAIL;
	}
	ovl_nodeid_format(id->sign_pk, hex);
	ovl_nodeid_fingerprint(id->sign_pk, fp);
	ovl_key_z85_encode(id->curve_pk, z85);
	if (slice) {
		ret = ovl_slice_init(&sl, site, slice, err, sizeof(err));
		if (ret == 0)
			ret = ovl_slice_addr(&sl, id->sign_pk, 0, &a);
		if (ret < 0) {
			fprintf(stderr, "shelf id show: %s\n", ret == -EINVAL ? err : strerror(-ret));
			ovl_id_destroy(&id);
			return EXIT_FAIL;
		}
		ovl_slice_prefix_format(&sl.prefix, 64, prefix, sizeof(prefix));
		ovl_slice_addr_format(&a, addr, sizeof(addr));
		ovl_slice_id_format(&sl, sid, sizeof(sid));
	}
	if (json) {
		printf("{\n");
		json_str("node_id", hex, false);
		json_str("fingerprint", fp, false);
		json_str("curve_key_z85", z85, !slice);
		if (slice) {
			json_str("site", site, false);
			json_str("slice", slice, false);
			json_str("slice_id", sid, false);
			json_str("prefix", prefix, false);
			json_str("address", addr, true);
		}
		printf("}\n");
	} else {
		printf("node id      %s\n", hex);
		printf("fingerprint  %s\n", fp);
		printf("curve key    %s\n", z85);
		if (slice) {
			printf("slice        %s (site %s)\n", slice, site);
			printf("slice id     %s\n", sid);
			printf("prefix       %s\n", prefix);
			printf("address      %s\n", addr);
		}
	}
	ovl_id_destroy(&id);
	return 0;
}

static const struct cmd cmds[] = {
	{ "put", NULL, cmd_put, "store KEY from FILE or stdin: put KEY [FILE|-]; a directory: put -r DIR PREFIX" },
	{ "get", NULL, cmd_get, "read KEY to FILE or stdout: get KEY [FILE|-] [--range A-B]; many keys: get --batch LISTFILE (--out DIR | --tar FILE)" },
	{ "rm", NULL, cmd_rm, "delete KEY" },
	{ "stage", NULL, cmd_stage, "copy every object under PREFIX into DIR: stage PREFIX DIR [--json]" },
	{ "ls", NULL, cmd_ls, "list keys in key order: ls [PREFIX] [--limit N] [--json]" },
	{ "stat", NULL, cmd_stat, "size, crc32c, sequence and node of KEY" },
	{ "id", "new", cmd_id_new, "create this machine's identity (Ed25519 + Curve25519, mode 0600)" },
	{ "id", "show", cmd_id_show, "print the node id, keys, and the address in a slice" },
	{ "image", "build", cmd_image_build, "sign a payload into a fleet update image (--version --board --key --cert --out)" },
	{ "image", "show", cmd_image_show, "print an image's release metadata; --verify --ca CA.pub checks every byte" },
	{ "slice", "create", cmd_slice_create, "create a slice: NAME --replicas R --members SELECTOR" },
	{ "slice", "rm", cmd_slice_rm, "delete a slice" },
	{ "slice", "show", cmd_slice_show, "print a slice's map (members, addresses, states)" },
	{ "slices", NULL, cmd_slices, "list the broker's slices" },
	{ "nodes", NULL, cmd_nodes, "list the broker's nodes with their states" },
	{ "node", "revoke", cmd_node_revoke, "revoke a node: its peers refuse it from the next delta" },
	{ "broker", "stats", cmd_broker_stats, "broker counters: nodes by state, registrations, ..." },
	{ "status", NULL, cmd_status, "cluster health: broker, slices, nodes by state, NODE_STAT per node" },
	{ "fleet", NULL, cmd_fleet, "fleet updates: publish IMAGE, rollout start|status|halt|resume|abort, versions" },
	{ "repair", NULL, cmd_repair, "start anti-entropy and repair of SLICE on every member [--check-only]" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: shelf <command> [options]    (shelf <command> --help for each)\n\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-6s %-6s %s\n", cmds[i].group, cmds[i].name ? cmds[i].name : "",
			cmds[i].summary);
	fprintf(f, "\nexit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 unhealthy (status),\n"
		   "            5 partial (ls: a node did not answer)\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[1], cmds[i].group) != 0)
			continue;
		if (!cmds[i].name)
			return cmds[i].run(argc - 1, argv + 1);
		if (argc < 3) {
			fprintf(stderr, "shelf %s: which one? (", argv[1]);
			for (size_t j = 0; j < sizeof(cmds) / sizeof(cmds[0]); j++)
				if (strcmp(cmds[j].group, argv[1]) == 0)
					fprintf(stderr, " %s", cmds[j].name);
			fprintf(stderr, " )\n");
			return EXIT_USAGE;
		}
		for (size_t j = 0; j < sizeof(cmds) / sizeof(cmds[0]); j++)
			if (strcmp(cmds[j].group, argv[1]) == 0 && strcmp(cmds[j].name, argv[2]) == 0)
				return cmds[j].run(argc - 2, argv + 2);
		fprintf(stderr, "shelf %s: unknown command '%s'\n", argv[1], argv[2]);
		return EXIT_USAGE;
	}
	fprintf(stderr, "shelf: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
