/*
 * ovl_nl against the kernel: every change the library makes is checked
 * against what `ip -6 addr show` and `ip -6 route show` print.
 *
 * The process moves itself into a fresh network namespace first (as root:
 * unshare(CLONE_NEWNET); otherwise with a user namespace as well), so the
 * host's interfaces are never touched and everything vanishes at exit. Each
 * test gets a fresh veth pair veth0/veth1 with automatic link-local
 * addresses off, so that only addresses the test adds appear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "overlay.h"
#include "ovl_nl.h"
#include "ovl_slice.h"

#define IP_LINES_MAX 64
#define IP_LINE_BYTES 512

/* One "inet6" entry of `ip -6 addr show dev X`. */
struct ip_addr {
	char addr[64];   /* as ip prints it, without /plen */
	unsigned plen;
	char rest[256];  /* " scope global nodad ", words after the address */
};

struct fixture {
	struct ovl_nl *nl;
	char err[256];
};

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Runs cmd and stores up to max output lines (newline stripped); returns the count. */
static int lines_of(const char *cmd, char out[][IP_LINE_BYTES], int max)
{
	FILE *f = popen(cmd, "r");
	int n = 0;

	assert_non_null(f);
	while (n < max && fgets(out[n], IP_LINE_BYTES, f) != NULL) {
		out[n][strcspn(out[n], "\n")] = '\0';
		n++;
	}
	assert_int_equal(pclose(f), 0);
	return n;
}

static int ip_addrs(const char *dev, struct ip_addr *out, int max)
{
	char (*lines)[IP_LINE_BYTES] = calloc(IP_LINES_MAX, IP_LINE_BYTES);
	char cmd[128];
	int n = 0, nl;

	assert_non_null(lines);
	snprintf(cmd, sizeof(cmd), "ip -6 addr show dev %s", dev);
	nl = lines_of(cmd, lines, IP_LINES_MAX);
	for (int i = 0; i < nl && n < max; i++) {
		const char *p = lines[i] + strspn(lines[i], " ");
		const char *slash, *sp;

		if (strncmp(p, "inet6 ", 6) != 0)
			continue;
		p += 6;
		slash = strchr(p, '/');
		assert_non_null(slash);
		assert_true((size_t)(slash - p) < sizeof(out[n].addr));
		memcpy(out[n].addr, p, (size_t)(slash - p));
		out[n].addr[slash - p] = '\0';
		out[n].plen = (unsigned)strtoul(slash + 1, NULL, 10);
		sp = strchr(slash, ' ');
		snprintf(out[n].rest, sizeof(out[n].rest), "%s ", sp != NULL ? sp : "");
		n++;
	}
	free(lines);
	return n;
}

/* The index of the ip entry for addr (text as ip prints it); fails the test if none. */
static int ip_find(const struct ip_addr *a, int n, const char *addr)
{
	for (int i = 0; i < n; i++)
		if (strcmp(a[i].addr, addr) == 0)
			return i;
	fail_msg("ip does not show %s", addr);
	return 0;
}

/* True when `ip -6 route show` has a line starting with `want`. */
static bool ip_route_has(const char *want)
{
	char (*lines)[IP_LINE_BYTES] = calloc(IP_LINES_MAX, IP_LINE_BYTES);
	int n;
	bool found = false;

	assert_non_null(lines);
	n = lines_of("ip -6 route show", lines, IP_LINES_MAX);
	for (int i = 0; i < n; i++)
		if (strncmp(lines[i], want, strlen(want)) == 0)
			found = true;
	free(lines);
	return found;
}

/* The flags between <> of `ip link show dev`, with commas around: ",UP,". */
static void ip_link_flags(const char *dev, char *out, size_t outlen)
{
	char lines[4][IP_LINE_BYTES];
	char cmd[128];
	const char *lt, *gt;

	snprintf(cmd, sizeof(cmd), "ip link show dev %s", dev);
	assert_true(lines_of(cmd, lines, 4) >= 1);
	lt = strchr(lines[0], '<');
	gt = strchr(lines[0], '>');
	assert_non_null(lt);
	assert_non_null(gt);
	snprintf(out, outlen, ",%.*s,", (int)(gt - lt - 1), lt + 1);
}

