#include "ovl_zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "ovl_util.h"

#define ZAP_VERSION "1.0"
#define ZAP_FRAMES_MAX 8 /* version, id, domain, address, identity, mechanism, 2 credentials */

struct zap_domain {
	char name[OVL_ZAP_DOMAIN_MAX_CHARS + 1]; /* "" = free slot */
	ovl_keyring_t *kr;                       /* borrowed */
};

struct ovl_zap {
	void *zctx;   /* borrowed */
	void *sock;   /* REP bound to OVL_ZAP_ENDPOINT; the thread's once it runs */
	int stop_fd;  /* eventfd: written once by ovl_zap_destroy() */
	pthread_t thread;
	bool thread_started;
	atomic_bool running;

	pthread_rwlock_t lock; /* domains and clock */
	struct zap_domain dom[OVL_ZAP_DOMAINS_MAX];
	ovl_clock_unix_fn clock;
	void *clock_arg;

	pthread_mutex_t stats_lock;
	struct ovl_zap_stats stats;
};

static uint64_t clock_system(void *arg)
{
	time_t t = time(NULL);

	return t < 0 ? 0 : (uint64_t)t;
}

/* The keyring registered for domain[0..len), or NULL; call with zap->lock held. */
static ovl_keyring_t *domain_find_locked(ovl_zap_t *zap, const char *domain, size_t len)
{
	if (len == 0 || len > OVL_ZAP_DOMAIN_MAX_CHARS)
		return NULL;
	for (size_t i = 0; i < OVL_ZAP_DOMAINS_MAX; i++) {
		if (zap->dom[i].kr && strlen(zap->dom[i].name) == len &&
		    memcmp(zap->dom[i].name, domain, len) == 0)
			return zap->dom[i].kr;
	}
	return NULL;
}

enum verdict_kind { V_ALLOWED, V_KEY, V_MECHANISM, V_DOMAIN, V_MALFORMED };

static void count(ovl_zap_t *zap, enum verdict_kind kind)
{
	pthread_mutex_lock(&zap->stats_lock);
	zap->stats.requests++;
	if (kind == V_ALLOWED)
		zap->stats.allowed++;
	else
		zap->stats.denied++;
	if (kind == V_MECHANISM)
		zap->stats.denied_mechanism++;
	else if (kind == V_DOMAIN)
		zap->stats.denied_domain++;
	else if (kind == V_MALFORMED)
		zap->stats.malformed++;
	pthread_mutex_unlock(&zap->stats_lock);
}

static int frame_is(zmq_msg_t *m, const char *s)
{
	size_t n = strlen(s);

	return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* Sends the six reply frames; returns 0 or -errno (-ETERM ends the thread). */
static int reply(void *sock, zmq_msg_t *reqid, const char *status, const char *text,
		 const char *user_id)
{
	const void *id = reqid ? zmq_msg_data(reqid) : "";
	size_t idlen = reqid ? zmq_msg_size(reqid) : 0;

	if (zmq_send(sock, ZAP_VERSION, strlen(ZAP_VERSION), ZMQ_SNDMORE) < 0 ||
	    zmq_send(sock, id, idlen, ZMQ_SNDMORE) < 0 ||
	    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE) < 0 ||
	    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE) < 0 ||
	    zmq_send(sock, user_id, strlen(user_id), ZMQ_SNDMORE) < 0 ||
	    zmq_send(sock, "", 0, 0) < 0)
		return -errno;
	return 0;
}

static const char *denial_text(int verdict)
{
	switch (verdict) {
	case -ENOENT: return "key not in keyring";
	case -EKEYEXPIRED: return "key expired";
	case -EKEYREVOKED: return "key revoked";
	default: return "key refused";
	}
}

/*
 * Decides on the request f[0..nf); sets the status and text of the reply and,
 * when allowed, the User-Id. Returns what kind of verdict it was.
 */
static enum verdict_kind decide(ovl_zap_t *zap, zmq_msg_t *f, size_t nf, bool too_many,
				const char **status, const char **text, char *user_id)
{
	ovl_keyring_t *kr = NULL;
	int verdict = -ENOENT;

	*status = "400";
	*text = "malformed request";
	if (too_many || nf < 6 || !frame_is(&f[0], ZAP_VERSION))
		return V_MALFORMED;
	if (!frame_is(&f[5], "CURVE")) {
		*text = "mechanism refused: only CURVE is allowed";
		return V_MECHANISM;
	}
	if (nf != 7 || zmq_msg_size(&f[6]) != OVL_KEY_BYTES)
		return V_MALFORMED;

	pthread_rwlock_rdlock(&zap->lock);
	kr = domain_find_locked(zap, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]));
	if (kr)
		verdict = ovl_keyring_check(kr, zmq_msg_data(&f[6]), zap->clock(zap->clock_arg));
	pthread_rwlock_unlock(&zap->lock);
	if (!kr) {
		*text = "unknown domain";
		return V_DOMAIN;
	}
	if (verdict != 0) {
		*text = denial_text(verdict);
		return V_KEY;
	}
	*status = "200";
	*text = "OK";
	ovl_hex_encode(zmq_msg_data(&f[6]), OVL_KEY_BYTES, user_id);
	return V_ALLOWED;
}

