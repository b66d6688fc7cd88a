/*
 * ovl_wire: data-plane frames, metas, the handshake and session crypto.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "overlay.h"

#define BUF_BYTES (OVL_WIRE_HEAD_MAX_BYTES + 64)

struct fx {
	struct ovl_id *ca, *broker, *node, *client, *other_ca, *other_broker, *stranger;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], node_cert[OVL_CERT_MAX_BYTES];
	uint8_t client_cert[OVL_CERT_MAX_BYTES], other_broker_cert[OVL_CERT_MAX_BYTES];
	uint8_t foreign_cert[OVL_CERT_MAX_BYTES], expired_cert[OVL_CERT_MAX_BYTES];
	int broker_len, node_len, client_len, other_broker_len, foreign_len, expired_len;
	ovl_keyring_t *kr_server, *kr_client;
	struct ovl_peers *peers_server, *peers_client;
	uint64_t now;
	struct ovl_wire_session cs, ss; /* client and server sessions after handshake() */
};

static int sign_cert(const struct ovl_id *subject, enum ovl_role role, uint64_t serial,
		     uint64_t nb, uint64_t na, const struct ovl_id *issuer, const char *slice,
		     uint8_t *out)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subject);
	c.serial = serial;
	c.role = role;
	c.not_before = nb;
	c.not_after = na;
	if (slice)
		assert_int_equal(ovl_cert_add_slice(&c, slice, err, sizeof(err)), 0);
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	f->now = (uint64_t)time(NULL);
	ovl_id_generate(&f->ca);
	ovl_id_generate(&f->broker);
	ovl_id_generate(&f->node);
	ovl_id_generate(&f->client);
	ovl_id_generate(&f->other_ca);
	ovl_id_generate(&f->other_broker);
	ovl_id_generate(&f->stranger);
	f->broker_len = sign_cert(f->broker, OVL_ROLE_BROKER, 1, f->now - 60, f->now + 3600, f->ca,
				  NULL, f->broker_cert);
	f->node_len = sign_cert(f->node, OVL_ROLE_NODE, 10, f->now - 60, f->now + 3600, f->broker,
				"hot", f->node_cert);
	f->client_len = sign_cert(f->client, OVL_ROLE_CLIENT, 11, f->now - 60, f->now + 3600,
				  f->broker, "hot", f->client_cert);
	f->expired_len = sign_cert(f->client, OVL_ROLE_CLIENT, 12, f->now - 7200, f->now - 3600,
				   f->broker, "hot", f->expired_cert);
	f->other_broker_len = sign_cert(f->other_broker, OVL_ROLE_BROKER, 1, f->now - 60,
					f->now + 3600, f->other_ca, NULL, f->other_broker_cert);
	f->foreign_len = sign_cert(f->stranger, OVL_ROLE_CLIENT, 13, f->now - 60, f->now + 3600,
				   f->other_broker, "hot", f->foreign_cert);
	f->kr_server = ovl_keyring_new();
	f->kr_client = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers_server, f->ca->sign_pk, f->kr_server), 0);
	assert_int_equal(ovl_peers_new(&f->peers_client, f->ca->sign_pk, f->kr_client), 0);
	if (ovl_peers_add_broker(f->peers_server, f->broker_cert, f->broker_len, f->now, err,
				 sizeof(err)) < 0 ||
	    ovl_peers_add_broker(f->peers_client, f->broker_cert, f->broker_len, f->now, err,
				 sizeof(err)) < 0)
		fail_msg("add broker: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ovl_peers_destroy(&f->peers_server);
	ovl_peers_destroy(&f->peers_client);
	ovl_keyring_destroy(&f->kr_server);
	ovl_keyring_destroy(&f->kr_client);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->node);
	ovl_id_destroy(&f->client);
	ovl_id_destroy(&f->other_ca);
	ovl_id_destroy(&f->other_broker);
	ovl_id_destroy(&f->stranger);
	ovl_wire_session_clear(&f->cs);
	ovl_wire_session_clear(&f->ss);
	free(f);
	return 0;
}

/* ---- the handshake, driven in memory ------------------------------------- */

struct hs_opts {
	const struct ovl_id *client_id;  /* default f->client */
	const uint8_t *client_cert;      /* default f->client_cert */
	int client_len;
	const struct ovl_id *server_id;  /* default f->node */
	const char *slice;               /* default "hot" */
	uint32_t ver_major;
	bool tamper_proof;
};

struct hs_result {
	int server_ret, client_ret;
	uint32_t status;       /* from an ERROR frame */
	char server_err[256], client_err[256];
};

static void run_hs(struct fx *f, const struct hs_opts *o, struct hs_result *r)
{
	struct ovl_wire_hs_cfg cc = { 0 }, sc = { 0 };
	struct ovl_wire_hs *c = NULL, *s = NULL;
	uint8_t *hello = malloc(BUF_BYTES), *reply = malloc(BUF_BYTES);
	struct ovl_wire_hdr h;
	size_t need = 1, outlen = 0;
	char err[256];
	int n;

	memset(r, 0, sizeof(*r));
	cc.id = o->client_id ? o->client_id : f->client;
	cc.cert = o->client_cert ? o->client_cert : f->client_cert;
	cc.cert_len = o->client_cert ? (size_t)o->client_len : (size_t)f->client_len;
	cc.peers = f->peers_client;
	cc.now = f->now;
	cc.slice = o->slice ? o->slice : "hot";
	cc.ver_major = o->ver_major;
	sc.id = o->server_id ? o->server_id : f->node;
	sc.cert = f->node_cert;
	sc.cert_len = (size_t)f->node_len;
	sc.peers = f->peers_server;
	sc.now = f->now;
	assert_int_equal(ovl_wire_client_new(&c, &cc, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_server_new(&s, &sc, err, sizeof(err)), 0);
	n = ovl_wire_client_hello(c, hello, BUF_BYTES, err, sizeof(err));
	assert_true(n > 0);
	/* the server learns the frame's length from its header, as it would on a socket */
	assert_int_equal(ovl_wire_head_need(hello, (size_t)n, false, &h, &need, err, sizeof(err)), 0);
	assert_int_equal(need, 0);
	assert_int_equal(h.type, OVL_WIRE_T_HELLO);
	r->server_ret = ovl_wire_server_hello(s, hello, (size_t)n, reply, BUF_BYTES, &outlen,
					      r->server_err, sizeof(r->server_err));
	assert_true(outlen > OVL_WIRE_HDR_BYTES);
	if (o->tamper_proof)
		reply[outlen - 1] ^= 0x01; /* the proof is the last field */
	r->client_ret = ovl_wire_client_finish(c, reply, outlen, &r->status, r->client_err,
					       sizeof(r->client_err));
	if (r->server_ret == 0)
		assert_int_equal(ovl_wire_hs_session(s, &f->ss), 0);
	if (r->client_ret == 0)
		assert_int_equal(ovl_wire_hs_session(c, &f->cs), 0);
	ovl_wire_hs_destroy(&c);
	ovl_wire_hs_destroy(&s);
	assert_null(c);
	free(hello);
	free(reply);
}

static void handshake_ok(struct fx *f)
{
	struct hs_opts o = { 0 };
	struct hs_result r;

	run_hs(f, &o, &r);
	if (r.server_ret || r.client_ret)
		fail_msg("handshake: server %d '%s', client %d '%s'", r.server_ret, r.server_err,
			 r.client_ret, r.client_err);
}

/* Seal a request head with meta from `req` into buf; returns its length. */
static size_t seal_req(struct ovl_wire_session *s, const struct ovl_wire_req *req, uint64_t payload,
		       uint8_t flags, uint32_t rid, uint8_t *buf)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_hdr h = { .type = req->type, .flags = flags, .payload_len = payload,
				  .rid = rid };
	char err[256];
	int n = ovl_wire_req_encode(req, meta, sizeof(meta), err, sizeof(err)), m;

	if (n < 0)
		fail_msg("encode: %s", err);
	m = ovl_wire_head_seal(s, &h, meta, (size_t)n, buf, BUF_BYTES, err, sizeof(err));
	if (m < 0)
		fail_msg("seal: %s", err);
	return (size_t)m;
}

