/*
 * Fuzzes the data-plane frame parser and meta decoders with arbitrary bytes.
 * Input: one mode byte (bit 0: the frame is after the handshake, so its head
 * carries a MAC), then the bytes of a frame as a server would receive them.
 *
 * Beyond "no crash, no leak, no sanitizer report" it checks:
 *  - the incremental parser asks for more bytes exactly until the head is
 *    complete, and every prefix agrees with the whole;
 *  - a refusal always comes with a NUL-terminated error text;
 *  - a meta that decodes re-encodes to something that decodes to the same.
 * HELLO frames go through a real server handshake whose verifier accepts any
 * certificate that decodes (so the key exchange and the proof run too).
 */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(int line) __attribute__((noreturn));

static void die(int line)
{
	fprintf(stderr, "fuzz_wire.c:%d: check failed\n", line);
	abort();
}

static struct ovl_id *server_id;
static uint8_t server_cert[OVL_CERT_MAX_BYTES];
static size_t server_cert_len;

static int accept_any(void *arg, const uint8_t *cert, size_t len, const char *slice,
		      struct ovl_cert *out, char *err, size_t errlen)
{
	(void)arg;
	(void)slice;
	return ovl_cert_decode(out, cert, len, err, errlen);
}

static void init_once(void)
{
	uint8_t seed[32];
	struct ovl_cert c;
	char err[256];
	int n;

	if (server_id)
		return;
	memset(seed, 0x33, sizeof(seed));
	if (ovl_id_from_seed(&server_id, seed, seed) < 0)
		die(__LINE__);
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, server_id);
	c.serial = 1;
	c.role = OVL_ROLE_NODE;
	c.not_after = 1;
	n = ovl_cert_sign(&c, server_id->sign_sk, server_cert, sizeof(server_cert), err,
			  sizeof(err));
	if (n < 0) {
		fprintf(stderr, "%s\n", err);
		die(__LINE__);
	}
	server_cert_len = (size_t)n;
}

static void check_err(const char *err, size_t cap)
{
	if (!memchr(err, '\0', cap))
		die(__LINE__);
}

