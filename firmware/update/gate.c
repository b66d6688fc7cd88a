/* node_gate: the health gate of a slot on trial (gate.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "boot/bootstate.h"
#include "peer/peer.h"
#include "update/gate.h"

/* the probe: a key nobody writes (fe x8 is reserved space, 'G' the gate's) */
static const uint8_t PROBE_KEY[] = { 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 'G', 'p', 'r', 'o', 'b', 'e' };

enum gate_stage { G_REGISTER, G_SCRUB, G_SELFCHECK, G_DONE };

/* one self-check call; heap, because a call of a closed connection may
 * complete later from the loop: then an orphan (g NULL) frees itself */
struct gate_call {
	struct ovl_dpc_call call;
	struct node_gate *g;
};

struct node_gate {
	struct node_gate_opts o;
	char boot_dir[1024];
	uint64_t start_ms, next_try_ms, call_start_ms;
	enum gate_stage stage;
	uint64_t scrub_records, scrub_errors;
	struct node_peer *peer;
	struct gate_call *gc;        /* the call in flight, NULL none */
	bool answered;               /* a call completed with an answer */
	uint8_t cert[OVL_CERT_MAX_BYTES]; /* copy: the engine borrows it */
	size_t cert_len;
	char answer[96];             /* the self-check's answer, for the message */
	char last[400];              /* what the gate waits for / why the last try failed */
	char where[96];              /* the address the self-check used */
};

int node_gate_needed(char *slot, char *boot_dir, size_t cap, char *err, size_t errlen)
{
	const char *s = getenv("SHELF_SLOT"), *d = getenv("SHELF_BOOT_STATE");
	struct boot_state st;
	int i, r;

	if (!s || !d || !*d)
		return 0;
	i = s[0] && !s[1] ? boot_slot_index(s[0]) : -EINVAL;
	if (i < 0) {
		snprintf(err, errlen, "SHELF_SLOT '%.8s' is not a or b", s);
		return -EINVAL;
	}
	if (strlen(d) >= cap) {
		snprintf(err, errlen, "SHELF_BOOT_STATE is too long");
		return -ENAMETOOLONG;
	}
	r = boot_state_load(d, &st, err, errlen);
	if (r < 0)
		return r;
	if (!st.s[i].present) {
		snprintf(err, errlen, "the boot state in '%.400s' does not name slot %c", d, s[0]);
		return -ENOENT;
	}
	if (st.s[i].good)
		return 0;
	*slot = s[0];
	memcpy(boot_dir, d, strlen(d) + 1);
	return 1;
}

int node_gate_new(struct node_gate **out, const struct node_gate_opts *o, char *err, size_t errlen)
{
	struct node_gate *g = NULL;

	*out = NULL;
	if (!o->loop || !o->boot_dir || boot_slot_index(o->slot) < 0 || !o->deadline_ms) {
		snprintf(err, errlen, "health gate: bad options");
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "health gate: out of memory");
		return -ENOMEM;
	}
	g->o = *o;
	if (strlen(o->boot_dir) >= sizeof(g->boot_dir)) {
		free(g);
		snprintf(err, errlen, "health gate: boot state path too long");
		return -ENAMETOOLONG;
	}
	memcpy(g->boot_dir, o->boot_dir, strlen(o->boot_dir) + 1);
	g->o.boot_dir = g->boot_dir;
	g->start_ms = ovl_mono_ms();
	g->stage = G_REGISTER;
	snprintf(g->last, sizeof(g->last), "not registered with a broker");
	*out = g;
	return 0;
}

static void call_done(struct ovl_dpc_call *call, void *arg)
{
	struct gate_call *gc = arg;
	struct node_gate *g = gc->g;

	if (!g) {
		ovl_dpc_call_release(call);
		free(gc);
		return;
	}
	g->gc = NULL;
	if (call->result == 0) {
		const char *st = ovl_wire_status_name(call->resp.status);

		g->answered = true;
		snprintf(g->answer, sizeof(g->answer), "%s", st ? st : "an answer");
	} else {
		snprintf(g->last, sizeof(g->last), "data-plane self-check on %s: %s", g->where,
			 call->err[0] ? call->err : strerror(-call->result));
	}
	ovl_dpc_call_release(call);
	free(gc);
}

/* close the connection; a call still in flight afterwards is orphaned */
static void peer_close(struct node_gate *g)
{
	node_peer_destroy(&g->peer);
	if (g->gc) {
		g->gc->g = NULL;
		g->gc = NULL;
	}
}

