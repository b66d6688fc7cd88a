/*
 * The CLI's pure parts (tools/shelf/text.c): the --range grammar, keys
 * quoted for `ls` lines as git quotes paths, keys in JSON as key or
 * key_hex; and the data-plane driver's error text and deadline when a
 * node hangs up or says nothing during the handshake (ovl_dpc_conn).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
/* the CLI's helpers are built into the shelf program, not an archive */
#include "tools/shelf/json.c"
#include "tools/shelf/text.c"

static void range_ok(const char *s, uint64_t off, uint64_t len)
{
	uint64_t o = 7, l = 7;
	char err[256] = "";

	if (cli_range_parse(s, &o, &l, err, sizeof(err)) != 0)
		fail_msg("'%s' refused: %s", s, err);
	assert_int_equal(o, off);
	assert_int_equal(l, len);
}

static void range_bad(const char *s)
{
	uint64_t o = 7, l = 7;
	char err[256] = "";

	if (cli_range_parse(s, &o, &l, err, sizeof(err)) != -EINVAL)
		fail_msg("'%s' accepted as %llu+%llu", s, (unsigned long long)o, (unsigned long long)l);
	if (!strstr(err, "--range"))
		fail_msg("'%s': the error does not name --range: %s", s, err);
	assert_int_equal(o, 7);
	assert_int_equal(l, 7);
}

static void test_range(void **state)
{
	range_ok("0-0", 0, 1);
	range_ok("2-5", 2, 4);
	range_ok("1001-5000", 1001, 4000);
	range_ok("7-", 7, UINT64_MAX);
	range_ok("0-", 0, UINT64_MAX);
	range_ok("0-67108863", 0, 64u << 20);
	range_ok("100-67108963", 100, 64u << 20);
	range_ok("67108864-", 64u << 20, UINT64_MAX);
	/* no 64 MiB limit since large objects (chunks): offsets up to INT64_MAX */
	range_ok("67108865-", 67108865, UINT64_MAX);
	range_ok("0-1073741823", 0, 1u << 30);
	range_ok("9223372036854775807-", INT64_MAX, UINT64_MAX);
	range_bad("9223372036854775808-");
	range_bad("0-9223372036854775808");
	range_bad("18446744073709551615-");
	range_bad("1-2-3");
	range_bad("2-5xyz");
	range_bad("5-2");
	range_bad("");
	range_bad("-");
	range_bad("-5");
	range_bad("5");
	range_bad("+1-2");
	range_bad("1-+2");
	range_bad(" 1-2");
	range_bad("1-2 ");
	range_bad("1 -2");
	range_bad("0x1-2");
	range_bad("a-b");
	range_bad("1--2");
	range_bad("18446744073709551616-");
	range_bad("0-18446744073709551616");
	range_ok("0-67108864", 0, (64u << 20) + 1); /* 64 MiB + 1: no limit since large objects */
	{
		uint64_t o, l;
		char err[256];

		/* the limit is INT64_MAX now (objects of any size), and the error says it */
		assert_int_equal(cli_range_parse("0-99999999", &o, &l, err, sizeof(err)), 0);
		assert_int_equal(cli_range_parse("0-9223372036854775808", &o, &l, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "at most 9223372036854775807"));
	}
}

/* What fn prints for key[0..n). */
static char *render(void (*fn)(FILE *, const void *, size_t), const char *key, size_t n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	fn(f, key, n);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void quoted(const char *key, size_t n, const char *want)
{
	char *got = render(cli_key_quote, key, n);

	if (strcmp(got, want) != 0)
		fail_msg("quote: got [%s], want [%s]", got, want);
	free(got);
}

static void test_quote(void **state)
{
	quoted("plain/key", 9, "plain/key");
	quoted("with space", 10, "with space");
	quoted("\xc3\xbf", 2, "\xc3\xbf"); /* ÿ: valid UTF-8, as it is */
	quoted("a\xe2\x82\xac", 4, "a\xe2\x82\xac");
	quoted("a\nb", 3, "\"a\\nb\"");
	quoted("t\tab", 4, "\"t\\tab\"");
	quoted("q\"u\\o", 5, "\"q\\\"u\\\\o\"");
	quoted("\xff", 1, "\"\\377\"");
	quoted("x\xc3", 2, "\"x\\303\"");     /* a cut sequence */
	quoted("\xc0\xaf", 2, "\"\\300\\257\""); /* overlong */
	quoted("\xed\xa0\x80", 3, "\"\\355\\240\\200\""); /* a surrogate */
	quoted("n\0ul", 4, "\"n\\000ul\"");
	quoted("\x1b[0m", 4, "\"\\033[0m\"");
	quoted("del\x7f", 4, "\"del\\177\"");
	quoted("\a\b\v\f\r", 5, "\"\\a\\b\\v\\f\\r\"");
	assert_true(cli_utf8_valid("\xc3\xbf", 2));
	assert_false(cli_utf8_valid("\xff", 1));
	assert_true(cli_utf8_valid("", 0));
}

static void json_key(const char *key, size_t n, const char *want)
{
	char *got = render(cli_json_key, key, n);

	if (strcmp(got, want) != 0)
		fail_msg("json key: got [%s], want [%s]", got, want);
	free(got);
}

static void test_json_key(void **state)
{
	json_key("a", 1, "\"key\": \"a\"");
	json_key("\xc3\xbf", 2, "\"key\": \"\xc3\xbf\"");
	json_key("\xff", 1, "\"key_hex\": \"ff\"");
	json_key("a\nb", 3, "\"key\": \"a\\nb\"");
	json_key("q\"u\\o", 5, "\"key\": \"q\\\"u\\\\o\"");
	json_key("n\0l", 3, "\"key\": \"n\\u0000l\"");
	json_key("x\xc3\xbf\xfe", 4, "\"key_hex\": \"78c3bffe\"");
}

/* ---- the data-plane driver: a node that hangs up, or says nothing ---- */

struct conn_fx {
	struct ovl_id *ca, *broker, *client;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], client_cert[OVL_CERT_MAX_BYTES];
	int broker_len, client_len;
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	int lfd;
	struct sockaddr_in6 sa;
};