/* Answers one request. Returns 0, or -errno (-ETERM: the context is going away). */
static int handle_one(ovl_zap_t *zap)
{
	zmq_msg_t f[ZAP_FRAMES_MAX];
	char user_id[OVL_ZAP_USER_ID_CHARS + 1] = "";
	const char *status = NULL, *text = NULL;
	enum verdict_kind kind;
	bool too_many = false;
	size_t nf = 0;
	int more = 1, rc = 0;

	/* a multipart message arrives whole, so nothing here can block */
	while (more) {
		zmq_msg_t extra;
		zmq_msg_t *m = nf < ZAP_FRAMES_MAX ? &f[nf] : &extra;

		zmq_msg_init(m);
		if (zmq_msg_recv(m, zap->sock, ZMQ_DONTWAIT) < 0) {
			rc = -errno;
			zmq_msg_close(m);
			goto out;
		}
		more = zmq_msg_more(m);
		if (m == &extra) {
			zmq_msg_close(m);
			too_many = true;
		} else {
			nf++;
		}
	}
	kind = decide(zap, f, nf, too_many, &status, &text, user_id);
	count(zap, kind);
	rc = reply(zap->sock, nf >= 2 ? &f[1] : NULL, status, text, user_id);
out:
	for (size_t i = 0; i < nf; i++)
		zmq_msg_close(&f[i]);
	return rc;
}

static void *zap_thread(void *arg)
{
	ovl_zap_t *zap = arg;

	for (;;) {
		zmq_pollitem_t items[2] = {
			{ zap->sock, 0, ZMQ_POLLIN, 0 },
			{ NULL, zap->stop_fd, ZMQ_POLLIN, 0 },
		};
		int rc = zmq_poll(items, 2, -1);

		if (rc < 0) {
			if (errno == EINTR)
				continue;
			break; /* ETERM: the context is being terminated */
		}
		if (items[1].revents & ZMQ_POLLIN)
			break;
		if ((items[0].revents & ZMQ_POLLIN) && handle_one(zap) == -ETERM)
			break;
	}
	atomic_store(&zap->running, false);
	zmq_close(zap->sock);
	zap->sock = NULL;
	return NULL;
}

int ovl_zap_new(ovl_zap_t **zapp, void *zctx, char *err, size_t errlen)
{
	ovl_zap_t *zap = NULL;
	int rc = 0, linger = 0;

	*zapp = NULL;
	if (!zmq_has("curve")) {
		snprintf(err, errlen, "cannot start ZAP handler: libzmq was built without CURVE");
		return -ENOTSUP;
	}
	zap = calloc(1, sizeof(*zap));
	if (!zap) {
		snprintf(err, errlen, "cannot start ZAP handler: out of memory");
		return -ENOMEM;
	}
	zap->zctx = zctx;
	zap->stop_fd = -1;
	zap->clock = clock_system;
	pthread_rwlock_init(&zap->lock, NULL);
	pthread_mutex_init(&zap->stats_lock, NULL);
	zap->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (zap->stop_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot start ZAP handler: eventfd: %s", strerror(-rc));
		goto out;
	}
	zap->sock = zmq_socket(zctx, ZMQ_REP);
	if (!zap->sock) {
		rc = -errno;
		snprintf(err, errlen, "cannot start ZAP handler: %s", zmq_strerror(-rc));
		goto out;
	}
	zmq_setsockopt(zap->sock, ZMQ_LINGER, &linger, sizeof(linger));
	if (zmq_bind(zap->sock, OVL_ZAP_ENDPOINT) < 0) {
		rc = -errno;
		if (rc == -EADDRINUSE)
			snprintf(err, errlen, "cannot bind '%s': this context already has a ZAP handler",
				 OVL_ZAP_ENDPOINT);
		else
			snprintf(err, errlen, "cannot bind '%s': %s", OVL_ZAP_ENDPOINT,
				 zmq_strerror(-rc));
		goto out;
	}
	atomic_store(&zap->running, true);
	/* from here on the socket belongs to the thread (pthread_create is a barrier) */
	rc = -pthread_create(&zap->thread, NULL, zap_thread, zap);
	if (rc < 0) {
		atomic_store(&zap->running, false);
		snprintf(err, errlen, "cannot start ZAP handler thread: %s", strerror(-rc));
		goto out;
	}
	zap->thread_started = true;
	*zapp = zap;
	zap = NULL;
out:
	ovl_zap_destroy(&zap);
	return rc;
}

