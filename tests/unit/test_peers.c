/*
 * ovl_peers: a peer link admits exactly the keys that a valid, unrevoked
 * certificate (node -> broker -> site CA) vouches for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "overlay.h"
#include "ovl_peers.h"

#define READY_MS 3000

struct fx {
	struct ovl_id *ca, *broker, *server, *good, *stranger, *late;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], good_cert[OVL_CERT_MAX_BYTES];
	uint8_t late_cert[OVL_CERT_MAX_BYTES], old_cert[OVL_CERT_MAX_BYTES];
	int broker_len, good_len, late_len, old_len;
	void *ctx;
	ovl_zap_t *zap;
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	ovl_link_server_t *srv;
	char endpoint[128];
	uint64_t now;
};

static int sign_cert(const struct ovl_id *subject, enum ovl_role role, uint64_t serial,
		     uint64_t nb, uint64_t na, const struct ovl_id *issuer, uint8_t *out)
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
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct ovl_link_server_cfg cfg = { 0 };
	char err[256];

	f->now = (uint64_t)time(NULL);
	ovl_id_generate(&f->ca);
	ovl_id_generate(&f->broker);
	ovl_id_generate(&f->server);
	ovl_id_generate(&f->good);
	ovl_id_generate(&f->stranger);
	ovl_id_generate(&f->late);
	f->broker_len = sign_cert(f->broker, OVL_ROLE_BROKER, 1, f->now - 60, f->now + 3600, f->ca,
				  f->broker_cert);
	f->good_len = sign_cert(f->good, OVL_ROLE_NODE, 10, f->now - 60, f->now + 3600, f->broker,
				f->good_cert);
	f->late_len = sign_cert(f->late, OVL_ROLE_NODE, 11, f->now - 60, f->now + 3600, f->broker,
				f->late_cert);
	f->old_len = sign_cert(f->stranger, OVL_ROLE_NODE, 12, f->now - 7200, f->now - 3600,
			       f->broker, f->old_cert);
	f->ctx = zmq_ctx_new();
	f->kr = ovl_keyring_new();
	assert_int_equal(ovl_zap_new(&f->zap, f->ctx, err, sizeof(err)), 0);
	assert_int_equal(ovl_zap_domain_set(f->zap, OVL_LINK_DOMAIN_PEER, f->kr), 0);
	assert_int_equal(ovl_peers_new(&f->peers, f->ca->sign_pk, f->kr), 0);
	cfg.endpoint = "tcp://127.0.0.1:*";
	cfg.domain = OVL_LINK_DOMAIN_PEER;
	cfg.secret_key = f->server->curve_sk;
	if (ovl_link_server_new(&f->srv, f->zap, &cfg, err, sizeof(err)) < 0)
		fail_msg("server: %s", err);
	ovl_link_server_endpoint(f->srv, f->endpoint, sizeof(f->endpoint));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ovl_link_server_destroy(&f->srv);
	ovl_peers_destroy(&f->peers);
	ovl_zap_destroy(&f->zap);
	ovl_keyring_destroy(&f->kr);
	zmq_ctx_term(f->ctx);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->server);
	ovl_id_destroy(&f->good);
	ovl_id_destroy(&f->stranger);
	ovl_id_destroy(&f->late);
	free(f);
	return 0;
}

/* Connect as `who`; 0 when the handshake is accepted and a message goes
 * through, -EACCES when ZAP refuses. */
static int try_connect(struct fx *f, const struct ovl_id *who)
{
	struct ovl_link_client_cfg cfg = { 0 };
	ovl_link_client_t *cl = NULL;
	struct ovl_link_peer from;
	char err[256], buf[16];
	int ret;

	cfg.endpoint = f->endpoint;
	cfg.server_key = f->server->curve_pk;
	cfg.secret_key = who->curve_sk;
	assert_int_equal(ovl_link_client_new(&cl, f->ctx, &cfg, err, sizeof(err)), 0);
	ret = ovl_link_client_wait_ready(cl, READY_MS, err, sizeof(err));
	if (ret == 0) {
		assert_int_equal(ovl_link_client_send(cl, "hi", 2, 1000), 0);
		ret = ovl_link_server_recv(f->srv, &from, buf, sizeof(buf), 2000);
		if (ret == 2) {
			assert_memory_equal(from.key, who->curve_pk, 32);
			ret = 0;
		} else if (ret >= 0) {
			ret = -EPROTO;
		}
	}
	ovl_link_client_destroy(&cl);
	return ret;
}

