#include "ovl_nl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>

/* Room for "fd12:...:1/128 via fe80::...:1 dev 'name'" in messages. */
#define WHAT_BYTES 200

struct ovl_nl {
	struct nl_sock *sk;
	int kernel_errno; /* errno of the last NLMSG_ERROR the kernel sent, 0 if none */
};

/*
 * libnl passes the kernel's NLMSG_ERROR here before squeezing it into an
 * -NLE_* code (ENETDOWN, ESRCH and EADDRINUSE would all be lost); keep it.
 * NL_STOP lets libnl finish the request as usual.
 */
static int on_kernel_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
	struct ovl_nl *nl = arg;

	nl->kernel_errno = e->error < 0 ? -e->error : e->error;
	return NL_STOP;
}

/* -NLE_* to a negative errno, for errors that did not come from the kernel. */
static int nle_errno(int nle)
{
	switch (nle < 0 ? -nle : nle) {
	case 0: return 0;
	case NLE_INTR: return -EINTR;
	case NLE_BAD_SOCK: return -EBADF;
	case NLE_AGAIN: return -EAGAIN;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_EXIST: return -EEXIST;
	case NLE_INVAL: return -EINVAL;
	case NLE_RANGE: return -ERANGE;
	case NLE_MSGSIZE: return -EMSGSIZE;
	case NLE_OPNOTSUPP: return -EOPNOTSUPP;
	case NLE_AF_NOSUPPORT: return -EAFNOSUPPORT;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_NOATTR: return -ENODATA;
	case NLE_MISSING_ATTR: return -EINVAL;
	case NLE_AF_MISMATCH: return -EAFNOSUPPORT;
	case NLE_SEQ_MISMATCH: return -EPROTO;
	case NLE_MSG_OVERFLOW: return -EOVERFLOW;
	case NLE_MSG_TRUNC: return -EMSGSIZE;
	case NLE_NOADDR: return -EADDRNOTAVAIL;
	case NLE_SRCRT_NOSUPPORT: return -EOPNOTSUPP;
	case NLE_MSG_TOOSHORT: return -EBADMSG;
	case NLE_MSGTYPE_NOSUPPORT: return -EOPNOTSUPP;
	case NLE_OBJ_MISMATCH: return -EINVAL;
	case NLE_NOCACHE: return -ENOENT;
	case NLE_BUSY: return -EBUSY;
	case NLE_PROTO_MISMATCH: return -EPROTONOSUPPORT;
	case NLE_NOACCESS: return -EACCES;
	case NLE_PERM: return -EPERM;
	case NLE_PKTLOC_FILE: return -ENOENT;
	case NLE_PARSE_ERR: return -EBADMSG;
	case NLE_NODEV: return -ENODEV;
	case NLE_IMMUTABLE: return -EPERM;
	case NLE_DUMP_INTR: return -EINTR;
	case NLE_ATTRSIZE: return -EMSGSIZE;
	default: return -EIO;
	}
}

/* The errno of a failed libnl call: the kernel's when it sent one. */
static int nl_result(struct ovl_nl *nl, int rc)
{
	if (rc >= 0)
		return 0;
	if (nl->kernel_errno != 0)
		return -nl->kernel_errno;
	return nle_errno(rc);
}