static void make_put(struct ovl_wire_req *r, const char *key, uint64_t size, uint32_t crc)
{
	memset(r, 0, sizeof(*r));
	r->type = OVL_WIRE_T_PUT;
	snprintf(r->slice, sizeof(r->slice), "hot");
	r->epoch = 7;
	r->key_len = (uint32_t)strlen(key);
	memcpy(r->key, key, r->key_len);
	r->size = size;
	r->crc = crc;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_handshake_and_request(void **state)
{
	struct fx *f = *state;
	uint8_t *buf = malloc(BUF_BYTES), meta[OVL_WIRE_META_MAX_BYTES];
	const uint8_t *m = NULL;
	struct ovl_wire_req req, got;
	struct ovl_wire_resp resp, rgot;
	struct ovl_wire_hdr h = { 0 };
	char err[256];
	size_t len, need;
	int n;

	handshake_ok(f);
	assert_memory_equal(f->cs.peer.node_id, f->node->sign_pk, 32);
	assert_memory_equal(f->ss.peer.node_id, f->client->sign_pk, 32);
	assert_string_equal(f->ss.slice, "hot");
	assert_true(ovl_wire_session_allows(&f->ss, "hot"));
	assert_false(ovl_wire_session_allows(&f->ss, "cold"));
	assert_memory_equal(f->cs.tx_mac, f->ss.rx_mac, 32);
	assert_memory_equal(f->cs.rx_aead, f->ss.tx_aead, 32);
	assert_memory_not_equal(f->cs.tx_mac, f->cs.rx_mac, 32);
	assert_memory_not_equal(f->cs.tx_mac, f->cs.tx_aead, 32);

	for (int i = 0; i < 3; i++) {
		make_put(&req, "ds/shard-0001", 5, 0x12345678);
		len = seal_req(&f->cs, &req, 5, 0, 100 + i, buf);
		assert_int_equal(ovl_wire_head_need(buf, len, true, &h, &need, err, sizeof(err)), 0);
		assert_int_equal(need, 0);
		assert_int_equal(ovl_wire_head_open(&f->ss, buf, len, &h, &m, err, sizeof(err)), 0);
		assert_int_equal(h.seq, i);
		assert_int_equal(h.rid, 100 + i);
		assert_int_equal(h.payload_len, 5);
		assert_int_equal(ovl_wire_req_decode(h.type, m, h.meta_len, &got, err, sizeof(err)), 0);
		assert_int_equal(got.key_len, 13);
		assert_memory_equal(got.key, "ds/shard-0001", 13);
		assert_int_equal(got.crc, 0x12345678);

		memset(&resp, 0, sizeof(resp));
		resp.type = OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE;
		resp.epoch = 7;
		resp.size = 5;
		resp.crc = 0x12345678;
		resp.seq = 99;
		n = ovl_wire_resp_encode(&resp, meta, sizeof(meta), err, sizeof(err));
		assert_true(n > 0);
		h = (struct ovl_wire_hdr){ .type = resp.type, .rid = 100 + i };
		n = ovl_wire_head_seal(&f->ss, &h, meta, (size_t)n, buf, BUF_BYTES, err, sizeof(err));
		assert_true(n > 0);
		assert_int_equal(ovl_wire_head_open(&f->cs, buf, (size_t)n, &h, &m, err, sizeof(err)),
				 0);
		assert_int_equal(ovl_wire_resp_decode(h.type, m, h.meta_len, &rgot, err, sizeof(err)),
				 0);
		assert_int_equal(rgot.seq, 99);
		assert_true(rgot.has_crc);
	}
	free(buf);
}

static void test_handshake_refusals(void **state)
{
	struct fx *f = *state;
	struct hs_opts o;
	struct hs_result r;
	uint8_t *crlbuf = NULL;
	size_t crllen = 0;
	uint64_t serial = 11;
	char err[256];

	/* a client certificate from another site's CA */
	memset(&o, 0, sizeof(o));
	o.client_id = f->stranger;
	o.client_cert = f->foreign_cert;
	o.client_len = f->foreign_len;
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, -ENOKEY);
	assert_int_equal(r.client_ret, -ECONNREFUSED);
	assert_int_equal(r.status, OVL_WIRE_AUTH_FAILED);
	assert_non_null(strstr(r.client_err, "auth-failed"));

	/* expired */
	memset(&o, 0, sizeof(o));
	o.client_cert = f->expired_cert;
	o.client_len = f->expired_len;
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, -EKEYEXPIRED);
	assert_int_equal(r.status, OVL_WIRE_AUTH_FAILED);

	/* a slice the certificate does not list */
	memset(&o, 0, sizeof(o));
	o.slice = "cold";
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, -EACCES);
	assert_int_equal(r.status, OVL_WIRE_WRONG_SLICE);
	assert_non_null(strstr(r.client_err, "cold"));

	/* unknown major version: refused with a clear error, both ends */
	memset(&o, 0, sizeof(o));
	o.ver_major = 2;
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, -EPROTONOSUPPORT);
	assert_int_equal(r.status, OVL_WIRE_VERSION);
	assert_non_null(strstr(r.server_err, "major version 2 is not supported"));

	/* a tampered proof */
	memset(&o, 0, sizeof(o));
	o.tamper_proof = true;
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, 0);
	assert_int_equal(r.client_ret, -EBADE);

	/* a client presenting another's certificate: its keys differ from the
	 * server's, so the proof cannot verify at the client... */
	memset(&o, 0, sizeof(o));
	o.client_id = f->stranger;
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, 0);
	assert_int_equal(r.client_ret, -EBADE);
	/* ...and a server presenting another's certificate is caught the same way */
	memset(&o, 0, sizeof(o));
	o.server_id = f->stranger;
	run_hs(f, &o, &r);
	assert_int_equal(r.client_ret, -EBADE);
	assert_non_null(strstr(r.client_err, "does not hold the key"));

	/* revoked: the broker's list names the client's serial */
	assert_int_equal(ovl_crl_sign(1, &serial, 1, f->broker->sign_sk, &crlbuf, &crllen, err,
				      sizeof(err)), 0);
	assert_true(ovl_peers_update_crl(f->peers_server, crlbuf, crllen, err, sizeof(err)) >= 0);
	free(crlbuf);
	memset(&o, 0, sizeof(o));
	run_hs(f, &o, &r);
	assert_int_equal(r.server_ret, -EKEYREVOKED);
	assert_int_equal(r.status, OVL_WIRE_AUTH_FAILED);
}

/* The client's key is proven by its first MAC'd request: a request MAC'd
 * with any other session's key is refused. */
static void test_wrong_client_key_refused_by_mac(void **state)
{
	struct fx *f = *state;
	struct ovl_wire_session other;
	uint8_t *buf = malloc(BUF_BYTES);
	struct ovl_wire_req req;
	struct ovl_wire_hdr h;
	char err[256];
	size_t len;

	handshake_ok(f);
	other = f->cs;
	handshake_ok(f); /* fresh nonces: new keys */
	make_put(&req, "k", 0, 0);
	len = seal_req(&other, &req, 0, 0, 1, buf);
	assert_int_equal(ovl_wire_head_open(&f->ss, buf, len, &h, NULL, err, sizeof(err)), -EBADE);
	assert_non_null(strstr(err, "MAC"));
	ovl_wire_session_clear(&other);
	free(buf);
}

static void test_mac_tamper_and_sequence(void **state)
{
	struct fx *f = *state;
	uint8_t *a = malloc(BUF_BYTES), *b = malloc(BUF_BYTES), *t = malloc(BUF_BYTES);
	struct ovl_wire_req req;
	struct ovl_wire_hdr h;
	char err[256];
	size_t la, lb;

	handshake_ok(f);
	make_put(&req, "key-a", 3, 1);
	la = seal_req(&f->cs, &req, 3, 0, 1, a);
	make_put(&req, "key-b", 3, 2);
	lb = seal_req(&f->cs, &req, 3, 0, 2, b);

	/* every single bit flip anywhere in the head is refused */
	for (size_t i = 0; i < la; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			int ret;

			memcpy(t, a, la);
			t[i] ^= (uint8_t)(1u << bit);
			ret = ovl_wire_head_open(&f->ss, t, la, &h, NULL, err, sizeof(err));
			assert_true(ret == -EBADE || ret == -EBADMSG || ret == -EMSGSIZE);
		}
	}
	assert_int_equal(f->ss.rx_seq, 0);
	/* out of order: b before a */
	assert_int_equal(ovl_wire_head_open(&f->ss, b, lb, &h, NULL, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "sequence 1"));
	assert_int_equal(ovl_wire_head_open(&f->ss, a, la, &h, NULL, err, sizeof(err)), 0);
	/* replay of a */
	assert_int_equal(ovl_wire_head_open(&f->ss, a, la, &h, NULL, err, sizeof(err)), -EPROTO);
	assert_int_equal(ovl_wire_head_open(&f->ss, b, lb, &h, NULL, err, sizeof(err)), 0);
	/* a frame the server sent, reflected back to it, does not verify */
	{
		uint8_t meta[64];
		struct ovl_wire_hdr rh = { .type = OVL_WIRE_T_DELETE | OVL_WIRE_T_RESPONSE };
		struct ovl_wire_resp resp = { .type = rh.type, .epoch = 1 };
		int n = ovl_wire_resp_encode(&resp, meta, sizeof(meta), err, sizeof(err));

		n = ovl_wire_head_seal(&f->ss, &rh, meta, (size_t)n, t, BUF_BYTES, err, sizeof(err));
		assert_true(n > 0);
		assert_int_equal(ovl_wire_head_open(&f->ss, t, (size_t)n, &h, NULL, err, sizeof(err)),
				 -EBADE);
	}
	free(a);
	free(b);
	free(t);
}

