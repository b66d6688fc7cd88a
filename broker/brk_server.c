/*
 * brk_server: the ZeroMQ loop around the broker core. One ROUTER socket with
 * CURVE; the ZAP handler's keyring for the node domain admits every CURVE
 * key through its hook (CURVE already proved the client holds the key's
 * secret), and the core lets unknown keys send nothing but `register`, and
 * admin requests only from admin keys. Every key is rate-limited.
 */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#define BRK_DRAIN_MAX 256      /* messages handled before liveness gets a turn */
#define BRK_RELOAD_MS 1000     /* tokens, preauth and clients are looked at this often */

struct server {
	ovl_link_server_t *srv;
	struct brk_rate *rate;
	brk_t *core;
	struct brk_files *files;        /* the site and state files behind the core */
	struct ovl_link_server_stats logged; /* link drops already logged */
};

/* Messages the link layer dropped before the core saw them (several frames,
 * no routing id, a key no longer allowed): one summary line per tick. */
static void log_link_drops(struct server *s)
{
	struct ovl_link_server_stats st;

	ovl_link_server_stats_get(s->srv, &st);
	if (st.dropped_malformed != s->logged.dropped_malformed ||
	    st.dropped_unauthorised != s->logged.dropped_unauthorised ||
	    st.dropped_too_big != s->logged.dropped_too_big)
		ovl_warn("event=refuse what=link malformed=%llu unauthorised=%llu too_big=%llu "
			 "reason=\"not exactly one frame, or no longer allowed: dropped without "
			 "an answer\"",
			 (unsigned long long)(st.dropped_malformed - s->logged.dropped_malformed),
			 (unsigned long long)(st.dropped_unauthorised -
					      s->logged.dropped_unauthorised),
			 (unsigned long long)(st.dropped_too_big - s->logged.dropped_too_big));
	s->logged = st;
}

static uint64_t io_now_ms(void *arg)
{
	(void)arg;
	return ovl_mono_ms();
}

static uint64_t io_unix_s(void *arg)
{
	(void)arg;
	return (uint64_t)time(NULL);
}

static int io_send(void *arg, const struct brk_peer *to, const void *buf, size_t len)
{
	struct server *s = arg;
	struct ovl_link_peer p;

	memcpy(p.key, to->key, OVL_KEY_BYTES);
	memcpy(p.rid, to->rid, to->rid_len);
	p.rid_len = to->rid_len;
	return ovl_link_server_send(s->srv, &p, buf, len, 0);
}

static void io_event(void *arg, enum brk_event ev, const char *line)
{
	(void)arg;
	if (ev == BRK_EV_REFUSE || ev == BRK_EV_REVOKE)
		ovl_warn("%s", line);
	else if (ev == BRK_EV_ERROR)
		ovl_err("%s", line);
	else
		ovl_info("%s", line);
}

void brk_link_opts(struct ovl_link_opts *o)
{
	*o = ovl_link_opts_default;
	o->max_msg_bytes = BRK_SEND_MAX_BYTES;
	o->sndhwm_msgs = 10000;
	o->rcvhwm_msgs = 10000;
	/* no ZMTP heartbeat timers per connection (see ovl_link.h): liveness is
	 * the nodes' own heartbeat messages, dead TCP peers go by keepalive */
	o->heartbeat_ivl_ms = 0;
	o->heartbeat_ttl_ms = 0;
}

