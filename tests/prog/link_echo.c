/*
 * link_echo: an ovl_link server for tests written in other languages.
 *
 *   link_echo ALLOWED_KEY_HEX [SECONDS]
 *
 * Starts a ZAP handler with one allowed client key (domain shelf.peer, valid
 * for an hour), binds a CURVE server on tcp://127.0.0.1:* and prints
 *
 *   endpoint=<the bound endpoint>
 *   server_key=<the server's public key, 64 hex digits>
 *
 * Then it answers every message with "<sender key hex> <payload>" until a
 * message "quit" arrives (not answered: a reply that races our close could be
 * lost, see docs/PROTOCOL.md 5.5) or SECONDS (default 20) pass, and prints
 *
 *   received=<n> dropped_unauthorised=<n> zap_allowed=<n> zap_denied=<n>
 *
 * Exit status 0, or 1 on a setup error (said on stderr).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "overlay.h"

#define ECHO_BUF_BYTES (64 * 1024)
#define ECHO_POLL_MS 200

static int hex_decode(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
}

int main(int argc, char **argv)
{
	uint8_t allowed[OVL_KEY_BYTES], pk[OVL_KEY_BYTES], sk[OVL_KEY_BYTES];
	char ep[OVL_LINK_ENDPOINT_MAX_CHARS], hex[2 * OVL_KEY_BYTES + 1], err[256] = "";
	struct ovl_link_server_cfg cfg = { 0 };
	struct ovl_link_server_stats ss;
	struct ovl_zap_stats zs;
	ovl_link_server_t *srv = NULL;
	ovl_keyring_t *kr = NULL;
	ovl_zap_t *zap = NULL;
	void *ctx = NULL;
	char *buf = NULL, *reply = NULL;
	time_t end;
	int rc = 1, seconds = argc > 2 ? atoi(argv[2]) : 20;

	if (argc < 2 || hex_decode(argv[1], allowed, sizeof(allowed)) < 0) {
		fprintf(stderr, "usage: link_echo ALLOWED_KEY_HEX [SECONDS]\n");
		return 1;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "link_echo: cannot initialise libsodium\n");
		return 1;
	}
	crypto_box_keypair(pk, sk);
	buf = malloc(ECHO_BUF_BYTES);
	reply = malloc(ECHO_BUF_BYTES + sizeof(hex) + 1);
	ctx = zmq_ctx_new();
	kr = ovl_keyring_new();
	if (!buf || !reply || !ctx || !kr) {
		snprintf(err, sizeof(err), "out of memory");
		goto out;
	}
	if (ovl_zap_new(&zap, ctx, err, sizeof(err)) < 0)
		goto out;
	ovl_keyring_add(kr, allowed, (uint64_t)time(NULL) + 3600, 1);
	ovl_zap_domain_set(zap, OVL_LINK_DOMAIN_PEER, kr);
	cfg.endpoint = "tcp://127.0.0.1:*";
	cfg.domain = OVL_LINK_DOMAIN_PEER;
	cfg.secret_key = sk;
	if (ovl_link_server_new(&srv, zap, &cfg, err, sizeof(err)) < 0)
		goto out;
	ovl_link_server_endpoint(srv, ep, sizeof(ep));
	hex_encode(pk, sizeof(pk), hex);
	printf("endpoint=%s\nserver_key=%s\n", ep, hex);
	fflush(stdout);

	end = time(NULL) + seconds;
	while (time(NULL) < end) {
		struct ovl_link_peer from;
		int n = ovl_link_server_recv(srv, &from, buf, ECHO_BUF_BYTES, ECHO_POLL_MS);
		int m;

		if (n == -ETIMEDOUT || n == -EMSGSIZE)
			continue;
		if (n < 0) {
			snprintf(err, sizeof(err), "receive: %s", strerror(-n));
			goto out;
		}
		if (n == 4 && memcmp(buf, "quit", 4) == 0)
			break;
		hex_encode(from.key, sizeof(from.key), hex);
		m = snprintf(reply, sizeof(hex) + 1, "%s ", hex);
		memcpy(reply + m, buf, (size_t)n);
		ovl_link_server_send(srv, &from, reply, (size_t)(m + n), 1000);
	}
	ovl_link_server_stats_get(srv, &ss);
	ovl_zap_stats_get(zap, &zs);
	printf("received=%llu dropped_unauthorised=%llu zap_allowed=%llu zap_denied=%llu\n",
	       (unsigned long long)ss.received, (unsigned long long)ss.dropped_unauthorised,
	       (unsigned long long)zs.allowed, (unsigned long long)zs.denied);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "link_echo: %s\n", err);
	ovl_link_server_destroy(&srv);
	ovl_zap_destroy(&zap);
	ovl_keyring_destroy(&kr);
	if (ctx)
		zmq_ctx_term(ctx);
	free(buf);
	free(reply);
	return rc;
}