static int selfcheck_start(struct node_gate *g, const struct node_gate_env *e, uint64_t now)
{
	struct node_peer_opts po;
	char text[INET6_ADDRSTRLEN], err[256];
	int r;

	if (!e->cert || !e->slice) {
		snprintf(g->last, sizeof(g->last), "data-plane self-check: no certificate or slice address yet");
		return 0;
	}
	if (e->cert_len > sizeof(g->cert))
		return -E2BIG;
	memcpy(g->cert, e->cert, e->cert_len);
	g->cert_len = e->cert_len;
	inet_ntop(AF_INET6, &e->addr, text, sizeof(text));
	snprintf(g->where, sizeof(g->where), "[%s]:%u", text, (unsigned)g->o.data_port);
	memset(&po, 0, sizeof(po));
	po.loop = g->o.loop;
	po.addr.sin6_family = AF_INET6;
	po.addr.sin6_addr = e->addr;
	po.addr.sin6_port = htons(g->o.data_port);
	po.dpc.id = e->id;
	po.dpc.cert = g->cert;
	po.dpc.cert_len = g->cert_len;
	po.dpc.peers = e->peers;
	po.dpc.now = e->now_s;
	po.dpc.slice = NULL; /* a node's certificate names no slices */
	po.dpc.name = "this node (health gate)";
	r = node_peer_new(&g->peer, &po, err, sizeof(err));
	if (r < 0) {
		snprintf(g->last, sizeof(g->last), "data-plane self-check on %s: %s", g->where, err);
		return 0;
	}
	g->gc = calloc(1, sizeof(*g->gc));
	if (!g->gc) {
		node_peer_destroy(&g->peer);
		return -ENOMEM;
	}
	ovl_dpc_call_init(&g->gc->call);
	g->gc->g = g;
	g->gc->call.req.type = OVL_WIRE_T_STAT;
	snprintf(g->gc->call.req.slice, sizeof(g->gc->call.req.slice), "%s", e->slice);
	g->gc->call.req.epoch = e->epoch;
	memcpy(g->gc->call.req.key, PROBE_KEY, sizeof(PROBE_KEY));
	g->gc->call.req.key_len = sizeof(PROBE_KEY);
	g->gc->call.done = call_done;
	g->gc->call.done_arg = g->gc;
	r = node_peer_call(g->peer, &g->gc->call, err, sizeof(err));
	if (r < 0) {
		snprintf(g->last, sizeof(g->last), "data-plane self-check on %s: %s", g->where, err);
		free(g->gc);
		g->gc = NULL;
		node_peer_destroy(&g->peer);
		return 0;
	}
	g->call_start_ms = now;
	return 0;
}

int node_gate_step(struct node_gate *g, const struct node_gate_env *e, uint64_t now_ms,
		   char *msg, size_t msglen)
{
	int r;

	if (g->stage == G_DONE)
		return NODE_GATE_PASSED;
	if (g->stage == G_REGISTER) {
		if (e->registered) {
			g->stage = G_SCRUB;
			snprintf(g->last, sizeof(g->last), "sample scrub not finished");
		}
	}
	if (g->stage == G_SCRUB && e->store && node_store_idle(e->store)) {
		struct node_store_scrub_report rep;

		memset(&rep, 0, sizeof(rep));
		r = node_store_scrub(e->store, NODE_GATE_SCRUB_STEP_BYTES, &rep);
		if (r < 0 && r != -EBUSY) {
			snprintf(msg, msglen, "health gate failed: the sample scrub cannot read the store: %s",
				 strerror(-r));
			return -EIO;
		}
		if (r == 0) {
			g->scrub_records += rep.records;
			g->scrub_errors += rep.errors;
			if (g->scrub_errors) {
				snprintf(msg, msglen, "health gate failed: the sample scrub found %" PRIu64
					 " damaged record(s) in %" PRIu64, g->scrub_errors, g->scrub_records);
				return -EIO;
			}
			if (g->scrub_records >= NODE_GATE_SCRUB_RECORDS || rep.wrapped) {
				g->stage = G_SELFCHECK;
				snprintf(g->last, sizeof(g->last), "data-plane self-check not answered");
			}
		}
	}
	if (g->stage == G_SELFCHECK) {
		if (g->answered) {
			peer_close(g);
			r = boot_state_mark_good(g->boot_dir, g->o.slot);
			if (r < 0) {
				snprintf(msg, msglen, "health gate failed: cannot mark slot %c good in '%.300s': %s",
					 g->o.slot, g->boot_dir, strerror(-r));
				return r;
			}
			g->stage = G_DONE;
			snprintf(msg, msglen, "health gate passed (slot %c, version %s: registered, sample scrub of %"
				 PRIu64 " record(s) clean, self-check STAT on %s answered %s) in %" PRIu64 " ms",
				 g->o.slot, node_running_version(), g->scrub_records, g->where, g->answer,
				 now_ms - g->start_ms);
			return NODE_GATE_PASSED;
		}
		if (g->gc && now_ms - g->call_start_ms >= NODE_GATE_CALL_MS) {
			snprintf(g->last, sizeof(g->last), "data-plane self-check on %s: no answer within %d ms",
				 g->where, NODE_GATE_CALL_MS);
			peer_close(g);
			g->next_try_ms = now_ms + NODE_GATE_RETRY_MS;
		}
		if (!g->gc && g->peer) {
			/* the call failed: a new connection after a pause */
			peer_close(g);
			g->next_try_ms = now_ms + NODE_GATE_RETRY_MS;
		}
		if (!g->gc && !g->peer && now_ms >= g->next_try_ms) {
			r = selfcheck_start(g, e, now_ms);
			if (r < 0) {
				snprintf(msg, msglen, "health gate failed: %s", strerror(-r));
				return r;
			}
			if (!g->peer)
				g->next_try_ms = now_ms + NODE_GATE_RETRY_MS;
		}
	}
	if (now_ms - g->start_ms >= g->o.deadline_ms) {
		snprintf(msg, msglen, "health gate failed: not passed within %" PRIu64 " ms (%s)",
			 g->o.deadline_ms, g->last);
		return -ETIMEDOUT;
	}
	return NODE_GATE_PENDING;
}

void node_gate_destroy(struct node_gate **gp)
{
	struct node_gate *g = gp ? *gp : NULL;

	if (!g)
		return;
	peer_close(g);
	free(g);
	*gp = NULL;
}

const char *node_running_version(void)
{
	const char *v = getenv("SHELF_SLOT_VERSION");

	if (v && boot_version_valid(v))
		return v;
	return ovl_fleet_build_version();
}