static void test_aead_chunks(void **state)
{
	struct fx *f = *state;
	const size_t plain = 2 * OVL_WIRE_CHUNK_BYTES + 1234;
	uint64_t wire = ovl_wire_sealed_len(plain), back = 0;
	uint8_t *data = malloc(plain), *pay = malloc(wire), *head = malloc(BUF_BYTES);
	uint8_t rxhdr[OVL_WIRE_HDR_BYTES];
	struct ovl_wire_req req;
	struct ovl_wire_hdr h;
	uint32_t crc;
	char err[256];
	size_t off = 0, len, hl;

	handshake_ok(f);
	randombytes_buf(data, plain);
	crc = ovl_crc32c(0, data, plain);
	assert_int_equal(wire, plain + 3 * OVL_WIRE_TAG_BYTES);
	assert_int_equal(ovl_wire_plain_len(wire, &back), 0);
	assert_int_equal(back, plain);
	make_put(&req, "enc", plain, crc);
	hl = seal_req(&f->cs, &req, wire, OVL_WIRE_FLAG_ENCRYPTED, 9, head);
	/* seal chunk by chunk, in place, in the payload buffer */
	for (uint32_t i = 0; off < plain; i++) {
		len = plain - off < OVL_WIRE_CHUNK_BYTES ? plain - off : OVL_WIRE_CHUNK_BYTES;
		memcpy(pay + off + i * OVL_WIRE_TAG_BYTES, data + off, len);
		assert_int_equal(ovl_wire_chunk_seal(&f->cs, head, i,
						     pay + off + i * OVL_WIRE_TAG_BYTES, len), 0);
		off += len;
	}
	assert_memory_not_equal(pay, data, 64);
	assert_int_equal(ovl_wire_head_open(&f->ss, head, hl, &h, NULL, err, sizeof(err)), 0);
	memcpy(rxhdr, head, sizeof(rxhdr));

	/* tamper: ciphertext, tag, a swapped index, a wrong length, a wrong key,
	 * another sequence number (another nonce); each on a fresh copy, since a
	 * failed open wipes the chunk */
	{
		const size_t cl = OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES;
		uint8_t *cp = malloc(2 * cl);

#define TRY(mut, sess, idx, len, code)                                                 \
	do {                                                                           \
		memcpy(cp, pay, 2 * cl);                                               \
		mut;                                                                   \
		assert_int_equal(ovl_wire_chunk_open(sess, rxhdr, idx, cp, len), code); \
		rxhdr[25] = head[25];                                                  \
	} while (0)
		TRY(cp[5] ^= 1, &f->ss, 0, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY(cp[OVL_WIRE_CHUNK_BYTES + 3] ^= 0x80, &f->ss, 0, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY((void)0, &f->ss, 1, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY(memmove(cp, cp + cl, cl), &f->ss, 0, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY((void)0, &f->ss, 0, 100, -EINVAL);
		TRY((void)0, &f->ss, 3, 1, -EINVAL);
		TRY((void)0, &f->cs, 0, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY(rxhdr[25] ^= 1, &f->ss, 0, OVL_WIRE_CHUNK_BYTES, -EBADMSG);
		TRY((void)0, &f->ss, 0, OVL_WIRE_CHUNK_BYTES, 0);
#undef TRY
		free(cp);
	}

	off = 0;
	for (uint32_t i = 0; off < plain; i++) {
		len = plain - off < OVL_WIRE_CHUNK_BYTES ? plain - off : OVL_WIRE_CHUNK_BYTES;
		assert_int_equal(ovl_wire_chunk_open(&f->ss, rxhdr, i,
						     pay + off + i * OVL_WIRE_TAG_BYTES, len), 0);
		assert_memory_equal(pay + off + i * OVL_WIRE_TAG_BYTES, data + off, len);
		off += len;
	}
	free(data);
	free(pay);
	free(head);
}

/* Every status through the one table, both ways, and the codes a client
 * and a node gave before the table was shared. */
static void test_status_table(void **state)
{
	static const struct {
		uint32_t st;
		int to;
	} want[] = {
		{ OVL_WIRE_OK, 0 }, { OVL_WIRE_BAD_REQUEST, -EPROTO }, { OVL_WIRE_AUTH_FAILED, -EACCES },
		{ OVL_WIRE_VERSION, -EPROTO }, { OVL_WIRE_STALE_MAP, -ESTALE },
		{ OVL_WIRE_WRONG_SLICE, -EACCES }, { OVL_WIRE_NOT_FOUND, -ENOENT },
		{ OVL_WIRE_NO_SPACE, -ENOSPC }, { OVL_WIRE_TOO_LARGE, -E2BIG },
		{ OVL_WIRE_CHECKSUM_MISMATCH, -EIO }, { OVL_WIRE_BUSY, -EBUSY },
		{ OVL_WIRE_TIMEOUT, -ETIMEDOUT }, { OVL_WIRE_READ_ONLY, -EROFS },
		{ OVL_WIRE_INTERNAL, -EPROTO },
	};
	static const int round_trip[] = { 0, -ENOENT, -ENOSPC, -E2BIG, -EBUSY, -EROFS, -EIO };

	(void)state;
	assert_int_equal(sizeof(want) / sizeof(want[0]), OVL_WIRE_STATUS_COUNT);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_non_null(ovl_wire_status_name(want[i].st));
		assert_int_equal(ovl_wire_status_to_errno(want[i].st), want[i].to);
	}
	assert_int_equal(ovl_wire_status_to_errno(OVL_WIRE_STATUS_COUNT), -EPROTO);
	assert_int_equal(ovl_wire_status_to_errno(UINT32_MAX), -EPROTO);
	assert_null(ovl_wire_status_name(OVL_WIRE_STATUS_COUNT));
	/* the errnos that mean the same on both sides go there and back */
	for (size_t i = 0; i < sizeof(round_trip) / sizeof(round_trip[0]); i++)
		assert_int_equal(ovl_wire_status_to_errno(ovl_wire_errno_to_status(round_trip[i])),
				 round_trip[i]);
	assert_int_equal(ovl_wire_errno_to_status(-EINVAL), OVL_WIRE_BAD_REQUEST);
	assert_int_equal(ovl_wire_errno_to_status(-EIO), OVL_WIRE_CHECKSUM_MISMATCH);
	assert_int_equal(ovl_wire_errno_to_status(-ENOMEM), OVL_WIRE_INTERNAL);
	assert_int_equal(ovl_wire_errno_to_status(-EACCES), OVL_WIRE_INTERNAL);
	/* every status a node answers for an errno names that errno for a client,
	 * except bad-request, which a client reports as a protocol error */
	for (uint32_t st = 0; st < OVL_WIRE_STATUS_COUNT; st++) {
		for (int e = 0; e < 200; e++) {
			if (ovl_wire_errno_to_status(-e) != st || st == OVL_WIRE_INTERNAL ||
			    st == OVL_WIRE_BAD_REQUEST)
				continue;
			assert_int_equal(ovl_wire_status_to_errno(st), -e);
		}
	}
}

/* A payload sealed in one call (and in place with detached tags), opened
 * in pieces of random sizes, in place and into chunk buffers; tampering
 * anywhere is caught. */
static void test_payload_pieces(void **state)
{
	struct fx *f = *state;
	const char *env = getenv("SEED");
	unsigned seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL);
	const uint64_t sizes[] = { 1, 1000, OVL_WIRE_CHUNK_BYTES, OVL_WIRE_CHUNK_BYTES + 1,
				   3 * OVL_WIRE_CHUNK_BYTES + 4321 };
	uint8_t *head = malloc(BUF_BYTES), rxhdr[OVL_WIRE_HDR_BYTES];
	const size_t piece_cap = OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES;

	print_message("test_payload_pieces: SEED=%u\n", seed);
	srand(seed);
	handshake_ok(f);
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		uint64_t plain = sizes[si], wire = ovl_wire_sealed_len(plain), got = 0;
		uint8_t *data = malloc(plain), *pay = malloc(wire), *det = malloc(plain);
		uint8_t *tags = malloc((size_t)ovl_wire_chunk_count(plain) * OVL_WIRE_TAG_BYTES);
		uint8_t *obj = malloc(plain + OVL_WIRE_TAG_BYTES), *tmp = malloc(wire);
		struct ovl_wire_opener o;
		struct ovl_wire_req req;
		struct ovl_wire_hdr h;
		uint32_t bad = 0;
		char err[256];
		size_t hl, in = 0;

		randombytes_buf(data, plain);
		make_put(&req, "obj", plain, ovl_crc32c(0, data, plain));
		hl = seal_req(&f->cs, &req, wire, OVL_WIRE_FLAG_ENCRYPTED, 5, head);
		assert_int_equal(ovl_wire_payload_seal(&f->cs, head, data, plain, pay), 0);
		/* in place with the tags apart: the same bytes once gathered */
		memcpy(det, data, plain);
		assert_int_equal(ovl_wire_payload_seal_detached(&f->cs, head, det, plain, tags), 0);
		for (uint32_t i = 0, off = 0; off < plain; i++) {
			size_t k = plain - off < OVL_WIRE_CHUNK_BYTES ? plain - off : OVL_WIRE_CHUNK_BYTES;

			assert_memory_equal(pay + off + i * OVL_WIRE_TAG_BYTES, det + off, k);
			assert_memory_equal(pay + off + i * OVL_WIRE_TAG_BYTES + k,
					    tags + i * OVL_WIRE_TAG_BYTES, OVL_WIRE_TAG_BYTES);
			off += (uint32_t)k;
		}
		/* a header that does not describe the payload is refused */
		assert_int_equal(ovl_wire_payload_seal(&f->cs, head, data, plain + 1, tmp), -EINVAL);
		assert_int_equal(ovl_wire_head_open(&f->ss, head, hl, &h, NULL, err, sizeof(err)), 0);
		memcpy(rxhdr, head, sizeof(rxhdr));

		/* random pieces, received straight into the object buffer */
		assert_int_equal(ovl_wire_opener_init(&o, &f->ss, rxhdr), 0);
		while (!ovl_wire_opener_done(&o)) {
			size_t len = 1 + (size_t)rand() % (OVL_WIRE_CHUNK_BYTES / 3), n = 0;
			ssize_t k;

			if (len > wire - in)
				len = wire - in;
			k = ovl_wire_opener_feed(&o, obj + got, pay + in, len, &n);
			assert_true(k > 0 && (size_t)k <= len);
			in += (size_t)k;
			got += n;
		}
		assert_int_equal(in, wire);
		assert_int_equal(got, plain);
		assert_memory_equal(obj, data, plain);

		/* the whole payload in place */
		memcpy(tmp, pay, wire);
		assert_int_equal(ovl_wire_payload_open(&f->ss, rxhdr, tmp, wire, &got, &bad), 0);
		assert_int_equal(got, plain);
		assert_memory_equal(tmp, data, plain);

		/* one byte flipped anywhere: the chunk that holds it fails, by piece
		 * and in place, and no plaintext of it is given back */
		for (int t = 0; t < 8; t++) {
			size_t at = (size_t)rand() % wire, piece_fill = 0;
			uint32_t chunk = (uint32_t)(at / piece_cap);
			uint8_t *pc = malloc(piece_cap);
			ssize_t k = 0;

			memcpy(tmp, pay, wire);
			tmp[at] ^= (uint8_t)(1u << (rand() % 8));
			in = 0;
			assert_int_equal(ovl_wire_opener_init(&o, &f->ss, rxhdr), 0);
			while (!ovl_wire_opener_done(&o)) {
				size_t len = 1 + (size_t)rand() % 5000, n = 0;

				if (len > wire - in)
					len = wire - in;
				k = ovl_wire_opener_feed(&o, pc, tmp + in, len, &n);
				if (k < 0)
					break;
				in += (size_t)k;
				piece_fill = n ? 0 : piece_fill + (size_t)k;
			}
			(void)piece_fill;
			assert_int_equal(k, -EBADMSG);
			assert_int_equal(o.idx, chunk);
			memcpy(tmp, pay, wire);
			tmp[at] ^= 0x01;
			assert_int_equal(ovl_wire_payload_open(&f->ss, rxhdr, tmp, wire, &got, &bad),
					 -EBADMSG);
			assert_int_equal(bad, chunk);
			free(pc);
		}
		/* the client's own key cannot open what it sent */
		memcpy(tmp, pay, wire);
		assert_int_equal(ovl_wire_payload_open(&f->cs, rxhdr, tmp, wire, &got, &bad), -EBADMSG);
		assert_int_equal(bad, 0);
		free(data);
		free(pay);
		free(det);
		free(tags);
		free(obj);
		free(tmp);
	}
	/* a plaintext payload is given back as it arrives */
	{
		struct ovl_wire_req req;
		struct ovl_wire_opener o;
		uint8_t pay[3000], obj[3000];
		size_t in = 0, got = 0, n;
		uint64_t plain = 0;

		randombytes_buf(pay, sizeof(pay));
		make_put(&req, "obj", sizeof(pay), ovl_crc32c(0, pay, sizeof(pay)));
		seal_req(&f->cs, &req, sizeof(pay), 0, 6, head);
		assert_int_equal(ovl_wire_opener_init(&o, &f->ss, head), 0);
		assert_int_equal(ovl_wire_opener_want(&o), sizeof(pay));
		while (!ovl_wire_opener_done(&o)) {
			ssize_t k = ovl_wire_opener_feed(&o, obj + got, pay + in, 1 + (size_t)rand() % 700, &n);

			assert_true(k > 0);
			assert_int_equal((size_t)k, n);
			in += (size_t)k;
			got += n;
		}
		assert_int_equal(got, sizeof(pay));
		assert_memory_equal(obj, pay, sizeof(pay));
		assert_int_equal(ovl_wire_payload_open(&f->ss, head, pay, sizeof(pay), &plain, NULL), 0);
		assert_int_equal(plain, sizeof(pay));
	}
	free(head);
}

static void test_header_rules(void **state)
{
	uint8_t b[OVL_WIRE_HDR_BYTES];
	struct ovl_wire_hdr h = { .type = OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE, .flags = 1,
				  .meta_len = 40, .payload_len = ovl_wire_sealed_len(100000),
				  .seq = 0x0102030405060708ull, .rid = 0xa1b2c3d4 }, g;
	char err[256];
	size_t need;

	(void)state;
	assert_int_equal(ovl_wire_hdr_pack(&h, b, err, sizeof(err)), 0);
	assert_memory_equal(b, "SHD1\x92\x01\x00\x00\x00\x00\x00\x28", 12);
	assert_int_equal(ovl_wire_hdr_parse(&g, b, err, sizeof(err)), 0);
	assert_true(g.type == h.type && g.flags == h.flags && g.meta_len == h.meta_len &&
		    g.payload_len == h.payload_len && g.seq == h.seq && g.rid == h.rid);

#define REFUSE(mut, code, text)                                                         \
	do {                                                                            \
		uint8_t c[OVL_WIRE_HDR_BYTES];                                          \
		memcpy(c, b, sizeof(c));                                                \
		mut;                                                                    \
		assert_int_equal(ovl_wire_hdr_parse(&g, c, err, sizeof(err)), code);    \
		assert_non_null(strstr(err, text));                                     \
	} while (0)
	REFUSE(c[0] = 'X', -EBADMSG, "magic");
	REFUSE(c[4] = 0x42, -EBADMSG, "unknown type");
	REFUSE(c[5] = 0x03, -EBADMSG, "flags");
	REFUSE(c[7] = 1, -EBADMSG, "reserved");
	REFUSE(c[10] = 0x40; c[11] = 1, -EMSGSIZE, "meta length 16385");
	REFUSE(c[8] = 0xff, -EMSGSIZE, "over the cap");
	REFUSE(c[12] = 0xff, -EMSGSIZE, "payload length");
	REFUSE(memset(c + 12, 0, 8); c[17] = 0x01; c[19] = 0x15, -EBADMSG, "not a run of encrypted chunks");
	REFUSE(c[4] = OVL_WIRE_T_GET, -EBADMSG, "carries no payload");
	REFUSE(c[4] = OVL_WIRE_T_HELLO; memset(c + 12, 0, 8); c[5] = 0, -EBADMSG, "must be 0");
	REFUSE(memset(c + 8, 0, 4), -EBADMSG, "meta length is 0");
	REFUSE(c[4] = OVL_WIRE_T_MAP, -EBADMSG, "carries no payload");
	REFUSE(c[4] = OVL_WIRE_T_HEAL + 1, -EBADMSG, "unknown type");
#undef REFUSE
	/* a MAP response carries the map as its payload */
	{
		struct ovl_wire_hdr m = { .type = OVL_WIRE_T_MAP | OVL_WIRE_T_RESPONSE, .meta_len = 30,
					  .payload_len = 5000, .seq = 1, .rid = 2 };

		assert_int_equal(ovl_wire_hdr_pack(&m, b, err, sizeof(err)), 0);
		assert_int_equal(b[4], 0x97);
		assert_string_equal(ovl_wire_type_name(0x17), "map");
		assert_string_equal(ovl_wire_type_name(0x97), "map-response");
	}
	/* unencrypted: 64 MiB is fine, one more byte is not */
	h.flags = 0;
	h.payload_len = OVL_WIRE_OBJECT_MAX_BYTES;
	assert_int_equal(ovl_wire_hdr_pack(&h, b, err, sizeof(err)), 0);
	h.payload_len++;
	assert_int_equal(ovl_wire_hdr_pack(&h, b, err, sizeof(err)), -EINVAL);
	{
		/* oversized lengths are refused from the header alone, before the
		 * caller allocates or reads on */
		uint8_t *p = malloc(OVL_WIRE_HDR_BYTES);

		memcpy(p, b, OVL_WIRE_HDR_BYTES);
		p[5] = 0;
		p[12] = 0x10; /* 2^60 bytes */
		assert_int_equal(ovl_wire_head_need(p, OVL_WIRE_HDR_BYTES, true, &g, &need, err,
						    sizeof(err)), -EMSGSIZE);
		free(p);
	}
	assert_int_equal(ovl_wire_plain_len(OVL_WIRE_CHUNK_BYTES + 16 + 16, &h.payload_len),
			 -EBADMSG);
	assert_int_equal(ovl_wire_plain_len(0, &h.payload_len), 0);
}

/* Every prefix of every frame: the parser asks for exactly the rest and never
 * reads past the bytes it was given (each prefix sits in its own allocation,
 * so ASan sees any overread). */
static void check_prefixes(const uint8_t *frame, size_t len, bool authed)
{
	struct ovl_wire_hdr h;
	char err[256];
	size_t need;

	for (size_t l = 0; l <= len; l++) {
		uint8_t *p = malloc(l ? l : 1);

		memcpy(p, frame, l);
		assert_int_equal(ovl_wire_head_need(p, l, authed, &h, &need, err, sizeof(err)), 0);
		if (l < OVL_WIRE_HDR_BYTES)
			assert_int_equal(need, OVL_WIRE_HDR_BYTES - l);
		else
			assert_int_equal(need, len - l);
		free(p);
	}
}

static void test_truncations(void **state)
{
	struct fx *f = *state;
	struct ovl_wire_hs_cfg cc = { 0 }, sc = { 0 };
	struct ovl_wire_hs *c = NULL, *s = NULL;
	uint8_t *hello = malloc(BUF_BYTES), *reply = malloc(BUF_BYTES), *req = malloc(BUF_BYTES);
	struct ovl_wire_req r;
	size_t outlen = 0, len;
	char err[256];
	int n;

	cc.id = f->client;
	cc.cert = f->client_cert;
	cc.cert_len = f->client_len;
	cc.peers = f->peers_client;
	cc.now = f->now;
	sc.id = f->node;
	sc.cert = f->node_cert;
	sc.cert_len = f->node_len;
	sc.peers = f->peers_server;
	sc.now = f->now;
	assert_int_equal(ovl_wire_client_new(&c, &cc, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_server_new(&s, &sc, err, sizeof(err)), 0);
	n = ovl_wire_client_hello(c, hello, BUF_BYTES, err, sizeof(err));
	check_prefixes(hello, (size_t)n, false);
	/* truncated frames given to the handshake are refused with an ERROR */
	assert_int_equal(ovl_wire_server_hello(s, hello, (size_t)n - 1, reply, BUF_BYTES, &outlen,
					       err, sizeof(err)), -EBADMSG);
	assert_true(outlen > 0);
	ovl_wire_hs_destroy(&s);
	assert_int_equal(ovl_wire_server_new(&s, &sc, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_server_hello(s, hello, (size_t)n, reply, BUF_BYTES, &outlen, err,
					       sizeof(err)), 0);
	check_prefixes(reply, outlen, false);
	for (size_t l = 0; l < outlen; l++) {
		struct ovl_wire_hs *c2 = NULL;
		uint8_t *p = malloc(l ? l : 1);

		assert_int_equal(ovl_wire_client_new(&c2, &cc, err, sizeof(err)), 0);
		assert_true(ovl_wire_client_hello(c2, req, BUF_BYTES, err, sizeof(err)) > 0);
		memcpy(p, reply, l);
		assert_true(ovl_wire_client_finish(c2, p, l, NULL, err, sizeof(err)) < 0);
		ovl_wire_hs_destroy(&c2);
		free(p);
	}
	assert_int_equal(ovl_wire_client_finish(c, reply, outlen, NULL, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_hs_session(c, &f->cs), 0);
	assert_int_equal(ovl_wire_hs_session(s, &f->ss), 0);
	make_put(&r, "truncate-me", 10, 3);
	len = seal_req(&f->cs, &r, 10, 0, 1, req);
	check_prefixes(req, len, true);
	for (size_t l = 0; l < len; l++) {
		struct ovl_wire_hdr h;
		uint8_t *p = malloc(l ? l : 1);

		memcpy(p, req, l);
		assert_true(ovl_wire_head_open(&f->ss, p, l, &h, NULL, err, sizeof(err)) < 0);
		free(p);
	}
	/* an error frame too */
	n = ovl_wire_error_frame(OVL_WIRE_BUSY, "too many connections (256)", reply, BUF_BYTES);
	assert_true(n > 0);
	check_prefixes(reply, (size_t)n, false);
	ovl_wire_hs_destroy(&c);
	ovl_wire_hs_destroy(&s);
	free(hello);
	free(reply);
	free(req);
}

static void test_meta_round_trips(void **state)
{
	static const uint8_t types[] = { OVL_WIRE_T_PUT, OVL_WIRE_T_GET, OVL_WIRE_T_DELETE,
					 OVL_WIRE_T_STAT, OVL_WIRE_T_LIST, OVL_WIRE_T_NODE_STAT,
					 OVL_WIRE_T_MAP };
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_req r, g;
	struct ovl_wire_resp a, b;
	char err[256];
	int n;

	(void)state;
	for (size_t i = 0; i < sizeof(types); i++) {
		memset(&r, 0, sizeof(r));
		r.type = types[i];
		snprintf(r.slice, sizeof(r.slice), "slice-%zu", i);
		r.epoch = 1ull << 40;
		if (r.type != OVL_WIRE_T_NODE_STAT && r.type != OVL_WIRE_T_MAP) {
			r.key_len = OVL_WIRE_KEY_MAX_BYTES;
			memset(r.key, 0xa5, r.key_len);
		}
		if (r.type == OVL_WIRE_T_PUT) {
			r.size = OVL_WIRE_OBJECT_MAX_BYTES;
			r.crc = 0xffffffff;
		}
		if (r.type == OVL_WIRE_T_GET) {
			r.has_range = true;
			r.offset = 3;
			r.length = 4097;
		}
		if (r.type == OVL_WIRE_T_LIST) {
			r.after_len = 2;
			memcpy(r.after, "ab", 2);
			r.limit = OVL_WIRE_LIST_MAX;
		}
		n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
		if (n < 0)
			fail_msg("%s", err);
		assert_int_equal(ovl_wire_req_decode(r.type, meta, (size_t)n, &g, err, sizeof(err)), 0);
		assert_memory_equal(&r, &g, sizeof(r));

		memset(&a, 0, sizeof(a));
		a.type = types[i] | OVL_WIRE_T_RESPONSE;
		a.epoch = 42;
		if (r.type == OVL_WIRE_T_PUT || r.type == OVL_WIRE_T_STAT || r.type == OVL_WIRE_T_GET) {
			a.size = 1234;
			a.has_crc = true;
			a.crc = 0xdeadbeef;
			if (r.type == OVL_WIRE_T_GET)
				a.offset = 17;
			else
				a.seq = 77;
		}
		if (r.type == OVL_WIRE_T_MAP) {
			a.has_crc = true;
			a.crc = 0x01020304;
		}
		if (r.type == OVL_WIRE_T_LIST) {
			a.count = 3;
			a.more = true;
			a.has_crc = true;
			a.crc = 5;
		}
		if (r.type == OVL_WIRE_T_NODE_STAT) {
			a.ncounters = OVL_WIRE_COUNTERS_MAX;
			for (uint32_t j = 0; j < a.ncounters; j++) {
				snprintf(a.counters[j].name, sizeof(a.counters[j].name), "c%u", j);
				a.counters[j].value = (uint64_t)j << 33;
			}
		}
		n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
		if (n < 0)
			fail_msg("%s", err);
		assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)),
				 0);
		assert_memory_equal(&a, &b, sizeof(a));
	}
	/* an error response: stale-map with the newer epoch and a message */
	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE;
	a.status = OVL_WIRE_STALE_MAP;
	a.epoch = 9;
	snprintf(a.message, sizeof(a.message), "map epoch 8 is stale: this node holds 9");
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_string_equal(ovl_wire_status_name(b.status), "stale-map");
	assert_null(ovl_wire_status_name(99));
}

static void test_meta_refusals(void **state)
{
	struct ovl_wire_req r;
	char err[256];

	(void)state;
#define REQ(type, bytes, code, text)                                                       \
	do {                                                                               \
		assert_int_equal(ovl_wire_req_decode(type, (const uint8_t *)bytes,           \
						     sizeof(bytes) - 1, &r, err, sizeof(err)), code); \
		const char *want_ = text;                                                  \
		if (want_)                                                                 \
			assert_non_null(strstr(err, want_));                               \
	} while (0)
	/* {"slice":"hot","epoch":1,"key":b"k"} is a valid delete */
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x01k", 0, NULL);
	/* an unknown key is skipped */
	REQ(OVL_WIRE_T_DELETE, "\x84\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x01k\xa1z\x90", 0, NULL);
	REQ(OVL_WIRE_T_DELETE, "\x82\xa5slice\xa3hot\xa5""epoch\x01", -EBADMSG,
	    "required field 'key' is missing");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x00", -EBADMSG,
	    "field 'key' has 0 bytes");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\xff\xa3key\xc4\x01k", -EBADMSG,
	    "not an unsigned integer");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xa1k", -EBADMSG,
	    "'key' is not a bin");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5slice\xa3hot\xa3key\xc4\x01k", -EBADMSG,
	    "duplicate key 'slice'");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x01k\x00", -EBADMSG,
	    "follow the meta");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3h\x01t\xa5""epoch\x01\xa3key\xc4\x01k", -EBADMSG,
	    "printable");
	REQ(OVL_WIRE_T_DELETE, "\x83\xa5slice\xa3hot\xa5""epoch\xcb\0\0\0\0\0\0\0\0\xa3key\xc4\x01k",
	    -EBADMSG, NULL);
	REQ(OVL_WIRE_T_DELETE, "\xdf\xff\xff\xff\xff", -EBADMSG, NULL);
	REQ(OVL_WIRE_T_LIST, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa5limit\xcd\x27\x11", -EBADMSG,
	    "outside 1..10000");
	REQ(OVL_WIRE_T_GET, "\x84\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x01k\xa6offset\x01",
	    -EBADMSG, "go together");
	REQ(OVL_WIRE_T_PUT, "\x83\xa5slice\xa3hot\xa5""epoch\x01\xa3key\xc4\x01k", -EBADMSG,
	    "required field 'size'");
	REQ(OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE, "\x80", -EBADMSG, "not a request");