static int sign(const struct ovl_id *subject, enum ovl_role role, const struct ovl_id *issuer,
		uint64_t now, uint8_t *out)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subject);
	c.serial = 1;
	c.role = role;
	c.not_before = now - 60;
	c.not_after = now + 3600;
	if (role == OVL_ROLE_CLIENT)
		assert_int_equal(ovl_cert_add_slice(&c, "hot", err, sizeof(err)), 0);
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static int conn_setup(void **state)
{
	struct conn_fx *f = calloc(1, sizeof(*f));
	uint64_t now = (uint64_t)time(NULL);
	socklen_t sl = sizeof(f->sa);
	char err[256];

	ovl_id_generate(&f->ca);
	ovl_id_generate(&f->broker);
	ovl_id_generate(&f->client);
	f->broker_len = sign(f->broker, OVL_ROLE_BROKER, f->ca, now, f->broker_cert);
	f->client_len = sign(f->client, OVL_ROLE_CLIENT, f->broker, now, f->client_cert);
	f->kr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers, f->ca->sign_pk, f->kr), 0);
	if (ovl_peers_add_broker(f->peers, f->broker_cert, f->broker_len, now, err, sizeof(err)) < 0)
		fail_msg("add broker: %s", err);
	f->lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	f->sa.sin6_family = AF_INET6;
	f->sa.sin6_addr = in6addr_loopback;
	if (bind(f->lfd, (struct sockaddr *)&f->sa, sizeof(f->sa)) < 0 || listen(f->lfd, 4) < 0 ||
	    getsockname(f->lfd, (struct sockaddr *)&f->sa, &sl) < 0) {
		close(f->lfd);
		f->lfd = -1;
	}
	*state = f;
	return 0;
}

static int conn_teardown(void **state)
{
	struct conn_fx *f = *state;

	if (f->lfd >= 0)
		close(f->lfd);
	ovl_peers_destroy(&f->peers);
	ovl_keyring_destroy(&f->kr);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->client);
	free(f);
	return 0;
}

static int conn_open(struct conn_fx *f, struct ovl_dpc_conn **cn)
{
	struct ovl_dpc_cfg cfg = { 0 };
	char err[OVL_DPC_ERR_BYTES];
	int ret;

	cfg.id = f->client;
	cfg.cert = f->client_cert;
	cfg.cert_len = (size_t)f->client_len;
	cfg.peers = f->peers;
	cfg.now = (uint64_t)time(NULL);
	cfg.slice = "hot";
	cfg.name = "node test";
	ret = ovl_dpc_conn_open(cn, &f->sa, &cfg, 1000, err, sizeof(err));
	if (ret < 0)
		fail_msg("open: %s", err);
	return ret;
}

/* The node reads the HELLO and closes the connection. */
/* `shelf status`: which hint counters count for which node */
static void test_hints_for(void **state)
{
	const char *id = "1a2b3c4d5e6f7a8b99aabbccddeeff00112233445566778899aabbccddeeff00";

	(void)state;
	assert_int_equal(cli_hints_for("hints_for_1a2b3c4d5e6f7a8b", 7, id), 7);
	assert_int_equal(cli_hints_for("hints_for_1a2b3c4d", 5, id), 5);     /* 8 digits */
	assert_int_equal(cli_hints_for("hints_for_1a2b3c4", 5, id), 0);      /* too short */
	assert_int_equal(cli_hints_for(
		"hints_for_1a2b3c4d5e6f7a8b99aabbccddeeff00112233445566778899aabbccddeeff00", 9,
		id), 9);                                                         /* all 64 */
	assert_int_equal(cli_hints_for(
		"hints_for_1a2b3c4d5e6f7a8b99aabbccddeeff00112233445566778899aabbccddeeff001", 9,
		id), 0);                                                         /* 65 */
	assert_int_equal(cli_hints_for("hints_for_1a2b3c4d5e6f7a8c", 7, id), 0); /* another node */
	assert_int_equal(cli_hints_for("hints_for_1A2B3C4D5E6F7A8B", 7, id), 0); /* upper case */
	assert_int_equal(cli_hints_for("hints_for_1a2b3c4d5e6f7a8b ", 7, id), 0);
	assert_int_equal(cli_hints_for("hints_for_", 7, id), 0);
	assert_int_equal(cli_hints_for("hints_waiting", 7, id), 0);
	assert_int_equal(cli_hints_for("objects", 7, id), 0);
	assert_int_equal(cli_hints_for("hint_for_1a2b3c4d5e6f7a8b", 7, id), 0);
}