int ovl_nl_new(struct ovl_nl **nlp, char *err, size_t errlen)
{
	struct ovl_nl *nl = NULL;
	struct timeval tv = {
		.tv_sec = OVL_NL_TIMEOUT_MS / 1000,
		.tv_usec = (OVL_NL_TIMEOUT_MS % 1000) * 1000,
	};
	int rc = 0;

	*nlp = NULL;
	nl = calloc(1, sizeof(*nl));
	if (nl == NULL) {
		rc = -ENOMEM;
		snprintf(err, errlen, "cannot open netlink route socket: %s", strerror(-rc));
		goto out;
	}
	nl->sk = nl_socket_alloc();
	if (nl->sk == NULL) {
		rc = -ENOMEM;
		snprintf(err, errlen, "cannot open netlink route socket: %s", strerror(-rc));
		goto out;
	}
	rc = nl_connect(nl->sk, NETLINK_ROUTE);
	if (rc < 0) {
		rc = nle_errno(rc);
		snprintf(err, errlen, "cannot open netlink route socket: %s", strerror(-rc));
		goto out;
	}
	if (setsockopt(nl_socket_get_fd(nl->sk), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot set a timeout on the netlink route socket: %s",
			 strerror(-rc));
		goto out;
	}
	rc = nl_socket_modify_err_cb(nl->sk, NL_CB_CUSTOM, on_kernel_error, nl);
	if (rc < 0) {
		rc = nle_errno(rc);
		snprintf(err, errlen, "cannot open netlink route socket: %s", strerror(-rc));
		goto out;
	}
	*nlp = nl;
	nl = NULL;
	rc = 0;
out:
	ovl_nl_destroy(&nl);
	return rc;
}

void ovl_nl_destroy(struct ovl_nl **nlp)
{
	struct ovl_nl *nl = NULL;

	if (nlp == NULL || *nlp == NULL)
		return;
	nl = *nlp;
	*nlp = NULL;
	if (nl->sk != NULL)
		nl_socket_free(nl->sk); /* closes the socket too */
	free(nl);
}

/* Same rules as the kernel's dev_valid_name(). */
static bool ifname_valid(const char *name)
{
	size_t len;

	if (name == NULL || name[0] == '\0')
		return false;
	len = strnlen(name, OVL_NL_IFNAME_MAX_BYTES + 1);
	if (len > OVL_NL_IFNAME_MAX_BYTES)
		return false;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '/' || c == ':' || c <= ' ' || c == 0x7f)
			return false;
	}
	return true;
}

/* Writes 'name' for messages; an invalid name is cut and escaped. */
static void ifname_quote(char *out, size_t outlen, const char *name)
{
	size_t o = 0;

	if (name == NULL) {
		snprintf(out, outlen, "(null)");
		return;
	}
	for (size_t i = 0; name[i] != '\0' && i < 2 * OVL_NL_IFNAME_MAX_BYTES; i++) {
		unsigned char c = (unsigned char)name[i];
		int n;

		if (c > ' ' && c < 0x7f && c != '\\')
			n = snprintf(out + o, outlen - o, "%c", c);
		else
			n = snprintf(out + o, outlen - o, "\\x%02x", c);
		if (n < 0 || (size_t)n >= outlen - o)
			break;
		o += (size_t)n;
	}
	if (o < outlen)
		out[o] = '\0';
}

/*
 * Looks up the interface index of name on the context's socket (its
 * namespace, not the caller's current one). Returns the index (> 0), or
 * -EINVAL for a name that cannot exist, -ENODEV, or another errno.
 */
static int link_index(struct ovl_nl *nl, const char *name, struct rtnl_link **linkp)
{
	struct rtnl_link *link = NULL;
	int rc;

	if (!ifname_valid(name))
		return -EINVAL;
	nl->kernel_errno = 0;
	rc = rtnl_link_get_kernel(nl->sk, 0, name, &link);
	if (rc < 0) {
		rc = nl_result(nl, rc);
		if (rc == -ENOENT)
			rc = -ENODEV;
		goto out;
	}
	rc = rtnl_link_get_ifindex(link);
	if (rc <= 0) {
		rc = -ENODEV;
		goto out;
	}
	if (linkp != NULL) {
		*linkp = link;
		link = NULL;
	}
out:
	if (link != NULL)
		rtnl_link_put(link);
	return rc;
}

static const char *errtext(int rc)
{
	return rc == -EINVAL ? "invalid interface name" : strerror(-rc);
}

static void addr_text(char *out, size_t outlen, const struct in6_addr *a, unsigned plen)
{
	char s[INET6_ADDRSTRLEN];

	inet_ntop(AF_INET6, a, s, sizeof(s));
	snprintf(out, outlen, "%s/%u", s, plen);
}