#undef REQ
	{
		/* an oversized meta is refused by the walker's cap */
		uint8_t *big = calloc(1, OVL_WIRE_META_MAX_BYTES + 1);

		assert_int_equal(ovl_wire_req_decode(OVL_WIRE_T_STAT, big, OVL_WIRE_META_MAX_BYTES + 1,
						     &r, err, sizeof(err)), -E2BIG);
		free(big);
	}
}

static void test_list_payload(void **state)
{
	struct ovl_wire_bin keys[3] = { { (const uint8_t *)"a", 1 }, { (const uint8_t *)"bb", 2 },
					{ (const uint8_t *)"ccc", 3 } }, *got = NULL;
	uint8_t buf[64];
	uint32_t n = 0;
	char err[256];
	int len;

	(void)state;
	len = ovl_wire_keys_encode(keys, 3, buf, sizeof(buf));
	assert_int_equal(len, 1 + 3 + 4 + 5);
	assert_int_equal(ovl_wire_keys_decode(buf, (size_t)len, &got, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(got[2].ptr, "ccc", 3);
	free(got);
	assert_int_equal(ovl_wire_keys_decode((const uint8_t *)"\xdd\xff\xff\xff\xff", 5, &got, &n,
					      err, sizeof(err)) < 0, 1);
	assert_null(got);
	assert_int_equal(ovl_wire_keys_decode((const uint8_t *)"\x91\xc4\x00", 3, &got, &n, err,
					      sizeof(err)), -EBADMSG);
	assert_int_equal(ovl_wire_keys_decode((const uint8_t *)"\x91\xa1x", 3, &got, &n, err,
					      sizeof(err)), -EBADMSG);
}

/* ---- replication fields (ver, fwd, vers, held, homes, superseded, tomb) ---- */

/* A tiny msgpack writer for hand-made metas. */
struct mpb {
	uint8_t b[4096];
	size_t n;
};

static void mpb_raw(struct mpb *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void mpb_byte(struct mpb *m, uint8_t b)
{
	mpb_raw(m, &b, 1);
}

static void mpb_map(struct mpb *m, unsigned n)
{
	assert_true(n < 16);
	mpb_byte(m, (uint8_t)(0x80 | n));
}

static void mpb_arr(struct mpb *m, unsigned n)
{
	if (n < 16) {
		mpb_byte(m, (uint8_t)(0x90 | n));
	} else {
		mpb_byte(m, 0xdc);
		mpb_byte(m, (uint8_t)(n >> 8));
		mpb_byte(m, (uint8_t)n);
	}
}

static void mpb_str(struct mpb *m, const char *s)
{
	mpb_byte(m, (uint8_t)(0xa0 | strlen(s)));
	mpb_raw(m, s, strlen(s));
}

static void mpb_bin(struct mpb *m, uint8_t fill, size_t n)
{
	mpb_byte(m, 0xc4);
	mpb_byte(m, (uint8_t)n);
	for (size_t i = 0; i < n; i++)
		mpb_byte(m, fill);
}

static void mpb_uint(struct mpb *m, uint64_t v)
{
	mpb_byte(m, 0xcf);
	for (int i = 7; i >= 0; i--)
		mpb_byte(m, (uint8_t)(v >> (8 * i)));
}

/* The common head of a request meta: {slice: "hot", epoch: 1, key: b"k", <extra> more keys} */
static void mpb_req(struct mpb *m, unsigned extra)
{
	m->n = 0;
	mpb_map(m, 3 + extra);
	mpb_str(m, "slice");
	mpb_str(m, "hot");
	mpb_str(m, "epoch");
	mpb_byte(m, 1);
	mpb_str(m, "key");
	mpb_bin(m, 'k', 1);
}

/* A response head: {status, message: "", epoch: 3, <extra> more keys} */
static void mpb_resp(struct mpb *m, uint32_t status, unsigned extra)
{
	m->n = 0;
	mpb_map(m, 3 + extra);
	mpb_str(m, "status");
	mpb_byte(m, (uint8_t)status);
	mpb_str(m, "message");
	mpb_str(m, "");
	mpb_str(m, "epoch");
	mpb_byte(m, 3);
}

static void mpb_ver(struct mpb *m, uint64_t hlc, uint64_t node)
{
	mpb_str(m, "ver");
	mpb_arr(m, 2);
	mpb_uint(m, hlc);
	mpb_uint(m, node);
}

static void mpb_hop(struct mpb *m, uint8_t id, int home)
{
	mpb_arr(m, 2);
	mpb_bin(m, id, 32);
	if (home < 0)
		mpb_byte(m, 0xc0);
	else
		mpb_bin(m, (uint8_t)home, 32);
}

static void expect_req(uint8_t type, const struct mpb *m, int code, const char *text)
{
	struct ovl_wire_req r;
	char err[256] = "";
	int ret = ovl_wire_req_decode(type, m->b, m->n, &r, err, sizeof(err));

	if (ret != code)
		fail_msg("request decode: %d, expected %d (%s)", ret, code, err);
	if (text && !strstr(err, text))
		fail_msg("request decode error '%s' lacks '%s'", err, text);
}

static void expect_resp(uint8_t type, const struct mpb *m, int code, const char *text)
{
	struct ovl_wire_resp r;
	char err[256] = "";
	int ret = ovl_wire_resp_decode(type, m->b, m->n, &r, err, sizeof(err));

	if (ret != code)
		fail_msg("response decode: %d, expected %d (%s)", ret, code, err);
	if (text && !strstr(err, text))
		fail_msg("response decode error '%s' lacks '%s'", err, text);
}

static void test_repl_round_trips(void **state)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_req r, g;
	struct ovl_wire_resp a, b;
	struct ovl_wire_ver v1 = { 5, 9 }, v2 = { 5, 10 }, v3 = { 6, 0 }, v0 = { 0, 0 };
	char err[256];
	int n;

	(void)state;
	assert_true(ovl_wire_ver_cmp(&v1, &v2) < 0);
	assert_true(ovl_wire_ver_cmp(&v2, &v3) < 0);
	assert_true(ovl_wire_ver_cmp(&v3, &v1) > 0);
	assert_true(ovl_wire_ver_cmp(&v0, &v1) < 0);
	assert_int_equal(ovl_wire_ver_cmp(&v2, &v2), 0);

	/* a forwarded PUT: the largest chain, homes and hints mixed, the receiver a substitute */
	memset(&r, 0, sizeof(r));
	r.type = OVL_WIRE_T_PUT;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.epoch = 7;
	r.key_len = 3;
	memcpy(r.key, "obj", 3);
	r.size = 10;
	r.crc = 1;
	r.has_ver = r.has_fwd = true;
	r.ver.hlc = UINT64_MAX;
	r.ver.node = 0x0102030405060708ull;
	r.fwd.nchain = OVL_WIRE_CHAIN_MAX;
	for (uint32_t i = 0; i < r.fwd.nchain; i++) {
		memset(r.fwd.chain[i].id, 0x20 + (int)i, 32);
		r.fwd.chain[i].has_home = i % 2;
		if (i % 2)
			memset(r.fwd.chain[i].home, 0x40 + (int)i, 32);
	}
	r.fwd.has_home = true;
	memset(r.fwd.home, 0x77, 32);
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	if (n < 0)
		fail_msg("%s", err);
	assert_int_equal(ovl_wire_req_decode(r.type, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_memory_equal(&r, &g, sizeof(r));

	/* a hand-off DELETE: empty chain, the receiver a home */
	memset(&r, 0, sizeof(r));
	r.type = OVL_WIRE_T_DELETE;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.key_len = 1;
	r.key[0] = 'k';
	r.has_ver = r.has_fwd = true;
	r.ver.hlc = 1;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	if (n < 0)
		fail_msg("%s", err);
	assert_int_equal(ovl_wire_req_decode(r.type, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_memory_equal(&r, &g, sizeof(r));

	/* LIST with versions */
	memset(&r, 0, sizeof(r));
	r.type = OVL_WIRE_T_LIST;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.vers = true;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_req_decode(r.type, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_memory_equal(&r, &g, sizeof(r));
	assert_true(g.vers);

	/* PUT answer: every node of a slice of R = 16 holds it, 15 at home, superseded */
	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE;
	a.size = 10;
	a.has_crc = true;
	a.crc = 1;
	a.seq = 4;
	a.has_ver = true;
	a.ver = v2;
	a.has_held = true;
	a.nheld = OVL_WIRE_HELD_MAX;
	for (uint32_t i = 0; i < a.nheld; i++)
		memset(a.held[i], 0x80 + (int)i, 32);
	a.homes = OVL_WIRE_HELD_MAX - 1;
	a.superseded = true;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	if (n < 0)
		fail_msg("%s", err);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));

	/* a failed DELETE may say what was held before it failed; an empty held too */
	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_DELETE | OVL_WIRE_T_RESPONSE;
	a.status = OVL_WIRE_TIMEOUT;
	snprintf(a.message, sizeof(a.message), "replica did not answer");
	a.has_held = true;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_true(b.has_held);
	assert_int_equal(b.nheld, 0);

	/* GET ok with a version; GET and STAT not-found with a tombstone */
	static const uint8_t reads[] = { OVL_WIRE_T_GET, OVL_WIRE_T_STAT };
	for (size_t i = 0; i < sizeof(reads); i++) {
		memset(&a, 0, sizeof(a));
		a.type = reads[i] | OVL_WIRE_T_RESPONSE;
		a.size = 3;
		a.has_crc = true;
		a.has_ver = true;
		a.ver = v1;
		n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
		assert_true(n > 0);
		assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)),
				 0);
		assert_memory_equal(&a, &b, sizeof(a));

		memset(&a, 0, sizeof(a));
		a.type = reads[i] | OVL_WIRE_T_RESPONSE;
		a.status = OVL_WIRE_NOT_FOUND;
		snprintf(a.message, sizeof(a.message), "no such key");
		a.has_ver = true;
		a.ver = v3;
		a.tomb = true;
		n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
		assert_true(n > 0);
		assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)),
				 0);
		assert_memory_equal(&a, &b, sizeof(a));
	}
	/* an unversioned object: ver [0, 0] is allowed in an answer */
	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE;
	a.has_crc = true;
	a.has_ver = true;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));

	/* LIST answer in the versioned form */
	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE;
	a.count = 2;
	a.has_crc = true;
	a.vers = true;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
}

