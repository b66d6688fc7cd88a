#include "ovl_peers.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct broker_entry {
	uint8_t cert[OVL_CERT_MAX_BYTES];
	size_t len;
	struct ovl_cert c;
	struct ovl_crl *crl; /* its revocation list, if any */
};

/* A keyring entry's tag names (issuer, serial): serials are per issuer. */
struct ovl_peers {
	pthread_mutex_t lock;
	uint8_t ca_pk[OVL_ID_BYTES];
	ovl_keyring_t *kr;
	struct broker_entry brokers[OVL_PEERS_BROKERS_MAX];
	unsigned nbrokers;
	struct ovl_crl *ca_crl;
	/* which issuer each admitted serial came from: tag -> (issuer, serial) */
	struct admitted {
		uint64_t tag, serial;
		uint8_t issuer[OVL_KEYID_BYTES];
	} *adm;
	size_t nadm, capadm;
};

static uint64_t tag_of(const uint8_t issuer[OVL_KEYID_BYTES], uint64_t serial)
{
	uint64_t t;

	memcpy(&t, issuer, sizeof(t));
	return t ^ (serial * 0x9e3779b97f4a7c15ULL);
}

static const struct admitted *find_tag(const struct ovl_peers *p, uint64_t tag)
{
	for (size_t i = 0; i < p->nadm; i++)
		if (p->adm[i].tag == tag)
			return &p->adm[i];
	return NULL;
}

static const struct ovl_crl *crl_for_issuer(const struct ovl_peers *p,
					    const uint8_t issuer[OVL_KEYID_BYTES])
{
	for (unsigned i = 0; i < p->nbrokers; i++) {
		uint8_t kid[OVL_KEYID_BYTES];

		ovl_keyid_compute(p->brokers[i].c.sign_pk, kid);
		if (memcmp(kid, issuer, OVL_KEYID_BYTES) == 0)
			return p->brokers[i].crl;
	}
	return NULL;
}

/* Keyring hook (ZAP thread): veto keys whose certificate is revoked. */
static int peers_hook(void *arg, const uint8_t key[OVL_KEY_BYTES],
		      const struct ovl_keyring_entry *entry, uint64_t now, int verdict)
{
	struct ovl_peers *p = arg;
	const struct admitted *a;
	const struct ovl_crl *crl;

	if (verdict != 0 || !entry)
		return verdict;
	pthread_mutex_lock(&p->lock);
	a = find_tag(p, entry->serial);
	crl = a ? crl_for_issuer(p, a->issuer) : NULL;
	if (!a || (crl && ovl_crl_is_revoked(crl, a->serial)))
		verdict = -EKEYREVOKED;
	pthread_mutex_unlock(&p->lock);
	return verdict;
}

int ovl_peers_new(struct ovl_peers **out, const uint8_t ca_pk[OVL_ID_BYTES], ovl_keyring_t *kr)
{
	struct ovl_peers *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	memcpy(p->ca_pk, ca_pk, OVL_ID_BYTES);
	p->kr = kr;
	ovl_keyring_hook_set(kr, peers_hook, p);
	*out = p;
	return 0;
}

void ovl_peers_destroy(struct ovl_peers **pp)
{
	struct ovl_peers *p = pp ? *pp : NULL;

	if (!p)
		return;
	ovl_keyring_hook_set(p->kr, NULL, NULL);
	for (unsigned i = 0; i < p->nbrokers; i++)
		ovl_crl_destroy(&p->brokers[i].crl);
	ovl_crl_destroy(&p->ca_crl);
	free(p->adm);
	pthread_mutex_destroy(&p->lock);
	free(p);
	*pp = NULL;
}