/* Builds the rtnl_addr for addr/plen on ifindex; NULL when out of memory. */
static struct rtnl_addr *addr_object(int ifindex, const struct in6_addr *a, unsigned plen)
{
	struct rtnl_addr *ra = NULL;
	struct nl_addr *local = NULL;
	struct rtnl_addr *ret = NULL;

	ra = rtnl_addr_alloc();
	local = nl_addr_build(AF_INET6, a, sizeof(*a));
	if (ra == NULL || local == NULL)
		goto out;
	nl_addr_set_prefixlen(local, (int)plen);
	rtnl_addr_set_family(ra, AF_INET6);
	rtnl_addr_set_ifindex(ra, ifindex);
	if (rtnl_addr_set_local(ra, local) < 0)
		goto out;
	rtnl_addr_set_prefixlen(ra, (int)plen);
	ret = ra;
	ra = NULL;
out:
	if (local != NULL)
		nl_addr_put(local);
	if (ra != NULL)
		rtnl_addr_put(ra);
	return ret;
}

/*
 * Add (add = true) or remove an address: one path for both, so their checks
 * and messages ("cannot add address A to 'if': ..." / "cannot remove
 * address A from 'if': ...") cannot drift apart.
 */
static int addr_change(struct ovl_nl *nl, bool add, const char *ifname,
		       const struct in6_addr *addr, unsigned plen, char *err, size_t errlen)
{
	struct rtnl_addr *ra = NULL;
	char what[WHAT_BYTES], head[WHAT_BYTES + 4 * OVL_NL_IFNAME_MAX_BYTES + 40];
	char q[4 * OVL_NL_IFNAME_MAX_BYTES + 8];
	int idx;
	int rc;

	addr_text(what, sizeof(what), addr, plen);
	ifname_quote(q, sizeof(q), ifname);
	snprintf(head, sizeof(head), add ? "cannot add address %s to '%s'"
					 : "cannot remove address %s from '%s'", what, q);
	if (plen > 128) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s: prefix length over 128", head);
		goto out;
	}
	idx = link_index(nl, ifname, NULL);
	if (idx < 0) {
		rc = idx;
		snprintf(err, errlen, "%s: %s", head, errtext(rc));
		goto out;
	}
	ra = addr_object(idx, addr, plen);
	if (ra == NULL) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s: %s", head, strerror(-rc));
		goto out;
	}
	nl->kernel_errno = 0;
	if (add) {
		rtnl_addr_set_scope(ra, RT_SCOPE_UNIVERSE);
		rtnl_addr_set_flags(ra, IFA_F_NODAD);
		rc = nl_result(nl, rtnl_addr_add(nl->sk, ra, NLM_F_EXCL));
	} else {
		rc = nl_result(nl, rtnl_addr_delete(nl->sk, ra, 0));
	}
	if (rc == -EADDRNOTAVAIL && !add)
		snprintf(err, errlen, "%s: no such address", head);
	else if (rc < 0)
		snprintf(err, errlen, "%s: %s", head, strerror(-rc));
out:
	if (ra != NULL)
		rtnl_addr_put(ra);
	return rc;
}

int ovl_nl_addr_add(struct ovl_nl *nl, const char *ifname, const struct in6_addr *addr,
		    unsigned plen, char *err, size_t errlen)
{
	return addr_change(nl, true, ifname, addr, plen, err, errlen);
}

int ovl_nl_addr_remove(struct ovl_nl *nl, const char *ifname, const struct in6_addr *addr,
		       unsigned plen, char *err, size_t errlen)
{
	return addr_change(nl, false, ifname, addr, plen, err, errlen);
}