static void test_repl_encode_refusals(void **state)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_req r;
	struct ovl_wire_resp a;
	char err[256];

	(void)state;
	memset(&r, 0, sizeof(r));
	r.type = OVL_WIRE_T_GET;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.key_len = 1;
	r.key[0] = 'k';
	r.has_ver = r.has_fwd = true;
	r.ver.hlc = 1;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "PUT and DELETE only"));
	r.type = OVL_WIRE_T_DELETE;
	assert_true(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)) > 0);
	r.has_fwd = false;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "go together"));
	r.has_fwd = true;
	r.ver.hlc = 0;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "hlc 0"));
	r.ver.hlc = 1;
	r.fwd.nchain = OVL_WIRE_CHAIN_MAX + 1;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	r.fwd.nchain = 2; /* two entries of the same (all-zero) id */
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "twice"));
	r.fwd.nchain = 1;
	r.fwd.chain[0].has_home = true; /* home == id (both zero) */
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "itself"));
	r.has_ver = r.has_fwd = false;
	r.vers = true;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "LIST only"));

	memset(&a, 0, sizeof(a));
	a.type = OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE;
	a.has_ver = true;
	a.tomb = true; /* on ok */
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.status = OVL_WIRE_NOT_FOUND;
	assert_true(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)) > 0);
	a.has_ver = false;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.tomb = false;
	a.has_held = true; /* not for STAT */
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.type = OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE;
	assert_true(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)) > 0);
	a.nheld = OVL_WIRE_HELD_MAX + 1;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.nheld = 2; /* the same (zero) id twice */
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.held[1][0] = 1;
	a.homes = 3;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.homes = 2;
	assert_true(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)) > 0);
	a.has_held = false; /* homes without held */
	a.nheld = 0;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.homes = 0;
	a.vers = true;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	a.vers = false;
	a.type = OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE;
	a.has_ver = true;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
}

