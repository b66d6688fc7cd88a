/* libshelf's connections to nodes: the data plane through ovl_dpc's
 * blocking driver, one request at a time per connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shelf_int.h"

static void conn_close(struct sh_conn *c)
{
	ovl_dpc_conn_close(&c->cn);
}

void sh_conns_close(struct shelf *s)
{
	for (unsigned i = 0; i < s->nconns; i++)
		conn_close(&s->conns[i]);
}

int sh_conn_get(struct shelf *s, const uint8_t addr[16], uint16_t port, const char *slice,
		struct sh_conn **out, char *err, size_t errlen)
{
	return sh_conn_get_within(s, addr, port, slice, sh_left_ms(s), out, err, errlen);
}

int sh_conn_get_within(struct shelf *s, const uint8_t addr[16], uint16_t port, const char *slice,
		       int budget_ms, struct sh_conn **out, char *err, size_t errlen)
{
	uint64_t end;
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct ovl_dpc_cfg cfg = { 0 };
	char text[INET6_ADDRSTRLEN], name[INET6_ADDRSTRLEN + 8], e2[OVL_DPC_ERR_BYTES] = "";
	struct sh_conn *c = NULL;
	int ret, budget;

	for (unsigned i = 0; i < s->nconns; i++)
		if (s->conns[i].cn && s->conns[i].port == port &&
		    memcmp(&s->conns[i].addr, addr, 16) == 0) {
			*out = &s->conns[i];
			return 0;
		}
	for (unsigned i = 0; i < s->nconns && !c; i++)
		if (!s->conns[i].cn)
			c = &s->conns[i];
	if (!c && s->nconns < SHELF_CONNS_MAX)
		c = &s->conns[s->nconns++];
	if (!c) {
		c = &s->conns[0];
		conn_close(c);
	}
	memset(c, 0, sizeof(*c));
	memcpy(&c->addr, addr, 16);
	c->port = port;
	sa.sin6_addr = c->addr;
	inet_ntop(AF_INET6, addr, text, sizeof(text));
	snprintf(name, sizeof(name), "node %s", text);
	cfg.id = s->id;
	cfg.cert = s->cert;
	cfg.cert_len = s->cert_len;
	cfg.peers = s->peers;
	cfg.now = (uint64_t)time(NULL);
	cfg.slice = slice;
	cfg.name = name;
	budget = sh_left_ms(s);
	if (budget_ms > 0 && budget_ms < budget)
		budget = budget_ms;
	/* connect and handshake together within the budget */
	end = ovl_mono_ms() + (uint64_t)budget;
	ret = ovl_dpc_conn_open(&c->cn, &sa, &cfg, budget, e2, sizeof(e2));
	if (ret == -ETIMEDOUT)
		return sh_fail(err, errlen, -EHOSTUNREACH, "node %s port %u: did not accept a "
			       "connection within %d ms", text, port, budget);
	if (ret < 0)
		return sh_fail(err, errlen, -EHOSTUNREACH, "node %s port %u: %s", text, port, e2);
	ret = ovl_dpc_conn_handshake(c->cn, ovl_mono_ms() >= end ? 1 : (int)(end - ovl_mono_ms()),
				     e2, sizeof(e2));
	if (ret < 0) {
		conn_close(c);
		if (ret == -ETIMEDOUT)
			return sh_fail(err, errlen, -EHOSTUNREACH, "node %s did not answer within %d ms",
				       text, budget);
		/* the node hung up, or the connection broke: nobody to ask */
		if (ret == -ECONNRESET || ret == -EPIPE)
			return sh_fail(err, errlen, -EHOSTUNREACH, "handshake with node %s: %s", text,
				       e2[0] ? e2 : strerror(-ret));
		return sh_fail(err, errlen, ret == -ECONNREFUSED ? -EACCES : ret,
			       "handshake with node %s: %s", text, e2[0] ? e2 : strerror(-ret));
	}
	*out = c;
	return 0;
}

int sh_call(struct shelf *s, struct sh_conn *c, uint8_t type, struct ovl_wire_req *q,
	    const void *payload, size_t plen, bool encrypt, struct ovl_wire_resp *r,
	    uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
	struct ovl_dpc_call *call = malloc(sizeof(*call));
	char text[INET6_ADDRSTRLEN];
	int ret, budget = sh_left_ms(s);

	if (!call)
		return -ENOMEM;
	ovl_dpc_call_init(call);
	inet_ntop(AF_INET6, &c->addr, text, sizeof(text));
	q->type = type;
	call->req = *q;
	call->payload = payload;
	call->payload_len = plen;
	call->encrypt = encrypt;
	call->progress = s->progress;
	call->progress_arg = s->progress_arg;
	ret = ovl_dpc_conn_call(c->cn, call, budget);
	if (ret < 0 && !call->complete) {
		/* not started: a request that cannot be sealed, or no memory */
		if (ret == -EINVAL)
			sh_fail(err, errlen, -EINVAL, "%s", call->err);
		goto out;
	}
	if (ret < 0) {
		conn_close(c);
		if (ret == -ETIMEDOUT)
			ret = sh_fail(err, errlen, -EHOSTUNREACH, "node %s did not answer within %d ms",
				      text, budget);
		else
			ret = sh_fail(err, errlen, -EHOSTUNREACH, "node %s: %s", text,
				      call->err[0] ? call->err : strerror(-ret));
		goto out;
	}
	if (call->result < 0) {
		conn_close(c);
		ret = call->result == -ENOMEM ? -ENOMEM
					      : sh_fail(err, errlen, call->result, "%s", call->err);
		goto out;
	}
	*r = call->resp;
	if (out) {
		*outlen = (size_t)call->body_len;
		*out = call->body ? ovl_dpc_call_take_body(call) : NULL;
		if (call->body_len && !*out)
			ret = -ENOMEM;
	}
out:
	ovl_dpc_call_release(call);
	free(call);
	return ret;
}
