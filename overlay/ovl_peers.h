/*
 * ovl_peers: which keys may open a peer link, decided by certificates.
 *
 * A ZAP keyring (ovl_keyring.h) admits raw Curve25519 keys. This module
 * fills one from certificates: a node certificate is admitted only if it
 * verifies against a broker certificate that verifies against the site CA
 * (ovl_cert_verify_chain), and its key is then allowed until the
 * certificate's not_after. Revocation lists from a known broker (or the CA)
 * remove the keys of revoked certificates at once and, through the
 * keyring's hook, veto them at every later check.
 *
 * Thread safety: the hook runs on the ZAP thread; every function here takes
 * the module's lock, so they may be called from another thread.
 */
#ifndef OVL_PEERS_H
#define OVL_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "ovl_cert.h"
#include "ovl_keyring.h"

#define OVL_PEERS_BROKERS_MAX 16

struct ovl_peers;

/*
 * Trust ca_pk (the site CA's Ed25519 key) and feed `kr` (borrowed; it must
 * outlive the peers object, which installs itself as its hook). 0 or -ENOMEM.
 */
int ovl_peers_new(struct ovl_peers **out, const uint8_t ca_pk[OVL_ID_BYTES], ovl_keyring_t *kr);

/* Remove the hook, free, NULL *p. Accepts NULL. */
void ovl_peers_destroy(struct ovl_peers **p);

/* Learn a broker certificate (verified against the CA at `now`). A newer
 * certificate of the same broker key replaces the older. */
int ovl_peers_add_broker(struct ovl_peers *p, const uint8_t *buf, size_t len, uint64_t now,
			 char *err, size_t errlen);

/*
 * Verify a node certificate against the known brokers and, if it is valid
 * and not revoked, allow its curve key until its not_after. *out (may be
 * NULL) receives the decoded certificate. Errors as ovl_cert_verify_chain;
 * -ENOKEY when no known broker issued it.
 */
int ovl_peers_admit(struct ovl_peers *p, const uint8_t *buf, size_t len, uint64_t now,
		    struct ovl_cert *out, char *err, size_t errlen);

/*
 * Apply a revocation list signed by a known broker or the CA (a newer
 * version replaces the older of the same issuer). Returns how many allowed
 * keys it removed, or -errno (-ESTALE for an old version, -ENOKEY for an
 * unknown issuer).
 */
int ovl_peers_update_crl(struct ovl_peers *p, const uint8_t *buf, size_t len, char *err,
			 size_t errlen);

#endif