void ovl_zap_destroy(ovl_zap_t **zapp)
{
	ovl_zap_t *zap = zapp ? *zapp : NULL;
	uint64_t one = 1;

	if (!zap)
		return;
	if (zap->thread_started) {
		if (write(zap->stop_fd, &one, sizeof(one)) != sizeof(one)) {
			/* an eventfd write only fails on overflow, which one write cannot reach */
		}
		pthread_join(zap->thread, NULL);
	} else if (zap->sock) {
		zmq_close(zap->sock);
	}
	if (zap->stop_fd >= 0)
		close(zap->stop_fd);
	pthread_rwlock_destroy(&zap->lock);
	pthread_mutex_destroy(&zap->stats_lock);
	free(zap);
	*zapp = NULL;
}

void *ovl_zap_context(ovl_zap_t *zap)
{
	return zap->zctx;
}

bool ovl_zap_running(ovl_zap_t *zap)
{
	return atomic_load(&zap->running);
}

int ovl_zap_domain_set(ovl_zap_t *zap, const char *domain, ovl_keyring_t *kr)
{
	size_t len = domain ? strlen(domain) : 0;
	int rc = 0, slot = -1, freeslot = -1;

	if (len == 0 || len > OVL_ZAP_DOMAIN_MAX_CHARS)
		return -EINVAL;
	pthread_rwlock_wrlock(&zap->lock);
	for (int i = 0; i < OVL_ZAP_DOMAINS_MAX; i++) {
		if (zap->dom[i].kr && strcmp(zap->dom[i].name, domain) == 0)
			slot = i;
		else if (!zap->dom[i].kr && freeslot < 0)
			freeslot = i;
	}
	if (!kr) {
		if (slot < 0) {
			rc = -ENOENT;
			goto out;
		}
		zap->dom[slot].kr = NULL;
		zap->dom[slot].name[0] = '\0';
		goto out;
	}
	if (slot < 0)
		slot = freeslot;
	if (slot < 0) {
		rc = -ENOSPC;
		goto out;
	}
	memcpy(zap->dom[slot].name, domain, len + 1);
	zap->dom[slot].kr = kr;
out:
	pthread_rwlock_unlock(&zap->lock);
	return rc;
}

bool ovl_zap_domain_known(ovl_zap_t *zap, const char *domain)
{
	bool known;

	pthread_rwlock_rdlock(&zap->lock);
	known = domain_find_locked(zap, domain, domain ? strlen(domain) : 0) != NULL;
	pthread_rwlock_unlock(&zap->lock);
	return known;
}

void ovl_zap_clock_set(ovl_zap_t *zap, ovl_clock_unix_fn fn, void *arg)
{
	pthread_rwlock_wrlock(&zap->lock);
	zap->clock = fn ? fn : clock_system;
	zap->clock_arg = fn ? arg : NULL;
	pthread_rwlock_unlock(&zap->lock);
}

uint64_t ovl_zap_now(ovl_zap_t *zap)
{
	uint64_t now;

	pthread_rwlock_rdlock(&zap->lock);
	now = zap->clock(zap->clock_arg);
	pthread_rwlock_unlock(&zap->lock);
	return now;
}

int ovl_zap_check(ovl_zap_t *zap, const char *domain, const uint8_t key[OVL_KEY_BYTES])
{
	ovl_keyring_t *kr = NULL;
	int rc = -ENOENT;

	pthread_rwlock_rdlock(&zap->lock);
	kr = domain_find_locked(zap, domain, domain ? strlen(domain) : 0);
	if (kr)
		rc = ovl_keyring_check(kr, key, zap->clock(zap->clock_arg));
	pthread_rwlock_unlock(&zap->lock);
	return rc;
}

void ovl_zap_stats_get(ovl_zap_t *zap, struct ovl_zap_stats *out)
{
	pthread_mutex_lock(&zap->stats_lock);
	*out = zap->stats;
	pthread_mutex_unlock(&zap->stats_lock);
}