static void test_certificate_admits_key(void **state)
{
	struct fx *f = *state;
	struct ovl_cert c;
	char err[256];

	/* nothing is admitted before a certificate is */
	assert_int_equal(try_connect(f, f->good), -EACCES);
	/* a node certificate from an unknown broker is refused */
	assert_int_equal(ovl_peers_admit(f->peers, f->good_cert, f->good_len, f->now, &c, err,
					 sizeof(err)), -ENOKEY);
	assert_int_equal(ovl_peers_add_broker(f->peers, f->broker_cert, f->broker_len, f->now, err,
					      sizeof(err)), 0);
	assert_int_equal(ovl_peers_admit(f->peers, f->good_cert, f->good_len, f->now, &c, err,
					 sizeof(err)), 0);
	assert_int_equal(c.serial, 10);
	assert_int_equal(try_connect(f, f->good), 0);
	/* a key no certificate vouches for stays out */
	assert_int_equal(try_connect(f, f->stranger), -EACCES);
}

static void test_bad_certificates_refused(void **state)
{
	struct fx *f = *state;
	uint8_t forged[OVL_CERT_MAX_BYTES], selfcert[OVL_CERT_MAX_BYTES];
	char err[256];
	int n;

	assert_int_equal(ovl_peers_add_broker(f->peers, f->broker_cert, f->broker_len, f->now, err,
					      sizeof(err)), 0);
	/* expired */
	assert_int_equal(ovl_peers_admit(f->peers, f->old_cert, f->old_len, f->now, NULL, err,
					 sizeof(err)), -EKEYEXPIRED);
	assert_int_equal(try_connect(f, f->stranger), -EACCES);
	/* forged: one bit flipped */
	memcpy(forged, f->good_cert, f->good_len);
	forged[f->good_len / 2] ^= 1;
	assert_true(ovl_peers_admit(f->peers, forged, f->good_len, f->now, NULL, err,
				    sizeof(err)) < 0);
	/* signed by the node itself, naming the broker's key id: wrong signature */
	n = sign_cert(f->stranger, OVL_ROLE_NODE, 99, f->now - 60, f->now + 60, f->stranger, selfcert);
	assert_true(ovl_peers_admit(f->peers, selfcert, n, f->now, NULL, err, sizeof(err)) < 0);
	assert_int_equal(try_connect(f, f->stranger), -EACCES);
	/* a node certificate cannot act as a broker certificate */
	assert_int_equal(ovl_peers_add_broker(f->peers, f->good_cert, f->good_len, f->now, err,
					      sizeof(err)), -EKEYREJECTED);
}

static void test_revocation_closes_the_door(void **state)
{
	struct fx *f = *state;
	uint64_t revoked[] = { 10 };
	uint8_t *crl = NULL, *crl2 = NULL;
	size_t crl_len = 0, crl2_len = 0;
	char err[256];

	assert_int_equal(ovl_peers_add_broker(f->peers, f->broker_cert, f->broker_len, f->now, err,
					      sizeof(err)), 0);
	assert_int_equal(ovl_peers_admit(f->peers, f->good_cert, f->good_len, f->now, NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(ovl_peers_admit(f->peers, f->late_cert, f->late_len, f->now, NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(try_connect(f, f->good), 0);
	assert_int_equal(ovl_crl_sign(1, revoked, 1, f->broker->sign_sk, &crl, &crl_len, err,
				      sizeof(err)), 0);
	assert_int_equal(ovl_peers_update_crl(f->peers, crl, crl_len, err, sizeof(err)), 1);
	assert_int_equal(try_connect(f, f->good), -EACCES);
	assert_int_equal(try_connect(f, f->late), 0); /* others unaffected */
	/* re-admitting the revoked certificate fails; an old list is refused */
	assert_int_equal(ovl_peers_admit(f->peers, f->good_cert, f->good_len, f->now, NULL, err,
					 sizeof(err)), -EKEYREVOKED);
	assert_int_equal(ovl_peers_update_crl(f->peers, crl, crl_len, err, sizeof(err)), -ESTALE);
	/* a list signed by a stranger is refused */
	assert_int_equal(ovl_crl_sign(2, revoked, 0, f->stranger->sign_sk, &crl2, &crl2_len, err,
				      sizeof(err)), 0);
	assert_int_equal(ovl_peers_update_crl(f->peers, crl2, crl2_len, err, sizeof(err)), -ENOKEY);
	free(crl);
	free(crl2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_certificate_admits_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_certificates_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revocation_closes_the_door, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