int ovl_nl_addr_list(struct ovl_nl *nl, const char *ifname, struct ovl_nl_addr *out,
		     size_t max, char *err, size_t errlen)
{
	struct nl_cache *cache = NULL;
	struct nl_object *obj = NULL;
	char q[4 * OVL_NL_IFNAME_MAX_BYTES + 8];
	size_t n = 0;
	int idx;
	int rc;

	ifname_quote(q, sizeof(q), ifname);
	idx = link_index(nl, ifname, NULL);
	if (idx < 0) {
		rc = idx;
		snprintf(err, errlen, "cannot list addresses of '%s': %s", q, errtext(rc));
		goto out;
	}
	nl->kernel_errno = 0;
	rc = nl_result(nl, rtnl_addr_alloc_cache(nl->sk, &cache));
	if (rc < 0) {
		cache = NULL;
		snprintf(err, errlen, "cannot list addresses of '%s': %s", q, strerror(-rc));
		goto out;
	}
	for (obj = nl_cache_get_first(cache); obj != NULL; obj = nl_cache_get_next(obj)) {
		struct rtnl_addr *ra = (struct rtnl_addr *)obj;
		struct nl_addr *local = rtnl_addr_get_local(ra);

		if (rtnl_addr_get_family(ra) != AF_INET6 || rtnl_addr_get_ifindex(ra) != idx)
			continue;
		if (local == NULL || nl_addr_get_len(local) != sizeof(struct in6_addr))
			continue;
		if (n < max) {
			memset(&out[n], 0, sizeof(out[n]));
			memcpy(&out[n].addr, nl_addr_get_binary_addr(local), sizeof(out[n].addr));
			out[n].plen = (unsigned)rtnl_addr_get_prefixlen(ra);
			out[n].flags = rtnl_addr_get_flags(ra);
			out[n].scope = (uint8_t)rtnl_addr_get_scope(ra);
		}
		n++;
	}
	rc = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
out:
	if (cache != NULL)
		nl_cache_free(cache);
	return rc;
}

static int link_set(struct ovl_nl *nl, const char *ifname, bool up, char *err, size_t errlen)
{
	struct rtnl_link *orig = NULL;
	struct rtnl_link *change = NULL;
	char q[4 * OVL_NL_IFNAME_MAX_BYTES + 8];
	const char *dir = up ? "up" : "down";
	int rc;

	ifname_quote(q, sizeof(q), ifname);
	rc = link_index(nl, ifname, &orig);
	if (rc < 0) {
		snprintf(err, errlen, "cannot bring '%s' %s: %s", q, dir, errtext(rc));
		goto out;
	}
	change = rtnl_link_alloc();
	if (change == NULL) {
		rc = -ENOMEM;
		snprintf(err, errlen, "cannot bring '%s' %s: %s", q, dir, strerror(-rc));
		goto out;
	}
	if (up)
		rtnl_link_set_flags(change, IFF_UP);
	else
		rtnl_link_unset_flags(change, IFF_UP);
	nl->kernel_errno = 0;
	rc = nl_result(nl, rtnl_link_change(nl->sk, orig, change, 0));
	if (rc < 0)
		snprintf(err, errlen, "cannot bring '%s' %s: %s", q, dir, strerror(-rc));
out:
	if (change != NULL)
		rtnl_link_put(change);
	if (orig != NULL)
		rtnl_link_put(orig);
	return rc;
}

int ovl_nl_link_up(struct ovl_nl *nl, const char *ifname, char *err, size_t errlen)
{
	return link_set(nl, ifname, true, err, errlen);
}

int ovl_nl_link_down(struct ovl_nl *nl, const char *ifname, char *err, size_t errlen)
{
	return link_set(nl, ifname, false, err, errlen);
}

static bool host_bits_clear(const struct in6_addr *a, unsigned plen)
{
	for (unsigned bit = plen; bit < 128; bit++)
		if (a->s6_addr[bit / 8] & (0x80u >> (bit % 8)))
			return false;
	return true;
}