/* The path rule of `get --batch --out` and `stage`, and the bar's text. */
static void test_path_and_bar(void **state)
{
	char why[128], line[256], big[300];

	(void)state;
	assert_null(cli_path_refusal("a/b/c.bin", 9, why, sizeof(why)));
	assert_null(cli_path_refusal("..a/b.", 6, why, sizeof(why)));
	assert_non_null(cli_path_refusal("", 0, why, sizeof(why)));
	assert_non_null(cli_path_refusal("/abs", 4, why, sizeof(why)));
	assert_non_null(cli_path_refusal("a//b", 4, why, sizeof(why)));
	assert_non_null(cli_path_refusal("a/", 2, why, sizeof(why)));
	assert_non_null(cli_path_refusal("a/../b", 6, why, sizeof(why)));
	assert_non_null(cli_path_refusal("./b", 3, why, sizeof(why)));
	assert_non_null(cli_path_refusal("a\0b", 3, why, sizeof(why)));
	assert_non_null(cli_path_refusal("\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe" "C", 9, why, sizeof(why)));
	memset(big, 'x', sizeof(big));
	assert_string_equal(cli_path_refusal(big, 256, why, sizeof(why)),
			    "a path component of the key is 256 bytes, at most 255");
	assert_null(cli_path_refusal(big, 255, why, sizeof(why)));
	cli_bar_text(line, sizeof(line), "stage", 10, 40, 1 << 20, 4 << 20, 2.0);
	assert_string_equal(line, "stage [#######                       ]  25% 10/40 files "
				  "1.0/4.0 MiB 0.5 MB/s ETA 0:06");
	cli_bar_text(line, sizeof(line), "get", 0, 0, 4 << 20, 4 << 20, 1.0);
	assert_string_equal(line, "get [##############################] 100% 4.0/4.0 MiB 4.2 MB/s");
	cli_bar_text(line, sizeof(line), "put", 0, 0, 0, 0, 0.0);
	assert_string_equal(line, "put [##############################] 100% 0.0/0.0 MiB 0.0 MB/s");
}

static void test_hangup_in_handshake(void **state)
{
	struct conn_fx *f = *state;
	struct ovl_dpc_conn *cn = NULL;
	char err[OVL_DPC_ERR_BYTES];
	pid_t pid;
	int st, ret;

	if (f->lfd < 0)
		skip();
	conn_open(f, &cn);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t buf[4096];
		int a = accept(f->lfd, NULL, NULL);

		if (a >= 0 && recv(a, buf, sizeof(buf), 0) > 0)
			close(a);
		_exit(0);
	}
	memset(err, 0x05, sizeof(err)); /* what an uninitialised buffer may hold */
	ret = ovl_dpc_conn_handshake(cn, 2000, err, sizeof(err));
	waitpid(pid, &st, 0);
	assert_int_equal(ret, -ECONNRESET);
	assert_string_equal(err, "connection closed by the node during the handshake");
	ovl_dpc_conn_close(&cn);
}

/* The node accepts and says nothing: the handshake ends at the timeout,
 * as a whole. */
static void test_silent_node_timed(void **state)
{
	struct conn_fx *f = *state;
	struct ovl_dpc_conn *cn = NULL;
	char err[OVL_DPC_ERR_BYTES] = "";
	uint64_t t0;
	int ret;

	if (f->lfd < 0)
		skip();
	conn_open(f, &cn); /* the kernel's backlog answers the connect */
	t0 = ovl_mono_ms();
	ret = ovl_dpc_conn_handshake(cn, 300, err, sizeof(err));
	t0 = ovl_mono_ms() - t0;
	assert_int_equal(ret, -ETIMEDOUT);
	assert_string_equal(err, "no answer in time");
	if (t0 < 290 || t0 > 800)
		fail_msg("a 300 ms handshake took %llu ms", (unsigned long long)t0);
	ovl_dpc_conn_close(&cn);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_range),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_json_key),
		cmocka_unit_test(test_hints_for),
		cmocka_unit_test(test_path_and_bar),
		cmocka_unit_test_setup_teardown(test_hangup_in_handshake, conn_setup, conn_teardown),
		cmocka_unit_test_setup_teardown(test_silent_node_timed, conn_setup, conn_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