static void test_repl_decode_refusals(void **state)
{
	struct mpb m;
	struct ovl_wire_req r;
	struct ovl_wire_resp a;
	char err[256];
	const uint8_t P = OVL_WIRE_T_PUT, D = OVL_WIRE_T_DELETE;
	const uint8_t PR = OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE;
	const uint8_t SR = OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE;

	(void)state;
	/* a well-formed forwarded DELETE, then each field broken in turn */
	mpb_req(&m, 2);
	mpb_ver(&m, 9, 1);
	mpb_str(&m, "fwd");
	mpb_map(&m, 2);
	mpb_str(&m, "chain");
	mpb_arr(&m, 2);
	mpb_hop(&m, 1, -1);
	mpb_hop(&m, 2, 3);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	assert_int_equal(ovl_wire_req_decode(D, m.b, m.n, &r, err, sizeof(err)), 0);
	assert_true(r.has_ver && r.has_fwd);
	assert_int_equal(r.ver.hlc, 9);
	assert_int_equal(r.fwd.nchain, 2);
	assert_false(r.fwd.chain[0].has_home);
	assert_true(r.fwd.chain[1].has_home);
	assert_int_equal(r.fwd.chain[1].home[31], 3);
	assert_false(r.fwd.has_home);

	/* ver without fwd, fwd without ver */
	mpb_req(&m, 1);
	mpb_ver(&m, 9, 1);
	expect_req(D, &m, -EBADMSG, "go together");
	mpb_req(&m, 1);
	mpb_str(&m, "fwd");
	mpb_map(&m, 2);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	expect_req(P, &m, -EBADMSG, NULL); /* PUT: size, crc missing, and no ver */
	expect_req(D, &m, -EBADMSG, "go together");

#define FWD_HEAD(keys)              \
	do {                        \
		mpb_req(&m, 2);     \
		mpb_ver(&m, 9, 1);  \
		mpb_str(&m, "fwd"); \
		mpb_map(&m, keys);  \
	} while (0)
	/* ver: not an array, three elements, a string element, hlc 0 */
	mpb_req(&m, 2);
	mpb_str(&m, "ver");
	mpb_byte(&m, 5);
	mpb_str(&m, "fwd");
	mpb_map(&m, 0);
	expect_req(D, &m, -EBADMSG, "'ver' is not an array of two unsigned integers");
	mpb_req(&m, 1);
	mpb_str(&m, "ver");
	mpb_arr(&m, 3);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	expect_req(D, &m, -EBADMSG, "'ver' is not an array");
	mpb_req(&m, 1);
	mpb_str(&m, "ver");
	mpb_arr(&m, 2);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xff); /* -1 */
	expect_req(D, &m, -EBADMSG, "'ver' is not an array");
	mpb_req(&m, 2);
	mpb_ver(&m, 0, 1);
	mpb_str(&m, "fwd");
	mpb_map(&m, 2);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	expect_req(D, &m, -EBADMSG, "hlc 0");

	/* fwd: not a map, a key missing, a key twice, too many keys, an unknown key */
	mpb_req(&m, 2);
	mpb_ver(&m, 9, 1);
	mpb_str(&m, "fwd");
	mpb_arr(&m, 0);
	expect_req(D, &m, -EBADMSG, "'fwd' is not a map");
	FWD_HEAD(1);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	expect_req(D, &m, -EBADMSG, "lacks 'chain'");
	FWD_HEAD(1);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	expect_req(D, &m, -EBADMSG, "lacks 'home'");
	FWD_HEAD(3);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	expect_req(D, &m, -EBADMSG, "duplicate");
	FWD_HEAD(9);
	for (int i = 0; i < 9; i++) {
		char k[4];

		snprintf(k, sizeof(k), "k%d", i);
		mpb_str(&m, k);
		mpb_byte(&m, 0);
	}
	expect_req(D, &m, -EBADMSG, "more than 8");
	FWD_HEAD(3);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "later");
	mpb_arr(&m, 1);
	mpb_byte(&m, 0);
	mpb_str(&m, "home");
	mpb_bin(&m, 7, 32);
	expect_req(D, &m, 0, NULL); /* unknown keys inside fwd are skipped */

	/* fwd.home: wrong length, a str */
	FWD_HEAD(2);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "home");
	mpb_bin(&m, 7, 31);
	expect_req(D, &m, -EBADMSG, "not a bin of 32 bytes");
	FWD_HEAD(2);
	mpb_str(&m, "chain");
	mpb_arr(&m, 0);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xa1);
	mpb_byte(&m, 'x');
	expect_req(D, &m, -EBADMSG, "not a bin of 32 bytes");

	/* fwd.chain: not an array, 5 entries, an entry of 1, an id of 33 bytes, an id that is
	 * a str, home == id, an id twice, an entry nested too deep */
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_map(&m, 0);
	expect_req(D, &m, -EBADMSG, "'fwd.chain' is not an array");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 5);
	for (int i = 0; i < 5; i++)
		mpb_hop(&m, (uint8_t)i, -1);
	expect_req(D, &m, -EBADMSG, "more than 4");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 1);
	mpb_arr(&m, 1);
	mpb_bin(&m, 1, 32);
	expect_req(D, &m, -EBADMSG, "[id, home]");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 1);
	mpb_arr(&m, 2);
	mpb_bin(&m, 1, 33);
	mpb_byte(&m, 0xc0);
	expect_req(D, &m, -EBADMSG, "not a bin of 32 bytes");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 1);
	mpb_arr(&m, 2);
	mpb_byte(&m, 0xd9);
	mpb_byte(&m, 32);
	for (int i = 0; i < 32; i++)
		mpb_byte(&m, 'a');
	mpb_byte(&m, 0xc0);
	expect_req(D, &m, -EBADMSG, "not a bin of 32 bytes");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 1);
	mpb_hop(&m, 4, 4);
	expect_req(D, &m, -EBADMSG, "names itself as its home");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 2);
	mpb_hop(&m, 4, -1);
	mpb_hop(&m, 4, 5);
	expect_req(D, &m, -EBADMSG, "names a node twice");
	FWD_HEAD(2);
	mpb_str(&m, "home");
	mpb_byte(&m, 0xc0);
	mpb_str(&m, "chain");
	mpb_arr(&m, 1);
	mpb_arr(&m, 2);
	mpb_bin(&m, 1, 32);
	mpb_arr(&m, 1); /* depth 5 */
	mpb_byte(&m, 0);
	expect_req(D, &m, -EBADMSG, "deeper");