static int route_change(struct ovl_nl *nl, bool add, const struct in6_addr *dst, unsigned plen,
			const struct in6_addr *gw, const char *ifname, char *err, size_t errlen)
{
	struct rtnl_route *route = NULL;
	struct rtnl_nexthop *nh = NULL;
	struct nl_addr *ndst = NULL;
	struct nl_addr *ngw = NULL;
	char what[WHAT_BYTES];
	char q[4 * OVL_NL_IFNAME_MAX_BYTES + 8];
	char d[INET6_ADDRSTRLEN], g[INET6_ADDRSTRLEN];
	const char *verb = add ? "add" : "remove";
	int idx;
	int rc;

	inet_ntop(AF_INET6, dst, d, sizeof(d));
	ifname_quote(q, sizeof(q), ifname);
	if (gw != NULL) {
		inet_ntop(AF_INET6, gw, g, sizeof(g));
		snprintf(what, sizeof(what), "%s/%u via %s dev '%s'", d, plen, g, q);
	} else {
		snprintf(what, sizeof(what), "%s/%u dev '%s'", d, plen, q);
	}
	if (plen > 128) {
		rc = -EINVAL;
		snprintf(err, errlen, "cannot %s route %s: prefix length over 128", verb, what);
		goto out;
	}
	if (!host_bits_clear(dst, plen)) {
		rc = -EINVAL;
		snprintf(err, errlen, "cannot %s route %s: bits set beyond /%u", verb, what, plen);
		goto out;
	}
	idx = link_index(nl, ifname, NULL);
	if (idx < 0) {
		rc = idx;
		snprintf(err, errlen, "cannot %s route %s: %s", verb, what, errtext(rc));
		goto out;
	}
	route = rtnl_route_alloc();
	nh = rtnl_route_nh_alloc();
	ndst = nl_addr_build(AF_INET6, dst, sizeof(*dst));
	if (gw != NULL)
		ngw = nl_addr_build(AF_INET6, gw, sizeof(*gw));
	if (route == NULL || nh == NULL || ndst == NULL || (gw != NULL && ngw == NULL)) {
		rc = -ENOMEM;
		snprintf(err, errlen, "cannot %s route %s: %s", verb, what, strerror(-rc));
		goto out;
	}
	nl_addr_set_prefixlen(ndst, (int)plen);
	rtnl_route_set_family(route, AF_INET6);
	rtnl_route_set_table(route, RT_TABLE_MAIN);
	rtnl_route_set_protocol(route, RTPROT_STATIC);
	rtnl_route_set_scope(route, RT_SCOPE_UNIVERSE);
	rtnl_route_set_type(route, RTN_UNICAST);
	rc = rtnl_route_set_dst(route, ndst);
	if (rc < 0) {
		rc = nle_errno(rc);
		snprintf(err, errlen, "cannot %s route %s: %s", verb, what, strerror(-rc));
		goto out;
	}
	rtnl_route_nh_set_ifindex(nh, idx);
	if (ngw != NULL)
		rtnl_route_nh_set_gateway(nh, ngw);
	rtnl_route_add_nexthop(route, nh);
	nh = NULL; /* the route owns it now */
	nl->kernel_errno = 0;
	if (add)
		rc = nl_result(nl, rtnl_route_add(nl->sk, route, NLM_F_EXCL));
	else
		rc = nl_result(nl, rtnl_route_delete(nl->sk, route, 0));
	if (!add && rc == -ESRCH) {
		rc = -ENOENT;
		snprintf(err, errlen, "cannot remove route %s: no such route", what);
	} else if (rc < 0) {
		snprintf(err, errlen, "cannot %s route %s: %s", verb, what, strerror(-rc));
	}
out:
	if (nh != NULL)
		rtnl_route_nh_free(nh);
	if (route != NULL)
		rtnl_route_put(route);
	if (ndst != NULL)
		nl_addr_put(ndst);
	if (ngw != NULL)
		nl_addr_put(ngw);
	return rc;
}

int ovl_nl_route_add(struct ovl_nl *nl, const struct in6_addr *dst, unsigned plen,
		     const struct in6_addr *gw, const char *ifname, char *err, size_t errlen)
{
	return route_change(nl, true, dst, plen, gw, ifname, err, errlen);
}

int ovl_nl_route_remove(struct ovl_nl *nl, const struct in6_addr *dst, unsigned plen,
			const struct in6_addr *gw, const char *ifname, char *err, size_t errlen)
{
	return route_change(nl, false, dst, plen, gw, ifname, err, errlen);
}
