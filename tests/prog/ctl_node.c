/*
 * ctl_node: a node that runs only the control-plane client (firmware/ctl),
 * for the broker's integration tests.
 *
 *   ctl_node --state DIR --ca FILE --broker ENDPOINT,KEYFILE [--broker ...]
 *            [--token T] [--board B] [--site S] [--chassis C] [--slot N]
 *            [--group G] [--port P] [--capacity BYTES] [--seconds N]
 *            [--peer-serve SLICE --ifname IF] [--peer-connect SLICE:NODEID]
 *
 * KEYFILE holds the broker's CURVE key in Z85 (broker.pub); FILE holds the
 * CA key in hex (ca.pub). The identity is DIR/node.key (created). Every
 * 200 ms it rewrites DIR/status:
 *   id=<node id hex>
 *   registered=<0|1>
 *   brokers=<0|1 per --broker, in order>   (registered with each)
 *   map <slice> epoch=<e> members=<n> up=<n> down=<n> out=<n> owner=<fp|-> digest=<hex>
 *   peer=<ok|refused|fail> <detail>        (with --peer-connect)
 *   crl=<version>
 * The digest covers the sorted (id, state, address) of every member, so two
 * nodes holding the same map print the same digest.
 *
 * --peer-serve installs the node's address in SLICE on IF (ovl_nl) and
 * serves CURVE on [address]:port, admitting exactly the members whose
 * certificates verify offline (CA, broker certificate, revocation list)
 * and revoking keys by serial when a newer revocation list arrives.
 * --peer-connect pings member NODEID of SLICE on its slice address with its
 * CURVE key from the cached map, once a second.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "node.h"

#define STATUS_MS 200
#define PEER_TRY_MS 1000
#define PEER_MAX 1024

static volatile int stop_flag;
static unsigned n_brokers;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int read_text(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	return 0;
}

struct peer_state {
	ovl_zap_t *zap;
	ovl_keyring_t *kr;
	ovl_link_server_t *srv;
	uint64_t serials[PEER_MAX];
	unsigned n;
	char status[512];
	uint64_t next_refresh;
	uint64_t next_try;
};

static void digest(const struct node_ctl_map *m, char out[17])
{
	uint8_t h[8], acc[8] = { 0 };

	/* order-independent: xor of per-member hashes */
	for (uint32_t i = 0; i < m->n_members; i++) {
		uint8_t in[OVL_MSG_ID_BYTES + OVL_MSG_ADDR_BYTES + 1];

		memcpy(in, m->members[i].id, OVL_MSG_ID_BYTES);
		memcpy(in + OVL_MSG_ID_BYTES, m->members[i].addr, OVL_MSG_ADDR_BYTES);
		in[sizeof(in) - 1] = (uint8_t)m->members[i].state;
		crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
		for (int k = 0; k < 8; k++)
			acc[k] ^= h[k];
	}
	for (int k = 0; k < 8; k++)
		sprintf(out + 2 * k, "%02x", acc[k]);
}

static void write_status(node_ctl_t *c, const char *dir, const struct ovl_id *id,
			 const struct peer_state *ps)
{
	char path[600], tmp[610], hex[OVL_ID_HEX_BYTES];
	const struct ovl_crl *crl = node_ctl_crl(c);
	FILE *f = NULL;

	snprintf(path, sizeof(path), "%s/status", dir);
	snprintf(tmp, sizeof(tmp), "%s/status.tmp", dir);
	f = fopen(tmp, "w");
	if (!f)
		return;
	ovl_nodeid_format(id->sign_pk, hex);
	fprintf(f, "id=%s\nregistered=%d\nbrokers=", hex, node_ctl_registered(c));
	for (unsigned i = 0; i < n_brokers; i++)
		fputc(node_ctl_broker_registered(c, i) ? '1' : '0', f);
	fputc('\n', f);
	for (unsigned i = 0; i < node_ctl_map_count(c); i++) {
		const struct node_ctl_map *m = node_ctl_map_at(c, i);
		unsigned st[4] = { 0 };
		char d[17];

		for (uint32_t k = 0; k < m->n_members; k++)
			st[m->members[k].state & 3]++;
		const uint8_t *owner = node_ctl_slice_owner(c, m->name);
		char ofp[OVL_ID_FP_BYTES] = "-";

		if (owner)
			ovl_nodeid_fingerprint(owner, ofp);
		digest(m, d);
		fprintf(f, "map %s epoch=%llu members=%u up=%u down=%u out=%u owner=%s digest=%s\n",
			m->name, (unsigned long long)m->epoch, m->n_members, st[1], st[2], st[3], ofp,
			d);
	}
	if (ps->status[0])
		fprintf(f, "peer=%s\n", ps->status);
	fprintf(f, "crl=%llu\n", crl ? (unsigned long long)ovl_crl_version(crl) : 0ULL);
	fprintf(f, "event=%s\n", node_ctl_last_event(c));
	fclose(f);
	rename(tmp, path);
}