int brk_server_run(const struct brk_config *cfg, volatile int *stop, char *err, size_t errlen)
{
	struct brk_site site;
	struct brk_params params = { 0 };
	struct brk_io io = { 0 };
	struct server s;
	struct ovl_link_opts opts = ovl_link_opts_default;
	struct ovl_link_server_cfg scfg = { 0 };
	char state_dir[BRK_PATH_MAX + 8], fleet_dir[BRK_PATH_MAX + 16], ep[OVL_LINK_ENDPOINT_MAX_CHARS], z85[OVL_ID_Z85_BYTES];
	ovl_keyring_t *kr = NULL;
	ovl_zap_t *zap = NULL;
	uint8_t *buf = NULL;
	void *ctx = NULL;
	uint64_t next_tick, next_reload = 0;
	int rc;

	memset(&site, 0, sizeof(site));
	memset(&s, 0, sizeof(s));
	rc = brk_site_load(&site, cfg->dir, err, errlen);
	if (rc < 0)
		return rc;
	if (cfg->site[0] && strcmp(cfg->site, site.site) != 0) {
		snprintf(err, errlen, "config key 'site': '%s' differs from the site '%s' of "
			 "broker.cert", cfg->site, site.site);
		rc = -EINVAL;
		goto out;
	}
	if (cfg->state_dir[0])
		snprintf(state_dir, sizeof(state_dir), "%s", cfg->state_dir);
	else
		snprintf(state_dir, sizeof(state_dir), "%s/state", cfg->dir);
	params.heartbeat_ms = (uint64_t)cfg->heartbeat_ms;
	params.down_ms = (uint64_t)cfg->down_ms;
	params.grace_ms = (uint64_t)cfg->grace_ms;
	params.ttl_ms = (uint64_t)cfg->ttl_ms;
	params.cert_lifetime_s = (uint64_t)cfg->cert_lifetime_ms / 1000;
	params.max_nodes = (uint64_t)cfg->max_nodes;
	snprintf(fleet_dir, sizeof(fleet_dir), "%s/fleet", state_dir);
	params.fleet_dir = fleet_dir;
	params.fleet_slice = cfg->fleet_slice;
	params.fleet_soak_ms = (uint64_t)cfg->fleet_soak_ms;
	params.fleet_assign_valid_ms = (uint64_t)cfg->fleet_assign_valid_ms;
	io.send = io_send;
	io.now_ms = io_now_ms;
	io.unix_s = io_unix_s;
	io.event = io_event;
	io.arg = &s;
	buf = malloc(BRK_RECV_MAX_BYTES);
	ctx = zmq_ctx_new();
	kr = ovl_keyring_new();
	if (!buf || !ctx || !kr) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 65536);
	if ((rc = brk_rate_new(&s.rate, (unsigned)cfg->rate_per_s, (unsigned)cfg->rate_burst,
			       BRK_RATE_BUCKETS)) < 0) {
		snprintf(err, errlen, "cannot create the rate limiter: %s", strerror(-rc));
		goto out;
	}
	if ((rc = brk_files_new(&s.files, &site, cfg->dir, state_dir, err, errlen)) < 0)
		goto out;
	brk_files_io(s.files, &io);
	if ((rc = brk_new(&s.core, &site, &params, &io, err, errlen)) < 0)
		goto out;
	if ((rc = ovl_zap_new(&zap, ctx, err, errlen)) < 0)
		goto out;
	/* enrolment policy: any CURVE key may connect; the application decides */
	ovl_keyring_hook_set(kr, ovl_keyring_admit_any, NULL);
	if ((rc = ovl_zap_domain_set(zap, OVL_LINK_DOMAIN_NODE, kr)) < 0) {
		snprintf(err, errlen, "cannot register the node domain: %s", strerror(-rc));
		goto out;
	}
	brk_link_opts(&opts);
	scfg.endpoint = cfg->listen;
	scfg.domain = OVL_LINK_DOMAIN_NODE;
	scfg.secret_key = site.id->curve_sk;
	/* the receive cap is enforced by libzmq (ZMQ_MAXMSGSIZE): a larger frame closes
	 * its connection while its header is decoded, before anything is allocated */
	opts.max_recv_bytes = BRK_RECV_MAX_BYTES;
	scfg.opts = &opts;
	if ((rc = ovl_link_server_new(&s.srv, zap, &scfg, err, errlen)) < 0)
		goto out;
	ovl_link_server_endpoint(s.srv, ep, sizeof(ep));
	ovl_key_z85_encode(site.id->curve_pk, z85);
	ovl_info("event=listen endpoint=%s key=%s site=%s state_dir=%s", ep, z85, site.site,
		 state_dir);
	next_tick = ovl_mono_ms() + BRK_TICK_MS;
	while (!*stop) {
		uint64_t now = ovl_mono_ms();
		int wait = now >= next_tick ? 0 : (int)(next_tick - now);
		zmq_pollitem_t it = { ovl_link_server_socket(s.srv), 0, ZMQ_POLLIN, 0 };

		if (now >= next_reload) {
			int added = brk_files_reload(s.files, s.core);

			if (added > 0)
				ovl_info("event=reload tokens_and_preauth=%d", added);
			next_reload = now + BRK_RELOAD_MS;
		}
		if (zmq_poll(&it, 1, wait) < 0 && errno != EINTR) {
			rc = -errno;
			snprintf(err, errlen, "poll: %s", strerror(errno));
			goto out;
		}
		for (int i = 0; i < BRK_DRAIN_MAX; i++) {
			struct ovl_link_peer from;
			struct brk_peer p;
			enum brk_rate_verdict verdict;
			int n = ovl_link_server_recv(s.srv, &from, buf, BRK_RECV_MAX_BYTES, 0);

			if (n == -ETIMEDOUT || n == -EINTR)
				break;
			if (n < 0 && n != -EMSGSIZE) {
				rc = n;
				snprintf(err, errlen, "receive: %s", strerror(-n));
				goto out;
			}
			memcpy(p.key, from.key, OVL_KEY_BYTES);
			p.rid_len = from.rid_len <= BRK_RID_MAX_BYTES ? (uint8_t)from.rid_len : 0;
			memcpy(p.rid, from.rid, p.rid_len);
			verdict = brk_rate_check(s.rate, from.key, ovl_mono_ms());
			if (verdict != BRK_RATE_OK) {
				brk_count_rate_limited(s.core);
				if (verdict == BRK_RATE_REFUSE && p.rid_len)
					brk_refuse_rate(s.core, &p, (unsigned)cfg->rate_per_s,
							(unsigned)cfg->rate_burst);
				continue;
			}
			if (p.rid_len == 0) {
				/* cannot even answer it; a client must not set its routing id */
				continue;
			}
			if (n == -EMSGSIZE)
				brk_refuse_oversized(s.core, &p, BRK_RECV_MAX_BYTES);
			else
				brk_handle(s.core, &p, buf, (size_t)n);
		}
		/* group commit: the changes of membership of the messages handled
		 * since the last save reach the disk in one append (one fdatasync),
		 * and only then do the replies that show them leave; what arrives
		 * meanwhile waits in the socket and forms the next batch */
		brk_flush(s.core);
		if (ovl_mono_ms() >= next_tick) {
			log_link_drops(&s);
			brk_tick(s.core);
			next_tick = ovl_mono_ms() + BRK_TICK_MS;
		}
	}
	ovl_info("event=stop");
	rc = 0;
out:
	ovl_link_server_destroy(&s.srv);
	brk_destroy(&s.core); /* saves through s.files: before it goes */
	brk_files_destroy(&s.files);
	ovl_zap_destroy(&zap);
	ovl_keyring_destroy(&kr);
	brk_rate_destroy(&s.rate);
	if (ctx)
		zmq_ctx_term(ctx);
	free(buf);
	brk_site_release(&site);
	return rc;
}
