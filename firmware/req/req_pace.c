/*
 * Pacing and progress of background work (req.h, "Background work"): the
 * token bucket and duty cycle every hand-off goes through, client first,
 * the cap on inbound repair streams, the pause on a full drive, the
 * repair_* counters, and the events the daemon logs.
 */
#include "req_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void req_pace_init(struct node_req *rq, const struct node_req_opts *o)
{
	struct req_pace *p = &rq->pace;

	memset(p, 0, sizeof(*p));
	p->rate_limit = o->repair_rate < 0 ? 0 : o->repair_rate ? (uint64_t)o->repair_rate
								 : NODE_REQ_REPAIR_RATE_DEFAULT;
	p->duty = o->repair_duty && o->repair_duty <= 100 ? o->repair_duty : NODE_REQ_REPAIR_DUTY_DEFAULT;
	p->inbound_max = o->repair_inbound_max ? o->repair_inbound_max
					       : NODE_REQ_REPAIR_INBOUND_MAX_DEFAULT;
	req_bucket_init(&p->bucket, p->rate_limit, ovl_mono_ms());
}

void req_event(struct node_req *rq, int level, const char *fmt, ...)
{
	struct req_pace *p = &rq->pace;
	unsigned i;
	va_list ap;

	if (p->ev_n == REQ_EVENTS_MAX) {
		/* the oldest goes: the daemon drains them every tick */
		p->ev_head = (p->ev_head + 1) % REQ_EVENTS_MAX;
		p->ev_n--;
		p->ev_dropped++;
	}
	i = (p->ev_head + p->ev_n++) % REQ_EVENTS_MAX;
	p->ev[i].level = level;
	va_start(ap, fmt);
	vsnprintf(p->ev[i].text, sizeof(p->ev[i].text), fmt, ap);
	va_end(ap);
}

bool node_req_event_next(struct node_req *rq, int *level, char *buf, size_t len)
{
	struct req_pace *p = &rq->pace;

	if (!p->ev_n)
		return false;
	*level = p->ev[p->ev_head].level;
	snprintf(buf, len, "%s", p->ev[p->ev_head].text);
	p->ev_head = (p->ev_head + 1) % REQ_EVENTS_MAX;
	p->ev_n--;
	return true;
}

int node_req_repair_set(struct node_req *rq, int64_t rate_bps, int duty_pct)
{
	struct req_pace *p = &rq->pace;

	if ((rate_bps < -1 || (rate_bps > 0 && rate_bps < NODE_REQ_REPAIR_RATE_MIN)) ||
	    (duty_pct != -1 && (duty_pct < 1 || duty_pct > 100))) {
		snprintf(rq->msgbuf, sizeof(rq->msgbuf),
			 "a repair rate is 0 (unlimited) or at least %u bytes/s, a duty 1..100 %%",
			 NODE_REQ_REPAIR_RATE_MIN);
		rq->msg = rq->msgbuf;
		return -EINVAL;
	}
	if (rate_bps >= 0 && (uint64_t)rate_bps != p->rate_limit) {
		p->rate_limit = (uint64_t)rate_bps;
		req_bucket_set_rate(&p->bucket, p->rate_limit, ovl_mono_ms());
		req_event(rq, NODE_REQ_EV_INFO, "repair: rate limit now %s%" PRIu64 " bytes/s",
			  p->rate_limit ? "" : "unlimited (", p->rate_limit);
	}
	if (duty_pct >= 0 && (unsigned)duty_pct != p->duty) {
		p->duty = (unsigned)duty_pct;
		req_event(rq, NODE_REQ_EV_INFO, "repair: duty cycle now %u %% of each second", p->duty);
	}
	return 0;
}

bool node_req_repair_admit(struct node_req *rq)
{
	struct req_pace *p = &rq->pace;

	if (p->paused == NODE_REQ_PAUSED_DRIVE_FULL || p->inbound >= p->inbound_max) {
		p->inbound_refused++;
		return false;
	}
	p->inbound++;
	return true;
}

void node_req_repair_release(struct node_req *rq)
{
	if (rq->pace.inbound)
		rq->pace.inbound--;
}

bool req_pace_may_start(struct node_req *rq, unsigned running, uint64_t now_ms)
{
	struct req_pace *p = &rq->pace;

	if (!req_duty_open(p->duty, now_ms))
		return false;
	if (p->fg < REQ_PACE_CLIENT_BUSY) {
		p->busy_since_ms = 0;
		return true;
	}
	if (!p->busy_since_ms)
		p->busy_since_ms = now_ms ? now_ms : 1;
	return running == 0 && now_ms >= p->busy_since_ms + REQ_PACE_STARVE_MS;
}

uint64_t req_pace_take(struct node_req *rq, uint64_t want, uint64_t now_ms)
{
	struct req_pace *p = &rq->pace;

	if (!req_duty_open(p->duty, now_ms))
		return 0;
	return req_bucket_take(&p->bucket, want, now_ms);
}