/* Admit every member whose certificate verifies; revoke listed serials. */
static void peer_refresh(node_ctl_t *c, struct peer_state *ps, const char *slice)
{
	const struct node_ctl_map *m = node_ctl_map_find(c, slice);
	const struct ovl_crl *crl = node_ctl_crl(c);
	char err[256];

	for (unsigned i = 0; crl && i < ps->n; i++)
		if (ps->serials[i] && ovl_crl_is_revoked(crl, ps->serials[i])) {
			ovl_keyring_revoke_tag(ps->kr, ps->serials[i]);
			ps->serials[i] = 0;
		}
	for (uint32_t i = 0; m && i < m->n_members; i++) {
		struct ovl_cert cert;

		if (node_ctl_member_verify(c, m, i, &cert, err, sizeof(err)) < 0)
			continue;
		ovl_keyring_add(ps->kr, cert.curve_pk, cert.not_after, cert.serial);
		if (ps->n < PEER_MAX)
			ps->serials[ps->n++] = cert.serial;
	}
}

static int peer_serve_start(node_ctl_t *c, void *zctx, struct peer_state *ps, const char *slice,
			    const char *ifname, const struct ovl_id *id, uint16_t port)
{
	const struct node_ctl_map *m = node_ctl_map_find(c, slice);
	struct ovl_link_server_cfg scfg = { 0 };
	struct ovl_nl *nl = NULL;
	char err[256], a[OVL_SLICE_ADDR_STRLEN], ep[128];
	struct in6_addr addr;
	int rc;

	for (uint32_t i = 0; m && i < m->n_members; i++) {
		if (memcmp(m->members[i].id, id->sign_pk, OVL_ID_BYTES) != 0)
			continue;
		memcpy(&addr, m->members[i].addr, sizeof(addr));
		if ((rc = ovl_nl_new(&nl, err, sizeof(err))) < 0 ||
		    ((rc = ovl_nl_addr_add(nl, ifname, &addr, 64, err, sizeof(err))) < 0 &&
		     rc != -EEXIST)) {
			fprintf(stderr, "ctl_node: %s\n", err);
			ovl_nl_destroy(&nl);
			return rc;
		}
		ovl_nl_destroy(&nl);
		if (!ps->zap && (rc = ovl_zap_new(&ps->zap, zctx, err, sizeof(err))) < 0) {
			fprintf(stderr, "ctl_node: %s\n", err);
			return rc;
		}
		ps->kr = ovl_keyring_new();
		if (!ps->kr)
			return -ENOMEM;
		ovl_zap_domain_set(ps->zap, OVL_LINK_DOMAIN_PEER, ps->kr);
		peer_refresh(c, ps, slice);
		ovl_slice_addr_format(&addr, a, sizeof(a));
		snprintf(ep, sizeof(ep), "tcp://[%s]:%u", a, port);
		scfg.endpoint = ep;
		scfg.domain = OVL_LINK_DOMAIN_PEER;
		scfg.secret_key = id->curve_sk;
		rc = ovl_link_server_new(&ps->srv, ps->zap, &scfg, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "ctl_node: %s\n", err);
			return rc;
		}
		fprintf(stderr, "ctl_node: serving peers on %s\n", ep);
		return 1;
	}
	return 0;
}

static void peer_serve_poll(struct peer_state *ps)
{
	char buf[512];
	struct ovl_link_peer from;
	int n;

	while ((n = ovl_link_server_recv(ps->srv, &from, buf, sizeof(buf), 0)) >= 0)
		ovl_link_server_send(ps->srv, &from, "pong", 4, 100);
}

/* Install our own address of `slice` on ifname, so the slice's /64 is on-link. */
static int install_addr(node_ctl_t *c, const char *slice, const char *ifname,
			const struct ovl_id *id)
{
	const struct node_ctl_map *m = node_ctl_map_find(c, slice);
	struct ovl_nl *nl = NULL;
	char err[256];
	int rc = 0;

	for (uint32_t i = 0; m && i < m->n_members; i++) {
		struct in6_addr addr;

		if (memcmp(m->members[i].id, id->sign_pk, OVL_ID_BYTES) != 0)
			continue;
		memcpy(&addr, m->members[i].addr, sizeof(addr));
		rc = ovl_nl_new(&nl, err, sizeof(err));
		if (rc == 0)
			rc = ovl_nl_addr_add(nl, ifname, &addr, 64, err, sizeof(err));
		ovl_nl_destroy(&nl);
		return rc == -EEXIST ? 1 : rc < 0 ? rc : 1;
	}
	return 0;
}