static struct in6_addr a6(const char *s)
{
	struct in6_addr a;

	assert_int_equal(inet_pton(AF_INET6, s, &a), 1);
	return a;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(sh("ip link add veth0 type veth peer name veth1"), 0);
	assert_int_equal(sh("ip link set dev veth0 addrgenmode none"), 0);
	assert_int_equal(sh("ip link set dev veth1 addrgenmode none"), 0);
	assert_int_equal(ovl_nl_new(&f->nl, f->err, sizeof(f->err)), 0);
	assert_non_null(f->nl);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ovl_nl_destroy(&f->nl);
	assert_null(f->nl);
	ovl_nl_destroy(&f->nl); /* twice is fine */
	ovl_nl_destroy(NULL);
	free(f);
	/* deleting one end deletes the pair */
	return sh("ip link del veth0") == 0 ? 0 : -1;
}

static void test_addr_add_remove(void **state)
{
	struct fixture *f = *state;
	struct in6_addr a = a6("fd12:3456::1");
	struct ip_addr seen[8];
	const struct ip_addr *e;
	int n;

	assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, 64, f->err, sizeof(f->err)), 0);
	n = ip_addrs("veth0", seen, 8);
	assert_int_equal(n, 1);
	e = &seen[ip_find(seen, n, "fd12:3456::1")];
	assert_int_equal(e->plen, 64);
	assert_non_null(strstr(e->rest, " scope global "));
	assert_non_null(strstr(e->rest, " nodad "));
	assert_null(strstr(e->rest, "tentative"));
	/* nothing leaked onto the peer */
	assert_int_equal(ip_addrs("veth1", seen, 8), 0);

	/* duplicate */
	assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, 64, f->err, sizeof(f->err)), -EEXIST);
	assert_string_equal(f->err, "cannot add address fd12:3456::1/64 to 'veth0': File exists");

	/* remove, then remove again */
	assert_int_equal(ovl_nl_addr_remove(f->nl, "veth0", &a, 64, f->err, sizeof(f->err)), 0);
	assert_int_equal(ip_addrs("veth0", seen, 8), 0);
	assert_int_equal(ovl_nl_addr_remove(f->nl, "veth0", &a, 64, f->err, sizeof(f->err)),
			 -EADDRNOTAVAIL);
	assert_string_equal(f->err, "cannot remove address fd12:3456::1/64 from 'veth0': "
			    "no such address");

	assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, 129, f->err, sizeof(f->err)), -EINVAL);
}

static void test_bad_interface(void **state)
{
	struct fixture *f = *state;
	struct in6_addr a = a6("fd12:3456::1");
	struct in6_addr net = a6("fd00:1::");
	struct ovl_nl_addr list[2];
	static const char *const invalid[] = { "", "0123456789abcdef", "a/b", "a b", "a:1", "..",
					       "tab\there" };

	assert_int_equal(ovl_nl_addr_add(f->nl, "eth9", &a, 64, f->err, sizeof(f->err)), -ENODEV);
	assert_string_equal(f->err, "cannot add address fd12:3456::1/64 to 'eth9': No such device");
	assert_int_equal(ovl_nl_addr_remove(f->nl, "eth9", &a, 64, f->err, sizeof(f->err)), -ENODEV);
	assert_string_equal(f->err,
			    "cannot remove address fd12:3456::1/64 from 'eth9': No such device");
	assert_int_equal(ovl_nl_addr_list(f->nl, "eth9", list, 2, f->err, sizeof(f->err)), -ENODEV);
	assert_string_equal(f->err, "cannot list addresses of 'eth9': No such device");
	assert_int_equal(ovl_nl_link_up(f->nl, "eth9", f->err, sizeof(f->err)), -ENODEV);
	assert_string_equal(f->err, "cannot bring 'eth9' up: No such device");
	assert_int_equal(ovl_nl_link_down(f->nl, "eth9", f->err, sizeof(f->err)), -ENODEV);
	assert_int_equal(ovl_nl_route_add(f->nl, &net, 64, NULL, "eth9", f->err, sizeof(f->err)),
			 -ENODEV);
	assert_string_equal(f->err, "cannot add route fd00:1::/64 dev 'eth9': No such device");
	assert_int_equal(ovl_nl_route_remove(f->nl, &net, 64, NULL, "eth9", f->err, sizeof(f->err)),
			 -ENODEV);

	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		assert_int_equal(ovl_nl_addr_add(f->nl, invalid[i], &a, 64, f->err, sizeof(f->err)),
				 -EINVAL);
		assert_non_null(strstr(f->err, "invalid interface name"));
		assert_int_equal(ovl_nl_link_up(f->nl, invalid[i], f->err, sizeof(f->err)), -EINVAL);
	}
	assert_string_equal(f->err, "cannot bring 'tab\\x09here' up: invalid interface name");
	assert_int_equal(ovl_nl_addr_add(f->nl, NULL, &a, 64, f->err, sizeof(f->err)), -EINVAL);
}

