/*
 * ovl_zap: the ZAP handler (ZeroMQ RFC 27, ZAP 1.0) of one zmq context.
 *
 * Without a ZAP handler, a libzmq CURVE server accepts every client that
 * knows the server's public key. ovl_zap_new() binds a REP socket to
 * inproc://zeromq.zap.01 in the given context and answers every
 * authentication request of every socket in that context from its own
 * thread, denying by default:
 *  - mechanism CURVE, a registered domain, and the domain's keyring allows
 *    the client's key at the handler's clock: 200, User-Id = the key as 64
 *    lowercase hex digits;
 *  - anything else (mechanism NULL or PLAIN, an unknown or empty domain, a
 *    key the keyring refuses, a malformed request): 400.
 *
 * Domains map to keyrings, so one process can serve several audiences with
 * different rules (nodes, peers, admins) from one context: a key allowed in
 * one domain gets nothing in another.
 *
 * Threading: ovl_zap_new() and ovl_zap_destroy() must not race with each
 * other for the same handler; every other function is thread-safe and may
 * be called from any thread while the handler runs. The ZAP socket belongs
 * to the handler thread.
 *
 * Keyring hooks run on the handler thread under the handler's read lock: they
 * must not call ovl_zap_domain_set() or ovl_zap_clock_set(). The clock runs
 * under the same lock.
 *
 * Lifetime: destroy every server socket of the context, then the handler,
 * then terminate the context. (Terminating the context first also stops the
 * thread; ovl_zap_destroy() is still needed to free the handler.) Keyrings registered with ovl_zap_domain_set()
 * are borrowed and must outlive their registration.
 */
#ifndef OVL_ZAP_H
#define OVL_ZAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ovl_keyring.h"

#define OVL_ZAP_ENDPOINT "inproc://zeromq.zap.01" /* fixed by RFC 27 */
#define OVL_ZAP_DOMAINS_MAX 8                    /* domains per handler */
#define OVL_ZAP_DOMAIN_MAX_CHARS 64              /* longest domain name */
#define OVL_ZAP_USER_ID_CHARS 64                 /* hex of a 32-byte key */

typedef struct ovl_zap ovl_zap_t;

/* The clock seam: the current unix time in seconds. Boards without a real
 * time clock plug in broker-signed time here. */
typedef uint64_t (*ovl_clock_unix_fn)(void *arg);

/* Each ovl_link_server_new() adds one NULL-mechanism probe to requests,
 * denied and denied_mechanism. */
struct ovl_zap_stats {
	uint64_t requests; /* ZAP requests answered */
	uint64_t allowed;  /* answered 200 */
	uint64_t denied;   /* answered 400, including the three below */
	uint64_t denied_mechanism; /* NULL, PLAIN or unknown mechanism */
	uint64_t denied_domain;    /* no keyring registered for the domain */
	uint64_t malformed;        /* not a well-formed ZAP 1.0 request */
};

/*
 * Bind inproc://zeromq.zap.01 in `zctx` and start the handler thread.
 * On success stores the handler in *zapp and returns 0. Fails with
 * -EADDRINUSE when the context already has a ZAP handler, -ENOTSUP when
 * libzmq lacks CURVE, or another -errno; err says why.
 */
int ovl_zap_new(ovl_zap_t **zapp, void *zctx, char *err, size_t errlen);

/* Stop the thread, close the socket, free, NULL *zapp. Accepts NULL. */
void ovl_zap_destroy(ovl_zap_t **zapp);

/* The zmq context the handler serves (borrowed). */
void *ovl_zap_context(ovl_zap_t *zap);

/* True while the handler thread answers requests (false once the context
 * was terminated under it). */
bool ovl_zap_running(ovl_zap_t *zap);

/*
 * Register `kr` (borrowed) as the authority for `domain`, replacing any
 * previous keyring; kr == NULL unregisters the domain. When this returns, no
 * check still uses the previous keyring. Returns 0, -EINVAL for an empty or
 * over-long domain, -ENOSPC when OVL_ZAP_DOMAINS_MAX are registered, or
 * -ENOENT when unregistering an unknown domain.
 */
int ovl_zap_domain_set(ovl_zap_t *zap, const char *domain, ovl_keyring_t *kr);

/* True when `domain` has a keyring registered. */
bool ovl_zap_domain_known(ovl_zap_t *zap, const char *domain);

/* Replace the clock (NULL restores time(2)). Used for key expiry. */
void ovl_zap_clock_set(ovl_zap_t *zap, ovl_clock_unix_fn fn, void *arg);

/* The handler's current unix time, from its clock. */
uint64_t ovl_zap_now(ovl_zap_t *zap);

/*
 * The handler's verdict for `key` in `domain` now: 0, -ENOENT for an
 * unregistered domain, or the keyring's verdict. Server sockets call this
 * for every received message, so that removing a key also silences the
 * connections it already opened.
 */
int ovl_zap_check(ovl_zap_t *zap, const char *domain, const uint8_t key[OVL_KEY_BYTES]);

/* A snapshot of the counters. */
void ovl_zap_stats_get(ovl_zap_t *zap, struct ovl_zap_stats *out);

#endif