void req_pace_repair_bytes(struct node_req *rq, uint64_t bytes, uint64_t now_ms)
{
	req_rate_add(&rq->pace.repair_avg, bytes, now_ms);
}

void req_pace_repair_begin(struct node_req *rq, uint64_t now_ms)
{
	req_rate_begin(&rq->pace.repair_avg, now_ms);
}

void req_pace_repair_done(struct node_req *rq, uint64_t bytes, uint64_t now_ms)
{
	rq->pace.repair_objects_done++;
	rq->pace.repair_bytes_done += bytes;
	/* the achieved rate counts delivered copies from when the work began:
	 * counted as handed to the forward, a repair's first pieces filled
	 * the send buffers at once and read as a rate several times the real
	 * one (the ETA at 10 % done was a third of the time left) */
	req_pace_repair_bytes(rq, bytes, now_ms);
}

void req_pace_target_full(struct node_req *rq, const uint8_t id[OVL_ID_BYTES], bool full)
{
	struct req_pace *p = &rq->pace;
	char hex[2 * OVL_ID_BYTES + 1];

	ovl_hex_encode(id, 8, hex);
	if (full && p->paused == NODE_REQ_PAUSED_NONE) {
		p->paused = NODE_REQ_PAUSED_TARGET_FULL;
		memcpy(p->paused_target, id, OVL_ID_BYTES);
		req_event(rq, NODE_REQ_EV_WARN,
			  "repair: paused: node %.16s answers that its drive is full; trying it again every %u s",
			  hex, REQ_PACE_FULL_PROBE_MS / 1000);
	} else if (!full && p->paused == NODE_REQ_PAUSED_TARGET_FULL &&
		   memcmp(p->paused_target, id, OVL_ID_BYTES) == 0) {
		p->paused = NODE_REQ_PAUSED_NONE;
		req_event(rq, NODE_REQ_EV_INFO, "repair: resumed: node %.16s takes copies again", hex);
	}
}

void req_pace_tick(struct node_req *rq, uint64_t now_ms)
{
	struct req_pace *p = &rq->pace;
	struct node_store_stats st;

	(void)now_ms;
	node_store_stats(rq->o.store, &st);
	if (st.nearly_full && p->paused != NODE_REQ_PAUSED_DRIVE_FULL) {
		p->paused = NODE_REQ_PAUSED_DRIVE_FULL;
		req_event(rq, NODE_REQ_EV_WARN,
			  "repair: paused: this drive is nearly full (%" PRIu64 " of %" PRIu64
			  " usable bytes live): inbound repair copies are refused until space frees",
			  st.live_bytes, st.usable_bytes);
	} else if (!st.nearly_full && p->paused == NODE_REQ_PAUSED_DRIVE_FULL) {
		p->paused = NODE_REQ_PAUSED_NONE;
		req_event(rq, NODE_REQ_EV_INFO, "repair: resumed: this drive has space again");
	}
}

unsigned req_pace_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max)
{
	const struct req_pace *p = &rq->pace;
	uint64_t now = ovl_mono_ms(), left = 0, bytes = 0, failed = 0, po = 0, pb = 0;
	uint64_t bps = req_rate_bps(&p->repair_avg, now), eta;
	unsigned n = 0;

	req_hints_repair_left(rq, &left, &bytes, &failed);
	/* and the copies the running pass counted from a map change but has
	 * not queued yet: the ETA holds the whole job from its start */
	req_heal_plan_left(rq, &po, &pb);
	eta = req_eta_s(bytes + pb, bps);
	{
		const struct {
			const char *name;
			uint64_t v;
			bool show;
		} t[] = {
			{ "repair_objects_left", left, true },
			{ "repair_bytes_left", bytes, true },
			{ "repair_objects_done", p->repair_objects_done, true },
			{ "repair_bytes_done", p->repair_bytes_done, true },
			{ "repair_failed", failed, true },
			{ "repair_rate_bps", bps, true },
			{ "repair_eta_s", eta, eta != UINT64_MAX },
			{ "repair_rate_limit", p->rate_limit, true },
			{ "repair_duty", p->duty, true },
			{ "repair_paused", p->paused != NODE_REQ_PAUSED_NONE, true },
			{ "repair_paused_reason", (uint64_t)p->paused, true },
			{ "repair_inbound", p->inbound, true },
			{ "repair_objects_planned", po, true },
			{ "repair_bytes_planned", pb, true },
		};

		for (size_t i = 0; n < max && i < sizeof(t) / sizeof(t[0]); i++) {
			if (!t[i].show)
				continue;
			snprintf(c[n].name, sizeof(c[n].name), "%s", t[i].name);
			c[n].value = t[i].v;
			n++;
		}
	}
	return n;
}