static void test_link_up_down(void **state)
{
	struct fixture *f = *state;
	char flags[256];

	ip_link_flags("veth0", flags, sizeof(flags));
	assert_null(strstr(flags, ",UP,"));
	assert_int_equal(ovl_nl_link_up(f->nl, "veth0", f->err, sizeof(f->err)), 0);
	ip_link_flags("veth0", flags, sizeof(flags));
	assert_non_null(strstr(flags, ",UP,"));
	/* the peer is untouched, and up twice is fine */
	ip_link_flags("veth1", flags, sizeof(flags));
	assert_null(strstr(flags, ",UP,"));
	assert_int_equal(ovl_nl_link_up(f->nl, "veth0", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_nl_link_down(f->nl, "veth0", f->err, sizeof(f->err)), 0);
	ip_link_flags("veth0", flags, sizeof(flags));
	assert_null(strstr(flags, ",UP,"));
	assert_int_equal(ovl_nl_link_down(f->nl, "veth0", f->err, sizeof(f->err)), 0);
}

static void test_nodad_on_live_link(void **state)
{
	struct fixture *f = *state;
	struct in6_addr a = a6("fd12:3456::1");
	struct ip_addr seen[8];
	const struct ip_addr *e;
	int n;

	/* DAD takes 50 s here, so the contrast below cannot race a slow machine */
	assert_int_equal(sh("echo 50 >/proc/sys/net/ipv6/conf/veth0/dad_transmits"), 0);
	assert_int_equal(ovl_nl_link_up(f->nl, "veth1", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_nl_link_up(f->nl, "veth0", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, 64, f->err, sizeof(f->err)), 0);
	/* for contrast: the same without nodad is tentative while DAD runs */
	assert_int_equal(sh("ip addr add fd12:3456::2/64 dev veth0"), 0);
	n = ip_addrs("veth0", seen, 8);
	assert_int_equal(n, 2);
	e = &seen[ip_find(seen, n, "fd12:3456::1")];
	assert_non_null(strstr(e->rest, " nodad "));
	assert_null(strstr(e->rest, "tentative"));
	e = &seen[ip_find(seen, n, "fd12:3456::2")];
	assert_non_null(strstr(e->rest, " tentative "));
}

static void test_list_matches_ip(void **state)
{
	struct fixture *f = *state;
	const char *const mine[] = { "fd12:3456::1", "fd12:3456:0:1::7", "fe80::1" };
	const unsigned plens[] = { 64, 128, 64 };
	struct ovl_nl_addr list[8];
	struct ip_addr seen[8];
	int n, nseen;

	assert_int_equal(ovl_nl_addr_list(f->nl, "veth0", list, 8, f->err, sizeof(f->err)), 0);
	for (int i = 0; i < 3; i++) {
		struct in6_addr a = a6(mine[i]);

		assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, plens[i], f->err,
						 sizeof(f->err)), 0);
	}
	/* one address added behind the library's back, without nodad */
	assert_int_equal(sh("ip addr add fd99::9/48 dev veth0"), 0);
	n = ovl_nl_addr_list(f->nl, "veth0", list, 8, f->err, sizeof(f->err));
	nseen = ip_addrs("veth0", seen, 8);
	assert_int_equal(n, 4);
	assert_int_equal(nseen, 4);
	for (int i = 0; i < n; i++) {
		char text[INET6_ADDRSTRLEN];
		const struct ip_addr *e;

		assert_non_null(inet_ntop(AF_INET6, &list[i].addr, text, sizeof(text)));
		e = &seen[ip_find(seen, nseen, text)];
		assert_int_equal(e->plen, list[i].plen);
		assert_int_equal(strstr(e->rest, " nodad ") != NULL,
				 (list[i].flags & IFA_F_NODAD) != 0);
		assert_int_equal(strstr(e->rest, " tentative ") != NULL,
				 (list[i].flags & IFA_F_TENTATIVE) != 0);
		if (strstr(e->rest, " scope link ") != NULL)
			assert_int_equal(list[i].scope, RT_SCOPE_LINK);
		else
			assert_int_equal(list[i].scope, RT_SCOPE_UNIVERSE);
	}
	/* the same order as ip prints (both are the kernel's dump order) */
	for (int i = 0; i < n; i++) {
		char text[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &list[i].addr, text, sizeof(text));
		assert_string_equal(text, seen[i].addr);
	}
	/* too small an array: the count is still the total */
	memset(list, 0xa5, sizeof(list));
	assert_int_equal(ovl_nl_addr_list(f->nl, "veth0", list, 1, f->err, sizeof(f->err)), 4);
	assert_int_equal(ovl_nl_addr_list(f->nl, "veth0", NULL, 0, f->err, sizeof(f->err)), 4);
	assert_int_equal(list[1].plen, 0xa5a5a5a5u);
	/* the peer has none */
	assert_int_equal(ovl_nl_addr_list(f->nl, "veth1", list, 8, f->err, sizeof(f->err)), 0);
}