static void peer_ping(node_ctl_t *c, void *zctx, struct peer_state *ps, const char *spec,
		      const struct ovl_id *id, const char *ifname)
{
	char slice[64], err[256], a[OVL_SLICE_ADDR_STRLEN], ep[128], buf[64];
	const char *colon = strchr(spec, ':');
	const struct node_ctl_map *m = NULL;
	uint8_t want[OVL_ID_BYTES];
	ovl_link_client_t *cl = NULL;
	struct ovl_cert cert;
	int rc;

	if (!colon || colon - spec >= (int)sizeof(slice) || ovl_nodeid_parse(colon + 1, want) < 0) {
		snprintf(ps->status, sizeof(ps->status), "fail bad --peer-connect '%s'", spec);
		return;
	}
	memcpy(slice, spec, (size_t)(colon - spec));
	slice[colon - spec] = 0;
	m = node_ctl_map_find(c, slice);
	if (ifname && install_addr(c, slice, ifname, id) < 0) {
		snprintf(ps->status, sizeof(ps->status), "fail cannot install our address");
		return;
	}
	for (uint32_t i = 0; m && i < m->n_members; i++) {
		struct ovl_link_client_cfg lc = { ep, m->members[i].curve_key, id->curve_sk, NULL };
		struct in6_addr addr;

		if (memcmp(m->members[i].id, want, OVL_ID_BYTES) != 0)
			continue;
		rc = node_ctl_member_verify(c, m, i, &cert, err, sizeof(err));
		if (rc < 0) {
			snprintf(ps->status, sizeof(ps->status), "fail certificate: %s", err);
			return;
		}
		memcpy(&addr, m->members[i].addr, sizeof(addr));
		ovl_slice_addr_format(&addr, a, sizeof(a));
		snprintf(ep, sizeof(ep), "tcp://[%s]:%u", a, m->members[i].port);
		if (ovl_link_client_new(&cl, zctx, &lc, err, sizeof(err)) < 0) {
			snprintf(ps->status, sizeof(ps->status), "fail %s", err);
			return;
		}
		rc = ovl_link_client_wait_ready(cl, 2000, err, sizeof(err));
		if (rc == -EACCES) {
			snprintf(ps->status, sizeof(ps->status), "refused %s", ep);
		} else if (rc < 0) {
			snprintf(ps->status, sizeof(ps->status), "fail %s: %s", ep, err);
		} else if (ovl_link_client_send(cl, "ping", 4, 1000) < 0 ||
			   (rc = ovl_link_client_recv(cl, buf, sizeof(buf), 2000)) != 4) {
			snprintf(ps->status, sizeof(ps->status), "fail no pong from %s", ep);
		} else {
			snprintf(ps->status, sizeof(ps->status), "ok %s serial=%llu", ep,
				 (unsigned long long)cert.serial);
		}
		ovl_link_client_destroy(&cl);
		return;
	}
	snprintf(ps->status, sizeof(ps->status), "fail member not in the cached map");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "state", 1, NULL, 'd' }, { "ca", 1, NULL, 'a' }, { "broker", 1, NULL, 'b' },
		{ "token", 1, NULL, 't' }, { "board", 1, NULL, 'B' }, { "site", 1, NULL, 's' },
		{ "chassis", 1, NULL, 'c' }, { "slot", 1, NULL, 'l' }, { "group", 1, NULL, 'g' },
		{ "port", 1, NULL, 'p' }, { "capacity", 1, NULL, 'C' }, { "seconds", 1, NULL, 'S' },
		{ "peer-serve", 1, NULL, 'P' }, { "ifname", 1, NULL, 'i' },
		{ "peer-connect", 1, NULL, 'x' }, { NULL, 0, NULL, 0 }
	};
	struct node_ctl_cfg cfg;
	struct peer_state ps;
	struct ovl_id *id = NULL;
	node_ctl_t *c = NULL;
	void *zctx = NULL;
	const char *state = NULL, *serve = NULL, *ifname = NULL, *connect_to = NULL;
	char err[512], path[600], text[128];
	uint64_t end = 0, next_status = 0;
	int opt, rc = 1, seconds = 0;

	memset(&cfg, 0, sizeof(cfg));
	memset(&ps, 0, sizeof(ps));
	snprintf(cfg.board, sizeof(cfg.board), "sim");
	snprintf(cfg.domain.site, sizeof(cfg.domain.site), "sim-site");
	snprintf(cfg.domain.chassis, sizeof(cfg.domain.chassis), "sim-1u");
	snprintf(cfg.domain.slot, sizeof(cfg.domain.slot), "0");
	cfg.port = 7100;
	cfg.capacity = 2ull << 30;
	while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (opt) {
		case 'd': state = optarg; break;
		case 'a':
			if (read_text(optarg, text, sizeof(text)) < 0 ||
			    ovl_nodeid_parse(text, cfg.ca_pk) < 0) {
				fprintf(stderr, "ctl_node: cannot read a CA key from '%s'\n", optarg);
				return 2;
			}
			break;
		case 'b': {
			char *comma = strchr(optarg, ',');
			struct node_ctl_broker *b = &cfg.brokers[cfg.n_brokers];

			if (!comma || cfg.n_brokers >= NODE_CTL_BROKERS_MAX ||
			    read_text(comma + 1, text, sizeof(text)) < 0 ||
			    ovl_key_z85_decode(text, b->server_key) < 0) {
				fprintf(stderr, "ctl_node: bad --broker '%s' (ENDPOINT,KEYFILE)\n", optarg);
				return 2;
			}
			*comma = 0;
			snprintf(b->endpoint, sizeof(b->endpoint), "%s", optarg);
			cfg.n_brokers++;
			break;
		}
		case 't': snprintf(cfg.token, sizeof(cfg.token), "%s", optarg); break;
		case 'B': snprintf(cfg.board, sizeof(cfg.board), "%s", optarg); break;
		case 's': snprintf(cfg.domain.site, sizeof(cfg.domain.site), "%s", optarg); break;
		case 'c': snprintf(cfg.domain.chassis, sizeof(cfg.domain.chassis), "%s", optarg); break;
		case 'l': snprintf(cfg.domain.slot, sizeof(cfg.domain.slot), "%s", optarg); break;
		case 'g': snprintf(cfg.group, sizeof(cfg.group), "%s", optarg); break;
		case 'p': cfg.port = (uint16_t)atoi(optarg); break;
		case 'C': cfg.capacity = strtoull(optarg, NULL, 10); break;
		case 'S': seconds = atoi(optarg); break;
		case 'P': serve = optarg; break;
		case 'i': ifname = optarg; break;
		case 'x': connect_to = optarg; break;
		default: return 2;
		}
	}
	if (!state) {
		fprintf(stderr, "ctl_node: --state is required\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	mkdir(state, 0700);
	snprintf(path, sizeof(path), "%s/node.key", state);
	if (ovl_id_load_or_create(&id, path, NULL, err, sizeof(err)) < 0)
		goto out;
	cfg.id = id;
	cfg.state_dir = state;
	n_brokers = cfg.n_brokers;
	zctx = zmq_ctx_new();
	if (!zctx || node_ctl_new(&c, zctx, &cfg, err, sizeof(err)) < 0)
		goto out;
	if (seconds)
		end = mono_ms() + (uint64_t)seconds * 1000;
	while (!stop_flag && (!end || mono_ms() < end)) {
		int changed = node_ctl_poll(c, 50);

		if (changed < 0) {
			snprintf(err, sizeof(err), "poll: %s", strerror(-changed));
			goto out;
		}
		if (serve && !ps.srv) {
			if (peer_serve_start(c, zctx, &ps, serve, ifname ? ifname : "eth0", id,
					     cfg.port) < 0) {
				snprintf(err, sizeof(err), "cannot serve peers");
				goto out;
			}
		}
		if (ps.srv) {
			if (changed || mono_ms() >= ps.next_refresh) {
				peer_refresh(c, &ps, serve);
				ps.next_refresh = mono_ms() + 1000;
			}
			peer_serve_poll(&ps);
		}
		if (connect_to && mono_ms() >= ps.next_try) {
			peer_ping(c, zctx, &ps, connect_to, id, ifname);
			ps.next_try = mono_ms() + PEER_TRY_MS;
		}
		if (mono_ms() >= next_status) {
			write_status(c, state, id, &ps);
			next_status = mono_ms() + STATUS_MS;
		}
	}
	write_status(c, state, id, &ps);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "ctl_node: %s\n", err);
	ovl_link_server_destroy(&ps.srv);
	node_ctl_destroy(&c);
	ovl_zap_destroy(&ps.zap);
	ovl_keyring_destroy(&ps.kr);
	if (zctx)
		zmq_ctx_term(zctx);
	ovl_id_destroy(&id);
	return rc;
}