int ovl_peers_add_broker(struct ovl_peers *p, const uint8_t *buf, size_t len, uint64_t now,
			 char *err, size_t errlen)
{
	struct ovl_cert c;
	int ret;

	if (len > OVL_CERT_MAX_BYTES) {
		snprintf(err, errlen, "broker certificate of %zu bytes is too large", len);
		return -E2BIG;
	}
	ret = ovl_cert_verify(&c, buf, len, p->ca_pk, now, err, errlen);
	if (ret < 0)
		return ret;
	if (c.role != OVL_ROLE_BROKER) {
		snprintf(err, errlen, "certificate is not a broker certificate (role %s)",
			 ovl_role_name(c.role));
		return -EPERM;
	}
	pthread_mutex_lock(&p->lock);
	if (p->ca_crl && ovl_crl_is_revoked(p->ca_crl, c.serial)) {
		pthread_mutex_unlock(&p->lock);
		snprintf(err, errlen, "broker certificate serial %llu is revoked",
			 (unsigned long long)c.serial);
		return -EKEYREVOKED;
	}
	for (unsigned i = 0; i < p->nbrokers; i++) {
		if (memcmp(p->brokers[i].c.sign_pk, c.sign_pk, OVL_ID_BYTES) == 0) {
			memcpy(p->brokers[i].cert, buf, len);
			p->brokers[i].len = len;
			p->brokers[i].c = c;
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
	}
	if (p->nbrokers == OVL_PEERS_BROKERS_MAX) {
		pthread_mutex_unlock(&p->lock);
		snprintf(err, errlen, "already trusting %d brokers", OVL_PEERS_BROKERS_MAX);
		return -ENOSPC;
	}
	memcpy(p->brokers[p->nbrokers].cert, buf, len);
	p->brokers[p->nbrokers].len = len;
	p->brokers[p->nbrokers].c = c;
	p->nbrokers++;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

int ovl_peers_admit(struct ovl_peers *p, const uint8_t *buf, size_t len, uint64_t now,
		    struct ovl_cert *out, char *err, size_t errlen)
{
	struct ovl_cert node, broker, probe;
	const struct ovl_crl *crls[2];
	struct ovl_trust trust;
	struct broker_entry *be = NULL;
	uint64_t tag;
	int ret;

	ret = ovl_cert_decode(&probe, buf, len, err, errlen);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->nbrokers && !be; i++) {
		uint8_t kid[OVL_KEYID_BYTES];

		ovl_keyid_compute(p->brokers[i].c.sign_pk, kid);
		if (memcmp(kid, probe.issuer, OVL_KEYID_BYTES) == 0)
			be = &p->brokers[i];
	}
	if (!be) {
		pthread_mutex_unlock(&p->lock);
		snprintf(err, errlen, "node certificate was issued by a broker this node does not know");
		return -ENOKEY;
	}
	memset(&trust, 0, sizeof(trust));
	memcpy(trust.ca_pk, p->ca_pk, OVL_ID_BYTES);
	trust.ncrls = 0;
	if (be->crl)
		crls[trust.ncrls++] = be->crl;
	if (p->ca_crl)
		crls[trust.ncrls++] = p->ca_crl;
	trust.crls = crls;
	ret = ovl_cert_verify_chain(&node, &broker, buf, len, be->cert, be->len, &trust, now, err,
				    errlen);
	if (ret < 0) {
		pthread_mutex_unlock(&p->lock);
		return ret;
	}
	tag = tag_of(node.issuer, node.serial);
	if (!find_tag(p, tag)) {
		if (p->nadm == p->capadm) {
			size_t cap = p->capadm ? p->capadm * 2 : 64;
			void *n = realloc(p->adm, cap * sizeof(*p->adm));

			if (!n) {
				pthread_mutex_unlock(&p->lock);
				return -ENOMEM;
			}
			p->adm = n;
			p->capadm = cap;
		}
		p->adm[p->nadm].tag = tag;
		p->adm[p->nadm].serial = node.serial;
		memcpy(p->adm[p->nadm].issuer, node.issuer, OVL_KEYID_BYTES);
		p->nadm++;
	}
	pthread_mutex_unlock(&p->lock);
	ret = ovl_keyring_add(p->kr, node.curve_pk, node.not_after, tag);
	if (ret < 0) {
		snprintf(err, errlen, "cannot allow the key: %s", strerror(-ret));
		return ret;
	}
	if (out)
		*out = node;
	return 0;
}

int ovl_peers_update_crl(struct ovl_peers *p, const uint8_t *buf, size_t len, char *err,
			 size_t errlen)
{
	struct ovl_crl **slot = NULL;
	uint8_t issuer_kid[OVL_KEYID_BYTES];
	uint64_t *tags = NULL;
	size_t ntags = 0;
	int ret = -ENOKEY, removed = 0;

	pthread_mutex_lock(&p->lock);
	/* whose list is it? try each known issuer key */
	for (unsigned i = 0; i < p->nbrokers && ret == -ENOKEY; i++) {
		struct ovl_crl *probe = NULL;

		if (ovl_crl_decode(&probe, buf, len, p->brokers[i].c.sign_pk, err, errlen) == 0) {
			ovl_crl_destroy(&probe);
			slot = &p->brokers[i].crl;
			ovl_keyid_compute(p->brokers[i].c.sign_pk, issuer_kid);
			ret = ovl_crl_update(slot, buf, len, p->brokers[i].c.sign_pk, err, errlen);
		}
	}
	if (ret == -ENOKEY) {
		struct ovl_crl *probe = NULL;

		if (ovl_crl_decode(&probe, buf, len, p->ca_pk, err, errlen) == 0) {
			ovl_crl_destroy(&probe);
			slot = &p->ca_crl;
			ovl_keyid_compute(p->ca_pk, issuer_kid);
			ret = ovl_crl_update(slot, buf, len, p->ca_pk, err, errlen);
		}
	}
	if (ret == -ENOKEY)
		snprintf(err, errlen, "revocation list is not signed by a known broker or the CA");
	if (ret < 0) {
		pthread_mutex_unlock(&p->lock);
		return ret;
	}
	/*
	 * Drop the keys of every admitted certificate the list now revokes.
	 * The tags are collected first: the keyring calls our hook under its
	 * own lock, so we must not call into it while holding ours.
	 */
	tags = calloc(p->nadm ? p->nadm : 1, sizeof(*tags));
	for (size_t i = 0; tags && i < p->nadm; i++)
		if (memcmp(p->adm[i].issuer, issuer_kid, OVL_KEYID_BYTES) == 0 &&
		    ovl_crl_is_revoked(*slot, p->adm[i].serial))
			tags[ntags++] = p->adm[i].tag;
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < ntags; i++) {
		int n = ovl_keyring_revoke_tag(p->kr, tags[i]);

		if (n > 0)
			removed += n;
	}
	free(tags);
	return removed;
}