static void test_routes(void **state)
{
	struct fixture *f = *state;
	struct in6_addr net1 = a6("fd00:1::"), net2 = a6("fd00:2::"), gw = a6("fe80::2");
	struct in6_addr bad = a6("fd00:1::1");

	/* a route through a down link is refused by the kernel */
	assert_int_equal(ovl_nl_route_add(f->nl, &net1, 64, &gw, "veth0", f->err, sizeof(f->err)),
			 -ENETDOWN);
	assert_string_equal(f->err, "cannot add route fd00:1::/64 via fe80::2 dev 'veth0': "
			    "Network is down");
	assert_int_equal(ovl_nl_link_up(f->nl, "veth0", f->err, sizeof(f->err)), 0);

	assert_int_equal(ovl_nl_route_add(f->nl, &net1, 64, &gw, "veth0", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_nl_route_add(f->nl, &net2, 64, NULL, "veth0", f->err, sizeof(f->err)), 0);
	assert_true(ip_route_has("fd00:1::/64 via fe80::2 dev veth0 proto static "));
	assert_true(ip_route_has("fd00:2::/64 dev veth0 proto static "));

	assert_int_equal(ovl_nl_route_add(f->nl, &net2, 64, NULL, "veth0", f->err, sizeof(f->err)),
			 -EEXIST);
	assert_string_equal(f->err, "cannot add route fd00:2::/64 dev 'veth0': File exists");
	assert_int_equal(ovl_nl_route_add(f->nl, &bad, 64, NULL, "veth0", f->err, sizeof(f->err)),
			 -EINVAL);
	assert_string_equal(f->err, "cannot add route fd00:1::1/64 dev 'veth0': bits set beyond /64");

	assert_int_equal(ovl_nl_route_remove(f->nl, &net1, 64, &gw, "veth0", f->err,
					     sizeof(f->err)), 0);
	assert_false(ip_route_has("fd00:1::/64"));
	assert_true(ip_route_has("fd00:2::/64 dev veth0 proto static "));
	assert_int_equal(ovl_nl_route_remove(f->nl, &net2, 64, NULL, "veth0", f->err,
					     sizeof(f->err)), 0);
	assert_false(ip_route_has("fd00:2::/64"));
	assert_int_equal(ovl_nl_route_remove(f->nl, &net2, 64, NULL, "veth0", f->err,
					     sizeof(f->err)), -ENOENT);
	assert_string_equal(f->err, "cannot remove route fd00:2::/64 dev 'veth0': no such route");
}

static void test_slice_address(void **state)
{
	/* RFC 8032 TEST 1 public key; see test_slice.c for the known answers */
	static const uint8_t key[OVL_SLICE_PUBKEY_BYTES] = {
		0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
		0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
		0xf7, 0x07, 0x51, 0x1a,
	};
	struct fixture *f = *state;
	struct ovl_slice s;
	struct in6_addr a;
	struct ovl_nl_addr list[4];
	struct ip_addr seen[4];
	char text[OVL_SLICE_ADDR_STRLEN];
	int n;

	assert_int_equal(ovl_slice_init(&s, "sim-site", "hot", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_slice_addr(&s, key, 0, &a), 0);
	assert_int_equal(ovl_nl_link_up(f->nl, "veth0", f->err, sizeof(f->err)), 0);
	assert_int_equal(ovl_nl_addr_add(f->nl, "veth0", &a, OVL_SLICE_PREFIX_BITS, f->err,
					 sizeof(f->err)), 0);

	n = ip_addrs("veth0", seen, 4);
	assert_int_equal(n, 1);
	assert_string_equal(seen[0].addr, "fd0c:330b:5409:327d:6702:146d:4e02:eb30");
	assert_int_equal(seen[0].plen, 64);
	assert_non_null(strstr(seen[0].rest, " scope global nodad "));
	/* the kernel adds the slice's /64 as a connected route */
	assert_true(ip_route_has("fd0c:330b:5409:327d::/64 dev veth0 proto kernel "));

	/* what the interface carries verifies against the key */
	n = ovl_nl_addr_list(f->nl, "veth0", list, 4, f->err, sizeof(f->err));
	assert_int_equal(n, 1);
	assert_int_equal(ovl_slice_addr_verify(&s, key, &list[0].addr,
					       OVL_SLICE_COUNTER_MAX_DEFAULT), 0);
	assert_int_equal(ovl_slice_addr_format(&list[0].addr, text, sizeof(text)), 39);
	assert_string_equal(text, seen[0].addr);
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t len = (ssize_t)strlen(text);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len)
		rc = -errno;
	close(fd);
	return rc;
}

/* Enters a new network namespace, as root or through a user namespace. */
static int enter_netns(char *why, size_t whylen)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	char map[64];
	int first;

	if (unshare(CLONE_NEWNET) == 0)
		return 0;
	first = errno;
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
		snprintf(why, whylen, "cannot create a network namespace: unshare(CLONE_NEWNET): %s; "
			 "with CLONE_NEWUSER: %s", strerror(first), strerror(errno));
		return -1;
	}
	/* setgroups may be absent on old kernels; the gid map then still works as root */
	write_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
	if (write_file("/proc/self/uid_map", map) < 0) {
		snprintf(why, whylen, "cannot write /proc/self/uid_map: %s", strerror(errno));
		return -1;
	}
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
	if (write_file("/proc/self/gid_map", map) < 0) {
		snprintf(why, whylen, "cannot write /proc/self/gid_map: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_addr_add_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_interface, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_up_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nodad_on_live_link, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_matches_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slice_address, setup, teardown),
	};
	char why[256];

	if (enter_netns(why, sizeof(why)) < 0) {
		printf("%s\n", why);
		return 77;
	}
	if (sh("ip -V >/dev/null 2>&1") != 0) {
		printf("ip (iproute2) is not installed\n");
		return 77;
	}
	if (sh("ip link add veth0 type veth peer name veth1 2>/dev/null") != 0) {
		printf("cannot create a veth pair in the test's namespace (no veth support?)\n");
		return 77;
	}
	sh("ip link del veth0");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
