#include "ovl_keyring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/*
 * A sorted array searched by bisection. Keys come from certificates (trusted
 * inserts) but lookups come from anyone who opens a TCP connection, so the
 * structure must have no worst case an attacker can choose: no hashing.
 */
struct ovl_keyring {
	pthread_rwlock_t lock;
	struct ovl_keyring_entry *v; /* sorted by key, memcmp order */
	size_t n;                    /* entries in use */
	size_t cap;                  /* entries allocated */
	ovl_keyring_hook_fn hook;
	void *hook_arg;
};

/* Index of `key`, or of where it would be inserted; *found says which. */
static size_t find(const ovl_keyring_t *kr, const uint8_t *key, int *found)
{
	size_t lo = 0, hi = kr->n;

	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(kr->v[mid].key, key, OVL_KEY_BYTES);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

ovl_keyring_t *ovl_keyring_new(void)
{
	ovl_keyring_t *kr = calloc(1, sizeof(*kr));

	if (!kr)
		return NULL;
	if (pthread_rwlock_init(&kr->lock, NULL) != 0) {
		free(kr);
		return NULL;
	}
	return kr;
}

void ovl_keyring_destroy(ovl_keyring_t **krp)
{
	ovl_keyring_t *kr = krp ? *krp : NULL;

	if (!kr)
		return;
	pthread_rwlock_destroy(&kr->lock);
	/* the keys are not secret, but there is no reason to leave them behind */
	if (kr->v)
		memset(kr->v, 0, kr->cap * sizeof(*kr->v));
	free(kr->v);
	free(kr);
	*krp = NULL;
}

int ovl_keyring_add(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES], uint64_t not_after,
		    uint64_t serial)
{
	struct ovl_keyring_entry *nv = NULL;
	size_t i;
	int found = 0, rc = 0;

	pthread_rwlock_wrlock(&kr->lock);
	i = find(kr, key, &found);
	if (found) {
		kr->v[i].not_after = not_after;
		kr->v[i].serial = serial;
		goto out;
	}
	if (kr->n >= OVL_KEYRING_MAX_KEYS) {
		rc = -ENOSPC;
		goto out;
	}
	if (kr->n == kr->cap) {
		size_t ncap = kr->cap ? kr->cap * 2 : 16;

		nv = realloc(kr->v, ncap * sizeof(*nv));
		if (!nv) {
			rc = -ENOMEM;
			goto out;
		}
		kr->v = nv;
		kr->cap = ncap;
	}
	memmove(&kr->v[i + 1], &kr->v[i], (kr->n - i) * sizeof(*kr->v));
	memcpy(kr->v[i].key, key, OVL_KEY_BYTES);
	kr->v[i].not_after = not_after;
	kr->v[i].serial = serial;
	kr->n++;
out:
	pthread_rwlock_unlock(&kr->lock);
	return rc;
}

int ovl_keyring_remove(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES])
{
	size_t i;
	int found = 0, rc = 0;

	pthread_rwlock_wrlock(&kr->lock);
	i = find(kr, key, &found);
	if (!found) {
		rc = -ENOENT;
		goto out;
	}
	memmove(&kr->v[i], &kr->v[i + 1], (kr->n - i - 1) * sizeof(*kr->v));
	kr->n--;
out:
	pthread_rwlock_unlock(&kr->lock);
	return rc;
}

/* Keeps the entries for which drop() is false, in order; returns how many went. */
static int sweep(ovl_keyring_t *kr, int (*drop)(const struct ovl_keyring_entry *, uint64_t),
		 uint64_t arg)
{
	size_t r, w = 0;
	int gone = 0;

	pthread_rwlock_wrlock(&kr->lock);
	for (r = 0; r < kr->n; r++) {
		if (drop(&kr->v[r], arg)) {
			gone++;
			continue;
		}
		if (w != r)
			kr->v[w] = kr->v[r];
		w++;
	}
	kr->n = w;
	pthread_rwlock_unlock(&kr->lock);
	return gone;
}

static int tagged(const struct ovl_keyring_entry *e, uint64_t serial)
{
	return e->serial == serial;
}

static int expired(const struct ovl_keyring_entry *e, uint64_t now)
{
	return now > e->not_after;
}

int ovl_keyring_revoke_tag(ovl_keyring_t *kr, uint64_t serial)
{
	return sweep(kr, tagged, serial);
}

int ovl_keyring_expire(ovl_keyring_t *kr, uint64_t now)
{
	return sweep(kr, expired, now);
}

int ovl_keyring_check(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES], uint64_t now)
{
	const struct ovl_keyring_entry *e = NULL;
	size_t i;
	int found = 0, verdict = -ENOENT;

	pthread_rwlock_rdlock(&kr->lock);
	i = find(kr, key, &found);
	if (found) {
		e = &kr->v[i];
		verdict = now > e->not_after ? -EKEYEXPIRED : 0;
	}
	if (kr->hook)
		verdict = kr->hook(kr->hook_arg, key, e, now, verdict);
	pthread_rwlock_unlock(&kr->lock);
	/* a hook that answers nonsense (a positive value) must not allow */
	return verdict > 0 ? -EACCES : verdict;
}

int ovl_keyring_lookup(ovl_keyring_t *kr, const uint8_t key[OVL_KEY_BYTES],
		       struct ovl_keyring_entry *out)
{
	size_t i;
	int found = 0;

	pthread_rwlock_rdlock(&kr->lock);
	i = find(kr, key, &found);
	if (found)
		*out = kr->v[i];
	pthread_rwlock_unlock(&kr->lock);
	return found ? 0 : -ENOENT;
}

size_t ovl_keyring_count(ovl_keyring_t *kr)
{
	size_t n;

	pthread_rwlock_rdlock(&kr->lock);
	n = kr->n;
	pthread_rwlock_unlock(&kr->lock);
	return n;
}

void ovl_keyring_hook_set(ovl_keyring_t *kr, ovl_keyring_hook_fn fn, void *arg)
{
	pthread_rwlock_wrlock(&kr->lock);
	kr->hook = fn;
	kr->hook_arg = arg;
	pthread_rwlock_unlock(&kr->lock);
}

int ovl_keyring_admit_any(void *arg, const uint8_t key[OVL_KEY_BYTES],
			  const struct ovl_keyring_entry *entry, uint64_t now, int verdict)
{
	(void)arg;
	(void)key;
	(void)entry;
	(void)now;
	(void)verdict;
	return 0;
}
