/*
 * Fixed keys shared by the certificate, revocation-list and timestamp fuzz
 * harnesses and by tests/prog/cert_corpus.c, which writes their seed
 * corpora: a corpus entry signed with these keys verifies in the harness.
 */
#ifndef SHELF_FUZZ_KEYS_H
#define SHELF_FUZZ_KEYS_H

#include <string.h>

#include "overlay.h"

#define FUZZ_NOW 1700000100ULL     /* "now" for every verification */
#define FUZZ_BUILD_TIME 1690000000 /* build time given to trusted time */

struct fuzz_keys {
	struct ovl_id *ca;     /* seed bytes 0x11 / 0x12 */
	struct ovl_id *broker; /* seed bytes 0x22 / 0x23 */
	struct ovl_id *node;   /* seed bytes 0x44 / 0x45 */
};

static inline int fuzz_keys_init(struct fuzz_keys *k)
{
	uint8_t s[OVL_ID_SEED_BYTES], c[OVL_ID_SEED_BYTES];

	memset(s, 0x11, sizeof(s));
	memset(c, 0x12, sizeof(c));
	if (ovl_id_from_seed(&k->ca, s, c) < 0)
		return -1;
	memset(s, 0x22, sizeof(s));
	memset(c, 0x23, sizeof(c));
	if (ovl_id_from_seed(&k->broker, s, c) < 0)
		return -1;
	memset(s, 0x44, sizeof(s));
	memset(c, 0x45, sizeof(c));
	return ovl_id_from_seed(&k->node, s, c);
}

/* The broker certificate every harness trusts: serial 1, issued by the CA. */
static inline int fuzz_broker_cert(const struct fuzz_keys *k, uint8_t *out, size_t cap)
{
	struct ovl_cert c;
	char err[256];

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, k->broker);
	c.serial = 1;
	c.role = OVL_ROLE_BROKER;
	c.not_before = FUZZ_NOW - 86400;
	c.not_after = FUZZ_NOW + 86400;
	return ovl_cert_sign(&c, k->ca->sign_sk, out, cap, err, sizeof(err));
}

/* A node certificate: serial 7, issued by the broker. */
static inline void fuzz_node_cert_fields(const struct fuzz_keys *k, struct ovl_cert *c)
{
	char err[256];

	ovl_cert_init(c);
	ovl_cert_set_keys(c, k->node);
	c->serial = 7;
	ovl_cert_add_slice(c, "alpha", err, sizeof(err));
	ovl_cert_add_slice(c, "beta", err, sizeof(err));
	ovl_cert_add_group(c, "rack1", err, sizeof(err));
	strcpy(c->site, "sim-site");
	strcpy(c->chassis, "sim-1u");
	strcpy(c->slot, "3");
	c->role = OVL_ROLE_NODE;
	c->not_before = FUZZ_NOW - 100;
	c->not_after = FUZZ_NOW + 86400;
}

#endif
