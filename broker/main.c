/*
 * shelf-broker: admits nodes, groups them into slices, introduces them.
 *
 *   shelf-broker init --dir DIR --site SITE
 *   shelf-broker add-broker --dir NEWDIR --from SITEDIR
 *   shelf-broker token --dir DIR [--uses N] [--ttl DURATION]
 *   shelf-broker preauth --dir DIR NODE_ID
 *   shelf-broker client --dir DIR --name NAME --slices S1[,S2...] [--ttl DURATION]
 *   shelf-broker release-key --dir DIR --name NAME [--ttl DURATION]
 *   shelf-broker run --dir DIR [--listen tcp://[ADDR]:PORT] [--state DIR]
 *                    [--config FILE] [--set KEY=VALUE]... [--log-level LEVEL]
 *
 * Exit codes: 0 success, 1 failure (the message says why), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static volatile int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int usage(FILE *f)
{
	fprintf(f,
		"usage: shelf-broker init --dir DIR --site SITE\n"
		"       shelf-broker add-broker --dir NEWDIR --from SITEDIR\n"
		"       shelf-broker token --dir DIR [--uses N] [--ttl DURATION]\n"
		"       shelf-broker preauth --dir DIR NODE_ID\n"
		"       shelf-broker client --dir DIR --name NAME --slices S1[,S2...] [--ttl DURATION]\n"
		"       shelf-broker release-key --dir DIR --name NAME [--ttl DURATION]\n"
		"       shelf-broker run --dir DIR [--listen tcp://[ADDR]:PORT] [--state DIR]\n"
		"                        [--config FILE] [--set KEY=VALUE]... [--log-level LEVEL]\n"
		"\n"
		"init     create a site: CA key (move it offline), broker key and certificate,\n"
		"         admin identity for the shelf CLI\n"
		"add-broker  a second (third...) broker of the site of SITEDIR, which must hold\n"
		"         ca.key for the moment; the brokers list each other in peers/ and split\n"
		"         slice ownership between them\n"
		"token    mint an enrolment token (default: 1 use, valid 24h); stored hashed\n"
		"preauth  pre-authorise a node id (64 hex digits, see `shelf id show`)\n"
		"client   issue a client identity and certificate for slices (DIR/clients/NAME)\n"
		"release-key  issue a release key for signing images (needs DIR/ca.key): writes\n"
		"         DIR/release/NAME.key and NAME.cert, certified by the site CA (default\n"
		"         --ttl 365d)\n"
		"run      serve (default endpoint tcp://[::]:%d)\n"
		"\nconfiguration keys (--set KEY=VALUE, or KEY = VALUE lines in --config):\n",
		BRK_PORT_DEFAULT);
	ovl_conf_print_help(brk_conf, f);
	return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "dir", required_argument, NULL, 'd' },  { "site", required_argument, NULL, 's' },
		{ "uses", required_argument, NULL, 'u' }, { "ttl", required_argument, NULL, 't' },
		{ "listen", required_argument, NULL, 'l' }, { "state", required_argument, NULL, 'S' },
		{ "config", required_argument, NULL, 'c' }, { "set", required_argument, NULL, 'o' },
		{ "log-level", required_argument, NULL, 'L' }, { "help", no_argument, NULL, 'h' },
		{ "name", required_argument, NULL, 'n' }, { "slices", required_argument, NULL, 'C' },
		{ "from", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	struct brk_config cfg;
	char err[512] = "", out[4096];
	const char *cmd = argc > 1 ? argv[1] : NULL, *site = NULL, *ttl = "24h";
	const char *name = NULL, *slices = NULL, *from = NULL;
	const char *sets[64];
	unsigned nsets = 0, uses = 1;
	bool ttl_given = false;
	int c, rc;

	if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0)
		return usage(cmd ? stdout : stderr);
	if (ovl_conf_defaults(brk_conf, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-broker: %s\n", err);
		return 1;
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': rc = ovl_conf_set(brk_conf, &cfg, "dir", optarg, err, sizeof(err)); break;
		case 's': site = optarg; rc = 0; break;
		case 'n': name = optarg; rc = 0; break;
		case 'f': from = optarg; rc = 0; break;
		case 'C': slices = optarg; rc = 0; break;
		case 'u': uses = (unsigned)strtoul(optarg, NULL, 10); rc = 0; break;
		case 't': ttl = optarg; ttl_given = true; rc = 0; break;
		case 'l': rc = ovl_conf_set(brk_conf, &cfg, "listen", optarg, err, sizeof(err)); break;
		case 'S': rc = ovl_conf_set(brk_conf, &cfg, "state_dir", optarg, err, sizeof(err)); break;
		case 'c': rc = ovl_conf_load_file(brk_conf, &cfg, optarg, err, sizeof(err)); break;
		case 'o':
			if (nsets < sizeof(sets) / sizeof(sets[0]))
				sets[nsets++] = optarg;
			rc = 0;
			break;
		case 'L': rc = ovl_conf_set(brk_conf, &cfg, "log_level", optarg, err, sizeof(err)); break;
		case 'h': return usage(stdout);
		default: return usage(stderr);
		}
		if (rc < 0) {
			fprintf(stderr, "shelf-broker: %s\n", err);
			return 2;
		}
	}
	for (unsigned i = 0; i < nsets; i++)
		if (ovl_conf_set_pair(brk_conf, &cfg, sets[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "shelf-broker: %s\n", err);
			return 2;
		}
	if (!cfg.dir[0]) {
		fprintf(stderr, "shelf-broker %s: --dir is required\n", cmd);
		return 2;
	}
	if (strcmp(cmd, "init") == 0) {
		if (!site) {
			fprintf(stderr, "shelf-broker init: --site is required\n");
			return 2;
		}
		rc = brk_site_init(cfg.dir, site, out, sizeof(out), err, sizeof(err));
		if (rc == 0)
			fputs(out, stdout);
	} else if (strcmp(cmd, "add-broker") == 0) {
		if (!from) {
			fprintf(stderr, "shelf-broker add-broker: --from SITEDIR is required\n");
			return 2;
		}
		rc = brk_site_add_broker(cfg.dir, from, out, sizeof(out), err, sizeof(err));
		if (rc == 0)
			fputs(out, stdout);
	} else if (strcmp(cmd, "token") == 0) {
		int64_t ms;

		if (ovl_parse_ms(ttl, &ms) < 0 || ms < 1000) {
			fprintf(stderr, "shelf-broker token: invalid --ttl '%s' (e.g. 30m, 24h)\n", ttl);
			return 2;
		}
		rc = brk_token_mint(cfg.dir, uses, (uint64_t)ms / 1000, out, sizeof(out), err,
				    sizeof(err));
		if (rc == 0)
			printf("%s\n", out);
	} else if (strcmp(cmd, "preauth") == 0) {
		uint8_t id[OVL_ID_BYTES];

		if (optind >= argc || ovl_nodeid_parse(argv[optind], id) < 0) {
			fprintf(stderr, "shelf-broker preauth: expected a node id (64 hex digits)\n");
			return 2;
		}
		rc = brk_preauth_add_file(cfg.dir, id, err, sizeof(err));
	} else if (strcmp(cmd, "client") == 0) {
		int64_t ms;

		if (!name || !slices) {
			fprintf(stderr, "shelf-broker client: --name and --slices are required\n");
			return 2;
		}
		if (strcmp(ttl, "24h") == 0)
			ttl = "720h"; /* clients keep a month unless told */
		if (ovl_parse_ms(ttl, &ms) < 0 || ms < 1000) {
			fprintf(stderr, "shelf-broker client: invalid --ttl '%s' (e.g. 24h)\n", ttl);
			return 2;
		}
		rc = brk_client_issue(cfg.dir, name, slices, (uint64_t)ms / 1000, out, sizeof(out), err,
				      sizeof(err));
		if (rc == 0)
			printf("%s\n", out);
	} else if (strcmp(cmd, "release-key") == 0) {
		int64_t ms;

		if (!name) {
			fprintf(stderr, "shelf-broker release-key: --name is required\n");
			return 2;
		}
		if (!ttl_given)
			ttl = "365d"; /* a release key signs for a year unless told */
		if (ovl_parse_ms(ttl, &ms) < 0 || ms < 1000) {
			fprintf(stderr, "shelf-broker release-key: invalid --ttl '%s' (e.g. 365d)\n", ttl);
			return 2;
		}
		rc = brk_release_key_issue(cfg.dir, name, (uint64_t)ms / 1000, out, sizeof(out), err,
					   sizeof(err));
		if (rc == 0)
			fputs(out, stdout);
	} else if (strcmp(cmd, "run") == 0) {
		enum ovl_log_level lvl;
		struct sigaction sa;

		if (ovl_log_level_parse(cfg.log_level, &lvl) < 0) {
			fprintf(stderr, "shelf-broker: config key 'log_level': '%s' is not one of "
				"error, warn, info, debug\n", cfg.log_level);
			return 2;
		}
		ovl_log_open("shelf-broker", lvl, false);
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		signal(SIGPIPE, SIG_IGN);
		rc = brk_server_run(&cfg, &stop_flag, err, sizeof(err));
	} else {
		fprintf(stderr, "shelf-broker: unknown command '%s'\n", cmd);
		return usage(stderr);
	}
	if (rc < 0) {
		fprintf(stderr, "shelf-broker %s: %s\n", cmd, err);
		return 1;
	}
	return 0;
}