#undef FWD_HEAD

	/* ver and fwd are not GET's keys: skipped, as an older node skips them */
	mpb_req(&m, 1);
	mpb_ver(&m, 9, 1);
	assert_int_equal(ovl_wire_req_decode(OVL_WIRE_T_GET, m.b, m.n, &r, err, sizeof(err)), 0);
	assert_false(r.has_ver);
	/* vers: a bool */
	m.n = 0;
	mpb_map(&m, 3);
	mpb_str(&m, "slice");
	mpb_str(&m, "hot");
	mpb_str(&m, "epoch");
	mpb_byte(&m, 1);
	mpb_str(&m, "vers");
	mpb_byte(&m, 1);
	expect_req(OVL_WIRE_T_LIST, &m, -EBADMSG, "'vers' is not a boolean");
	m.n--;
	mpb_byte(&m, 0xc3);
	expect_req(OVL_WIRE_T_LIST, &m, 0, NULL);

	/* responses: held over 16, a held id of 31 bytes, an id twice, homes over held,
	 * homes without held, tomb without ver, tomb on ok, tomb not a bool, superseded not
	 * a bool */
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "held");
	mpb_arr(&m, 17);
	for (int i = 0; i < 17; i++)
		mpb_bin(&m, (uint8_t)i, 32);
	expect_resp(PR, &m, -EBADMSG, "more than 16");
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "held");
	mpb_arr(&m, 1);
	mpb_bin(&m, 1, 31);
	expect_resp(PR, &m, -EBADMSG, "not a bin of 32 bytes");
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "held");
	mpb_arr(&m, 2);
	mpb_bin(&m, 1, 32);
	mpb_bin(&m, 1, 32);
	expect_resp(PR, &m, -EBADMSG, "names a node twice");
	mpb_resp(&m, 0, 2);
	mpb_str(&m, "held");
	mpb_arr(&m, 1);
	mpb_bin(&m, 1, 32);
	mpb_str(&m, "homes");
	mpb_byte(&m, 2);
	expect_resp(PR, &m, -EBADMSG, "more than 'held' has");
	m.n--;
	mpb_byte(&m, 1);
	expect_resp(PR, &m, 0, NULL);
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "homes");
	mpb_byte(&m, 0);
	expect_resp(PR, &m, -EBADMSG, "needs 'held'");
	mpb_resp(&m, OVL_WIRE_NOT_FOUND, 1);
	mpb_str(&m, "tomb");
	mpb_byte(&m, 0xc3);
	expect_resp(SR, &m, -EBADMSG, "needs 'ver'");
	mpb_resp(&m, OVL_WIRE_OK, 2);
	mpb_ver(&m, 1, 1);
	mpb_str(&m, "tomb");
	mpb_byte(&m, 0xc3);
	expect_resp(SR, &m, -EBADMSG, "not-found");
	mpb_resp(&m, OVL_WIRE_NOT_FOUND, 2);
	mpb_ver(&m, 1, 1);
	mpb_str(&m, "tomb");
	mpb_byte(&m, 0xc3);
	assert_int_equal(ovl_wire_resp_decode(SR, m.b, m.n, &a, err, sizeof(err)), 0);
	assert_true(a.tomb && a.has_ver && a.ver.hlc == 1);
	m.n--;
	mpb_byte(&m, 1);
	expect_resp(SR, &m, -EBADMSG, "'tomb' is not a boolean");
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "superseded");
	mpb_byte(&m, 0);
	expect_resp(PR, &m, -EBADMSG, "'superseded' is not a boolean");
	/* held is not a STAT answer's key: skipped */
	mpb_resp(&m, 0, 1);
	mpb_str(&m, "held");
	mpb_arr(&m, 1);
	mpb_bin(&m, 1, 31);
	expect_resp(SR, &m, 0, NULL);
}

/* The head of a request meta without a key: {slice: "hot", epoch: 1, <extra>} */
static void mpb_req_nokey(struct mpb *m, unsigned extra)
{
	m->n = 0;
	mpb_map(m, 2 + extra);
	mpb_str(m, "slice");
	mpb_str(m, "hot");
	mpb_str(m, "epoch");
	mpb_byte(m, 1);
}

/* DIGEST, HEAL, LIST's bucket and a write's repair flag (7.13): round
 * trips, and every bad type or range refused as bad-request. */
static void test_heal_fields(void **state)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_req r, g;
	struct ovl_wire_resp a, b;
	struct mpb m;
	char err[256];
	int n;
	const uint8_t DG = OVL_WIRE_T_DIGEST, HL = OVL_WIRE_T_HEAL, LS = OVL_WIRE_T_LIST;

	(void)state;
	assert_string_equal(ovl_wire_type_name(DG), "digest");
	assert_string_equal(ovl_wire_type_name(HL | OVL_WIRE_T_RESPONSE), "heal-response");
	/* DIGEST with every bucket, and with the root only */
	memset(&r, 0, sizeof(r));
	r.type = DG;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.epoch = 7;
	r.buckets = OVL_WIRE_DIGEST_BUCKETS;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_req_decode(DG, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_int_equal(g.buckets, OVL_WIRE_DIGEST_BUCKETS);
	assert_int_equal(g.epoch, 7);
	r.buckets = 0;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_int_equal(ovl_wire_req_decode(DG, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_int_equal(g.buckets, 0);
	r.buckets = 17;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	/* HEAL with every field */
	memset(&r, 0, sizeof(r));
	r.type = HL;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.check_only = true;
	r.has_rate = true;
	r.rate = 1ull << 40;
	r.has_duty = true;
	r.duty = 25;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_req_decode(HL, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_true(g.check_only && g.has_rate && g.has_duty);
	assert_true(g.rate == 1ull << 40);
	assert_int_equal(g.duty, 25);
	r.duty = 0;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	r.duty = 101;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	/* HEAL fields on another request, bucket on another than LIST */
	r.type = OVL_WIRE_T_NODE_STAT;
	r.duty = 5;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	memset(&r, 0, sizeof(r));
	r.type = OVL_WIRE_T_STAT;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.key[0] = 'k';
	r.key_len = 1;
	r.has_bucket = true;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	/* repair without a forwarded version */
	r.type = OVL_WIRE_T_DELETE;
	r.has_bucket = false;
	r.repair = true;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	/* a forwarded DELETE with repair: round trip */
	r.has_ver = r.has_fwd = true;
	r.ver.hlc = 9;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_req_decode(OVL_WIRE_T_DELETE, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_true(g.repair && g.has_ver);
	/* LIST with a bucket */
	memset(&r, 0, sizeof(r));
	r.type = LS;
	snprintf(r.slice, sizeof(r.slice), "hot");
	r.vers = true;
	r.has_bucket = true;
	r.bucket = 255;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_int_equal(ovl_wire_req_decode(LS, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_true(g.has_bucket && g.vers);
	assert_int_equal(g.bucket, 255);
	assert_false(g.has_bucket_set);
	/* ... and a set of buckets (the bucket in it), answered by_set */
	r.has_bucket_set = true;
	r.bucket_set[31] = 0x80;
	r.bucket_set[0] = 0x05;
	n = ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_req_decode(LS, meta, (size_t)n, &g, err, sizeof(err)), 0);
	assert_true(g.has_bucket_set);
	assert_memory_equal(g.bucket_set, r.bucket_set, sizeof(r.bucket_set));
	r.bucket = 1; /* not in the set */
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "bucket_set"));
	r.has_bucket = false;
	assert_int_equal(ovl_wire_req_encode(&r, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	memset(&a, 0, sizeof(a));
	a.type = LS | OVL_WIRE_T_RESPONSE;
	a.status = OVL_WIRE_OK;
	a.count = 3;
	a.by_set = true;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_true(b.by_set);
	a.by_set = false;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_false(b.by_set);

	/* hand-made bad metas */
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "buckets");
	mpb_uint(&m, 257);
	expect_req(DG, &m, -EBADMSG, "buckets");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "buckets");
	mpb_uint(&m, 16);
	expect_req(DG, &m, -EBADMSG, "buckets");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "buckets");
	mpb_str(&m, "all");
	expect_req(DG, &m, -EBADMSG, "not an unsigned integer");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "bucket");
	mpb_uint(&m, 256);
	expect_req(LS, &m, -EBADMSG, "bucket");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "bucket");
	mpb_byte(&m, 0xc3);
	expect_req(LS, &m, -EBADMSG, "bucket");
	/* bucket_set: 32 bytes, with a bucket that is in it */
	mpb_req_nokey(&m, 2);
	mpb_str(&m, "bucket");
	mpb_uint(&m, 3);
	mpb_str(&m, "bucket_set");
	mpb_bin(&m, 0xff, 31);
	expect_req(LS, &m, -EBADMSG, "bucket_set");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "bucket_set");
	mpb_bin(&m, 0xff, 32);
	expect_req(LS, &m, -EBADMSG, "bucket_set");
	mpb_req_nokey(&m, 2);
	mpb_str(&m, "bucket");
	mpb_uint(&m, 3);
	mpb_str(&m, "bucket_set");
	mpb_bin(&m, 0xf7, 32); /* bit 3 clear */
	expect_req(LS, &m, -EBADMSG, "bucket_set");
	mpb_req_nokey(&m, 2);
	mpb_str(&m, "bucket");
	mpb_uint(&m, 3);
	mpb_str(&m, "bucket_set");
	mpb_bin(&m, 0x08, 32);
	expect_req(LS, &m, 0, NULL);
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "check_only");
	mpb_byte(&m, 1);
	expect_req(HL, &m, -EBADMSG, "not a boolean");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "duty");
	mpb_byte(&m, 0);
	expect_req(HL, &m, -EBADMSG, "duty");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "duty");
	mpb_byte(&m, 101);
	expect_req(HL, &m, -EBADMSG, "duty");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "rate");
	mpb_byte(&m, 0xd0); /* int8 -1 */
	mpb_byte(&m, 0xff);
	expect_req(HL, &m, -EBADMSG, "rate");
	mpb_req_nokey(&m, 1);
	mpb_str(&m, "duty");
	mpb_byte(&m, 50);
	expect_req(HL, &m, 0, NULL);
	/* repair on a plain (unforwarded) write, repair not a bool */
	mpb_req(&m, 1);
	mpb_str(&m, "repair");
	mpb_byte(&m, 0xc3);
	expect_req(OVL_WIRE_T_DELETE, &m, -EBADMSG, "repair");
	mpb_req(&m, 1);
	mpb_str(&m, "repair");
	mpb_byte(&m, 1);
	expect_req(OVL_WIRE_T_DELETE, &m, -EBADMSG, "not a boolean");

	/* HEAL answers with counters, 128 of them at most; DIGEST with a crc */
	memset(&a, 0, sizeof(a));
	a.type = HL | OVL_WIRE_T_RESPONSE;
	a.ncounters = OVL_WIRE_COUNTERS_MAX;
	for (unsigned i = 0; i < a.ncounters; i++) {
		snprintf(a.counters[i].name, sizeof(a.counters[i].name), "heal_counter_%u", i);
		a.counters[i].value = i;
	}
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_int_equal(b.ncounters, OVL_WIRE_COUNTERS_MAX);
	assert_string_equal(b.counters[127].name, "heal_counter_127");
	a.ncounters = OVL_WIRE_COUNTERS_MAX + 1;
	assert_int_equal(ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err)), -EINVAL);
	memset(&a, 0, sizeof(a));
	a.type = DG | OVL_WIRE_T_RESPONSE;
	a.has_crc = true;
	a.crc = 0xdeadbeef;
	n = ovl_wire_resp_encode(&a, meta, sizeof(meta), err, sizeof(err));
	assert_int_equal(ovl_wire_resp_decode(a.type, meta, (size_t)n, &b, err, sizeof(err)), 0);
	assert_true(b.has_crc && b.crc == 0xdeadbeef);
	/* a DIGEST answer carries a payload; a HEAL answer none */
	{
		struct ovl_wire_hdr h = { .type = DG | OVL_WIRE_T_RESPONSE, .meta_len = 1, .payload_len = 4096 };
		uint8_t hb[OVL_WIRE_HDR_BYTES];

		assert_int_equal(ovl_wire_hdr_pack(&h, hb, err, sizeof(err)), 0);
		h.type = HL | OVL_WIRE_T_RESPONSE;
		assert_int_equal(ovl_wire_hdr_pack(&h, hb, err, sizeof(err)), -EINVAL);
	}
}