static void fuzz_meta(uint8_t type, const uint8_t *meta, size_t len)
{
	static uint8_t buf[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_req r, r2;
	struct ovl_wire_resp *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	char err[256];
	int n;

	memset(err, 'x', sizeof(err));
	if (type & OVL_WIRE_T_RESPONSE) {
		if (ovl_wire_resp_decode(type, meta, len, a, err, sizeof(err)) < 0) {
			check_err(err, sizeof(err));
			goto out;
		}
		n = ovl_wire_resp_encode(a, buf, sizeof(buf), err, sizeof(err));
		if (n < 0 || ovl_wire_resp_decode(type, buf, (size_t)n, b, err, sizeof(err)) < 0) {
			fprintf(stderr, "response decoded but does not round-trip: %s\n", err);
			die(__LINE__);
		}
		/* error responses drop per-op fields; compare what always goes out */
		if (a->status != b->status || a->epoch != b->epoch ||
		    strcmp(a->message, b->message) != 0)
			die(__LINE__);
		if (a->status == 0 && (a->size != b->size || a->crc != b->crc ||
				       a->ncounters != b->ncounters))
			die(__LINE__);
		/* replication fields go out whatever the status */
		if (a->has_ver != b->has_ver || memcmp(&a->ver, &b->ver, sizeof(a->ver)) != 0 ||
		    a->tomb != b->tomb || a->vers != b->vers || a->has_held != b->has_held ||
		    a->nheld != b->nheld || memcmp(a->held, b->held, sizeof(a->held)) != 0 ||
		    a->homes != b->homes || a->superseded != b->superseded)
			die(__LINE__);
	} else {
		if (ovl_wire_req_decode(type, meta, len, &r, err, sizeof(err)) < 0) {
			check_err(err, sizeof(err));
			goto out;
		}
		n = ovl_wire_req_encode(&r, buf, sizeof(buf), err, sizeof(err));
		if (n < 0 || ovl_wire_req_decode(type, buf, (size_t)n, &r2, err, sizeof(err)) < 0 ||
		    memcmp(&r, &r2, sizeof(r)) != 0) {
			fprintf(stderr, "request decoded but does not round-trip: %s\n", err);
			die(__LINE__);
		}
	}
out:
	free(a);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ovl_wire_session sess;
	struct ovl_wire_hdr h, h2;
	struct ovl_wire_bin *keys = NULL;
	struct ovl_wire_vkey *vkeys = NULL;
	const uint8_t *frame = data + 1;
	size_t len = size ? size - 1 : 0, need = 0, need2 = 0, head;
	bool authed;
	char err[256];
	uint32_t nkeys = 0;
	int ret;

	if (size == 0)
		return 0;
	init_once();
	authed = data[0] & 1;
	memset(err, 'x', sizeof(err));
	ret = ovl_wire_head_need(frame, len, authed, &h, &need, err, sizeof(err));
	if (ret < 0) {
		check_err(err, sizeof(err));
		return 0;
	}
	if (len >= OVL_WIRE_HDR_BYTES) {
		/* a shorter prefix must agree */
		if (ovl_wire_head_need(frame, OVL_WIRE_HDR_BYTES, authed, &h2, &need2, err,
				       sizeof(err)) < 0 ||
		    h2.meta_len != h.meta_len || need2 + OVL_WIRE_HDR_BYTES != ovl_wire_head_len(&h, authed))
			die(__LINE__);
	}
	if (need)
		return 0;
	head = ovl_wire_head_len(&h, authed);
	if (head > len)
		die(__LINE__);
	if (!authed) {
		if (h.type == OVL_WIRE_T_HELLO) {
			struct ovl_wire_hs_cfg cfg = { 0 };
			struct ovl_wire_hs *hs = NULL;
			static uint8_t out[OVL_WIRE_HEAD_MAX_BYTES];
			size_t outlen = 0;

			cfg.id = server_id;
			cfg.cert = server_cert;
			cfg.cert_len = server_cert_len;
			cfg.verify = accept_any;
			if (ovl_wire_server_new(&hs, &cfg, err, sizeof(err)) < 0)
				die(__LINE__);
			ret = ovl_wire_server_hello(hs, frame, head, out, sizeof(out), &outlen, err,
						    sizeof(err));
			if (outlen == 0)
				die(__LINE__); /* an answer (HELLO_OK or ERROR) is always written */
			if (ret < 0)
				check_err(err, sizeof(err));
			ovl_wire_hs_destroy(&hs);
		} else if (h.type == OVL_WIRE_T_ERROR) {
			uint32_t status;
			char text[OVL_WIRE_TEXT_SIZE];

			if (ovl_wire_error_parse(frame + OVL_WIRE_HDR_BYTES, h.meta_len, &status, text,
						 err, sizeof(err)) < 0)
				check_err(err, sizeof(err));
		}
		return 0;
	}
	/* the MAC path with an all-zero session, then the meta as if it verified */
	memset(&sess, 0, sizeof(sess));
	ret = ovl_wire_head_open(&sess, frame, head, &h2, NULL, err, sizeof(err));
	if (ret < 0)
		check_err(err, sizeof(err));
	fuzz_meta(h.type, frame + OVL_WIRE_HDR_BYTES, h.meta_len);
	if (h.type == (OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE) && len > head) {
		if (ovl_wire_keys_decode(frame + head, len - head, &keys, &nkeys, err, sizeof(err)) == 0)
			free(keys);
		if (ovl_wire_vkeys_decode(frame + head, len - head, &vkeys, &nkeys, err,
					  sizeof(err)) == 0)
			free(vkeys);
		else
			check_err(err, sizeof(err));
	}
	(void)ret;
	return 0;
}
