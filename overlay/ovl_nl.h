/*
 * ovl_nl: the few rtnetlink operations a node needs, through libnl-route-3.
 *
 * A node installs its slice addresses on its data interface, brings the
 * interface up and adds routes; tests and the sim board do the same inside
 * network namespaces. One struct ovl_nl wraps one NETLINK_ROUTE socket, bound
 * to the network namespace the caller was in when it called ovl_nl_new().
 *
 * Every function returns 0 (or a count, where it says so) or a negative
 * errno, and on error writes a lower-case message naming the interface and
 * the address or route into err (`cannot add address fd12:3456::1/64 to
 * 'eth9': No such device`). The errno is the kernel's own where the kernel
 * refused the request (libnl's lossy -NLE_* codes are not passed on).
 * Codes common to all functions taking an interface name:
 *   -EINVAL  ifname is not a valid Linux interface name (empty, longer than
 *            OVL_NL_IFNAME_MAX_BYTES, "." or "..", or containing '/', ':' or
 *            white space), or an argument is out of range;
 *   -ENODEV  no interface of that name in the socket's namespace.
 *
 * An ovl_nl is not thread-safe: use one per thread. Nothing here logs.
 */
#ifndef OVL_NL_H
#define OVL_NL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define OVL_NL_IFNAME_MAX_BYTES 15  /* IFNAMSIZ - 1 */
#define OVL_NL_TIMEOUT_MS 5000      /* receive timeout on the netlink socket */

struct ovl_nl;

/* One IPv6 address as ovl_nl_addr_list() reports it. */
struct ovl_nl_addr {
	struct in6_addr addr;
	unsigned plen;   /* prefix length, 0..128 */
	uint32_t flags;  /* IFA_F_* of <linux/if_addr.h>: IFA_F_NODAD, IFA_F_TENTATIVE, ... */
	uint8_t scope;   /* RT_SCOPE_* of <linux/rtnetlink.h>: 0 universe (global), 253 link */
};

/*
 * Open a NETLINK_ROUTE socket in the current network namespace. Returns 0
 * and stores a new context in *nlp (free it with ovl_nl_destroy()), or a
 * negative errno with *nlp NULL.
 */
int ovl_nl_new(struct ovl_nl **nlp, char *err, size_t errlen);

/* Close the socket and free the context; accepts NULL and *nlp NULL; sets *nlp NULL. */
void ovl_nl_destroy(struct ovl_nl **nlp);

/*
 * Add addr/plen to interface ifname, global scope, with IFA_F_NODAD: slice
 * addresses are unique by construction (ovl_slice), and duplicate address
 * detection would keep them unusable ("tentative") for a second or more
 * after every boot. Returns 0, -EEXIST when the interface already has that
 * address (a restarting node may treat that as success), -EINVAL for plen
 * over 128, -ENODEV, or another kernel errno.
 */
int ovl_nl_addr_add(struct ovl_nl *nl, const char *ifname, const struct in6_addr *addr,
		    unsigned plen, char *err, size_t errlen);

/*
 * Remove addr/plen from interface ifname. Returns 0, -EADDRNOTAVAIL when the
 * interface has no such address, -ENODEV, or another kernel errno.
 */
int ovl_nl_addr_remove(struct ovl_nl *nl, const char *ifname, const struct in6_addr *addr,
		       unsigned plen, char *err, size_t errlen);

/*
 * List the IPv6 addresses of interface ifname, in the kernel's order, into
 * out[0..max). Returns the number of addresses the interface has, which may
 * be more than max (as snprintf does: only the first max are stored; call
 * again with a larger array), or -ENODEV or another negative errno.
 */
int ovl_nl_addr_list(struct ovl_nl *nl, const char *ifname, struct ovl_nl_addr *out,
		     size_t max, char *err, size_t errlen);

/* Set IFF_UP on interface ifname (a no-op when it is up already). */
int ovl_nl_link_up(struct ovl_nl *nl, const char *ifname, char *err, size_t errlen);

/* Clear IFF_UP on interface ifname (a no-op when it is down already). */
int ovl_nl_link_down(struct ovl_nl *nl, const char *ifname, char *err, size_t errlen);

/*
 * Add a static (RTPROT_STATIC) unicast route to dst/plen in the main table,
 * through interface ifname, via gateway gw when gw is not NULL (a link-local
 * gateway is fine: the interface is always given). dst must have no bits set
 * beyond plen (-EINVAL). Returns 0, -EEXIST when the same route exists,
 * -ENETDOWN when the interface is down, -ENODEV, or another kernel errno.
 */
int ovl_nl_route_add(struct ovl_nl *nl, const struct in6_addr *dst, unsigned plen,
		     const struct in6_addr *gw, const char *ifname, char *err, size_t errlen);

/*
 * Remove the route ovl_nl_route_add() would add with the same arguments.
 * Returns 0, -ENOENT when there is no such route (the kernel says ESRCH),
 * -ENODEV, or another kernel errno.
 */
int ovl_nl_route_remove(struct ovl_nl *nl, const struct in6_addr *dst, unsigned plen,
			const struct in6_addr *gw, const char *ifname, char *err, size_t errlen);

#endif