static void test_vlist_payload(void **state)
{
	struct ovl_wire_vkey ents[3] = {
		{ (const uint8_t *)"a", 1, { 0, 0 }, false },
		{ (const uint8_t *)"bb", 2, { UINT64_MAX, 7 }, true },
		{ (const uint8_t *)"ccc", 3, { 1u << 20, UINT64_MAX }, false },
	}, *got = NULL, *big = NULL;
	uint8_t buf[128], *bigbuf = NULL;
	uint32_t n = 0;
	char err[256];
	struct mpb m;
	int len;

	(void)state;
	len = ovl_wire_vkeys_encode(ents, 3, buf, sizeof(buf));
	assert_true(len > 0);
	assert_int_equal(ovl_wire_vkeys_decode(buf, (size_t)len, &got, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(got[i].len, ents[i].len);
		assert_memory_equal(got[i].ptr, ents[i].ptr, ents[i].len);
		assert_int_equal(got[i].ver.hlc, ents[i].ver.hlc);
		assert_int_equal(got[i].ver.node, ents[i].ver.node);
		assert_int_equal(got[i].tomb, ents[i].tomb);
	}
	free(got);
	got = NULL;
	/* the empty answer */
	len = ovl_wire_vkeys_encode(ents, 0, buf, sizeof(buf));
	assert_int_equal(len, 1);
	assert_int_equal(ovl_wire_vkeys_decode(buf, 1, &got, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(got);
	got = NULL;
	/* encoder refusals: too small, a bad key, too many */
	assert_int_equal(ovl_wire_vkeys_encode(ents, 3, buf, 8), -ENOSPC);
	ents[0].len = 0;
	assert_int_equal(ovl_wire_vkeys_encode(ents, 3, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ovl_wire_vkeys_encode(ents, OVL_WIRE_LIST_MAX + 1, buf, sizeof(buf)),
			 -EINVAL);
	/* the largest answer decodes; one entry more is refused */
	big = calloc(OVL_WIRE_LIST_MAX + 1, sizeof(*big));
	bigbuf = malloc((size_t)(OVL_WIRE_LIST_MAX + 1) * 32);
	for (uint32_t i = 0; i <= OVL_WIRE_LIST_MAX; i++) {
		big[i].ptr = (const uint8_t *)"key";
		big[i].len = 3;
		big[i].ver.hlc = i;
	}
	len = ovl_wire_vkeys_encode(big, OVL_WIRE_LIST_MAX, bigbuf, (size_t)(OVL_WIRE_LIST_MAX + 1) * 32);
	assert_true(len > 0);
	assert_int_equal(ovl_wire_vkeys_decode(bigbuf, (size_t)len, &got, &n, err, sizeof(err)), 0);
	assert_int_equal(n, OVL_WIRE_LIST_MAX);
	free(got);
	got = NULL;
	bigbuf[2] = 0x11; /* array16 count 10000 -> 10001 (0x2711): entries are one short */
	assert_true(ovl_wire_vkeys_decode(bigbuf, (size_t)len, &got, &n, err, sizeof(err)) < 0);
	assert_null(got);
	free(bigbuf);
	free(big);

#define BAD(code, text)                                                                      \
	do {                                                                                 \
		assert_int_equal(ovl_wire_vkeys_decode(m.b, m.n, &got, &n, err, sizeof(err)),  \
				 code);                                                      \
		assert_null(got);                                                            \
		if (text)                                                                    \
			assert_non_null(strstr(err, (const char *)text));                   \
	} while (0)
	/* an entry of three, a key that is a str, an empty key, a negative hlc, a tomb
	 * that is not a bool, a plain key list, trailing bytes, a map, nesting */
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_arr(&m, 3);
	mpb_bin(&m, 'k', 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	BAD(-EBADMSG, "entry 0 is not");
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_arr(&m, 4);
	mpb_str(&m, "k");
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xc2);
	BAD(-EBADMSG, "entry 0 is not");
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_arr(&m, 4);
	mpb_bin(&m, 'k', 0);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xc2);
	BAD(-EBADMSG, "entry 0 is not");
	m.n = 0;
	mpb_arr(&m, 2);
	mpb_arr(&m, 4);
	mpb_bin(&m, 'k', 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xc2);
	mpb_arr(&m, 4);
	mpb_bin(&m, 'l', 1);
	mpb_byte(&m, 0xff);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xc2);
	BAD(-EBADMSG, "entry 1 is not");
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_arr(&m, 4);
	mpb_bin(&m, 'k', 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	BAD(-EBADMSG, "entry 0 is not");
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_bin(&m, 'k', 1);
	BAD(-EBADMSG, "entry 0 is not");
	m.n = 0;
	mpb_arr(&m, 0);
	mpb_byte(&m, 0);
	BAD(-EBADMSG, "follow the array");
	m.n = 0;
	mpb_map(&m, 0);
	BAD(-EBADMSG, "not an array");
	m.n = 0;
	mpb_arr(&m, 1);
	mpb_arr(&m, 4);
	mpb_arr(&m, 1);
	mpb_byte(&m, 0);
	mpb_byte(&m, 1);
	mpb_byte(&m, 1);
	mpb_byte(&m, 0xc2);
	BAD(-EBADMSG, "deeper");
#undef BAD
}

static void test_error_frame(void **state)
{
	uint8_t buf[512];
	struct ovl_wire_hdr h;
	uint32_t status;
	char text[OVL_WIRE_TEXT_SIZE], err[256], longtext[400];
	size_t need;
	int n;

	(void)state;
	n = ovl_wire_error_frame(OVL_WIRE_BUSY, "too many connections", buf, sizeof(buf));
	assert_int_equal(ovl_wire_head_need(buf, (size_t)n, false, &h, &need, err, sizeof(err)), 0);
	assert_int_equal(need, 0);
	assert_int_equal(h.type, OVL_WIRE_T_ERROR);
	assert_int_equal(ovl_wire_error_parse(buf + 32, h.meta_len, &status, text, err, sizeof(err)),
			 0);
	assert_int_equal(status, OVL_WIRE_BUSY);
	assert_string_equal(text, "too many connections");
	/* a long text is cut to 255 bytes */
	memset(longtext, 'x', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	n = ovl_wire_error_frame(OVL_WIRE_INTERNAL, longtext, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(ovl_wire_error_parse(buf + 32, (size_t)n - 32, &status, text, err,
					      sizeof(err)), 0);
	assert_int_equal(strlen(text), 255);
	/* frames of the wrong phase are refused by the incremental parser */
	assert_int_equal(ovl_wire_head_need(buf, (size_t)n, true, &h, &need, err, sizeof(err)),
			 -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_rules),
		cmocka_unit_test(test_meta_round_trips),
		cmocka_unit_test(test_meta_refusals),
		cmocka_unit_test(test_list_payload),
		cmocka_unit_test(test_repl_round_trips),
		cmocka_unit_test(test_repl_encode_refusals),
		cmocka_unit_test(test_repl_decode_refusals),
		cmocka_unit_test(test_vlist_payload),
		cmocka_unit_test(test_heal_fields),
		cmocka_unit_test(test_error_frame),
		cmocka_unit_test_setup_teardown(test_handshake_and_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_client_key_refused_by_mac, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mac_tamper_and_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aead_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_payload_pieces, setup, teardown),
		cmocka_unit_test(test_status_table),
		cmocka_unit_test_setup_teardown(test_truncations, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
