/*
 * ovl_keyring: the set of Curve25519 public keys allowed to open a
 * control-plane link.
 *
 * Each entry is (key[32], not_after, serial): the client's long-term CURVE
 * public key, the last unix second at which it is valid (inclusive, like a
 * certificate's notAfter) and an opaque 64-bit tag, the serial of the
 * certificate that vouched for the key. Verified certificates become entries
 * with ovl_keyring_add(); a revoked certificate is removed with
 * ovl_keyring_revoke_tag().
 *
 * Deny by default: a key is allowed only if it is in the ring and not
 * expired, unless a hook (below) decides otherwise.
 *
 * Threading: every function is thread-safe. The ZAP handler thread and the
 * threads that own server sockets call ovl_keyring_check() concurrently with
 * the threads that add and revoke keys. Changes affect the next check; a
 * check already running sees the ring before or after, never half of a change.
 *
 * Ownership: the keyring owns its entries (copies of the keys). Whoever
 * calls ovl_keyring_new() destroys it, after every ZAP domain that uses it
 * has been unregistered or its ZAP handler destroyed.
 */
#ifndef OVL_KEYRING_H
#define OVL_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#define OVL_KEY_BYTES 32                /* a raw Curve25519 key */
#define OVL_KEYRING_MAX_KEYS (1u << 20) /* entries in one keyring */
#define OVL_KEYRING_NO_EXPIRY UINT64_MAX /* not_after for keys that never expire */

typedef struct ovl_keyring ovl_keyring_t;

struct ovl_keyring_entry {
	uint8_t key[OVL_KEY_BYTES];
	uint64_t not_after; /* unix seconds, inclusive */
	uint64_t serial;    /* opaque tag: the vouching certificate's serial */
};

/*
 * The hook: a second opinion after the ring's own verdict, so that later code
 * can consult a revocation list or a certificate store.
 *
 * `verdict` is what the ring decided: 0 (present and unexpired), -ENOENT
 * (unknown key) or -EKEYEXPIRED. `entry` is the ring's entry, or NULL when the
 * key is unknown. The hook returns the final verdict: 0 allows, a negative
 * errno denies (-EKEYREVOKED is the natural answer of a revocation list).
 * A hook that turns -ENOENT into 0 admits keys the ring does not hold; that
 * is a policy decision (an enrolment window) and should be rare.
 *
 * It runs on the thread that called ovl_keyring_check() (usually the ZAP
 * handler thread), with the keyring read-locked: it must be thread-safe,
 * must not block for long (every CURVE handshake in the context waits on
 * it) and must not call ovl_keyring_* on the same keyring.
 */
typedef int (*ovl_keyring_hook_fn)(void *arg, const uint8_t key[OVL_KEY_BYTES],
				   const struct ovl_keyring_entry *entry, uint64_t now,
				   int verdict);

/* An empty keyring, or NULL when out of memory. */
ovl_keyring_t *ovl_keyring_new(void);

/* Free the keyring and NULL *krp. Accepts NULL and a NULL *krp. */
void ovl_keyring_destroy(ovl_keyring_t **krp);

/*
 * Allow `key` until `not_after` (unix seconds, inclusive), tagged `serial`.
 * Adding a key that is already present replaces its expiry and serial (a
 * renewed certificate). Returns 0, -ENOSPC when the ring holds
 * OVL_KEYRING_MAX_KEYS entries, or -ENOMEM.
 */
int ovl_keyring_add(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES], uint64_t not_after,
		    uint64_t serial);

/* Forget `key`. Returns 0, or -ENOENT when it was not in the ring. */
int ovl_keyring_remove(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES]);

/* Remove every key tagged `serial`. Returns how many were removed (>= 0). */
int ovl_keyring_revoke_tag(ovl_keyring_t *kr, uint64_t serial);

/* Remove every key whose not_after is before `now`. Returns how many (>= 0). */
int ovl_keyring_expire(ovl_keyring_t *kr, uint64_t now);

/*
 * May `key` authenticate at unix time `now`? Returns 0 (allowed), -ENOENT
 * (unknown key), -EKEYEXPIRED (now > not_after), or whatever the hook
 * returned.
 */
int ovl_keyring_check(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES], uint64_t now);

/* Copy the entry of `key` into *out. Returns 0 or -ENOENT. Ignores the hook. */
int ovl_keyring_lookup(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES],
		       struct ovl_keyring_entry *out);

/* The number of entries. */
size_t ovl_keyring_count(ovl_keyring_t *kr);

/*
 * Install (or with fn == NULL remove) the hook. When this returns, no check
 * still runs the previous hook, so its arg may be freed.
 */
void ovl_keyring_hook_set(ovl_keyring_t *kr, ovl_keyring_hook_fn fn, void *arg);

/* A hook that admits every key (the server that checks identities itself,
 * above the link, as the broker does). */
int ovl_keyring_admit_any(void *arg, const uint8_t key[OVL_KEY_BYTES],
			  const struct ovl_keyring_entry *entry, uint64_t now, int verdict);

#endif
