/*
 * ovl_slice: slice ids, slice prefixes and node addresses.
 *
 * A slice is a named group of nodes within a site. Everything about its
 * addressing follows from three inputs, so that the broker, every node and
 * every client compute the same values offline (docs/PROTOCOL.md section 3
 * is the normative description; the summary here must agree with it):
 *
 *   field(x)  = one byte len(x), then the bytes of x (len(x) <= 255)
 *   slice id  = BLAKE2b-256(field("shelf-slice-v1") | field(site) | field(name))
 *   prefix    = fd | id[0..4] (40-bit global id) | id[5..6] (16-bit subnet id)
 *               then 8 zero bytes: an RFC 4193 ULA /64
 *   H(c, r)   = BLAKE2b-256(field("shelf-iid-v1") | field(slice id) |
 *                           field(public key) | field(c) | field(r))[0..7]
 *   address   = prefix[0..7] | H(c, r) for the smallest r in 0..255 such
 *               that H(c, r) is not a reserved interface id
 *
 * c is the collision counter (0 for nearly every node; the broker assigns a
 * higher one only when a node's address is already taken in the slice, see
 * ovl_slice_addr_assign()). r is internal: it only moves past the reserved
 * interface ids (see ovl_slice_iid_is_reserved()), which a hash hits with
 * probability about 2^-40, so r is 0 in practice, but the rule is fixed so
 * that every implementation agrees.
 *
 * Site ids and slice names are 1 to OVL_SLICE_NAME_MAX_BYTES bytes of
 * lower-case ASCII letters, digits, '-', '_' and '.', starting with a letter
 * or a digit. Upper case is refused rather than folded, so that one slice
 * has exactly one spelling and one hash.
 *
 * No function here allocates, prints or keeps state; all are safe to call
 * from any thread. None needs sodium_init().
 */
#ifndef OVL_SLICE_H
#define OVL_SLICE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OVL_SLICE_NAME_MAX_BYTES 63   /* site id or slice name, without the NUL */
#define OVL_SLICE_ID_BYTES 32         /* BLAKE2b-256 output */
#define OVL_SLICE_PUBKEY_BYTES 32     /* an Ed25519 public key */
#define OVL_SLICE_IID_BYTES 8         /* 64-bit interface id */
#define OVL_SLICE_PREFIX_BITS 64      /* every slice is one /64 */
#define OVL_SLICE_RETRY_MAX 255       /* highest internal retry r tried */
/*
 * The highest collision counter a broker hands out and a verifier accepts by
 * default. As in CGA (RFC 3972, collision count 0..2): a natural collision of
 * two 64-bit interface ids in one slice is about a 2^-45 event at a
 * thousand members, and every extra accepted counter gives an attacker one
 * more try at a chosen address.
 */
#define OVL_SLICE_COUNTER_MAX_DEFAULT 2
/* Buffer sizes for the text forms, including the NUL. */
#define OVL_SLICE_ADDR_STRLEN 46      /* INET6_ADDRSTRLEN */
#define OVL_SLICE_PREFIX_STRLEN 50    /* address, '/', up to 3 digits */
#define OVL_SLICE_ID_HEXLEN (2 * OVL_SLICE_ID_BYTES + 1)

/* Domain-separation tags, the first field of each hash input (ASCII, no NUL). */
#define OVL_SLICE_TAG_ID "shelf-slice-v1"
#define OVL_SLICE_TAG_IID "shelf-iid-v1"

/*
 * A slice's identity and prefix. Plain data: copy it freely, no destructor.
 * Fill it with ovl_slice_init(); the other fields follow from site and name.
 */
struct ovl_slice {
	char site[OVL_SLICE_NAME_MAX_BYTES + 1]; /* site id, NUL-terminated */
	char name[OVL_SLICE_NAME_MAX_BYTES + 1]; /* slice name, NUL-terminated */
	uint8_t id[OVL_SLICE_ID_BYTES];          /* slice id, see above */
	struct in6_addr prefix;                  /* the /64; low 8 bytes zero */
};

/*
 * Check that `name` is a valid site id or slice name (rules above). `what`
 * names the subject in the message ("site id", "slice name"). Returns 0, or
 * -EINVAL with err saying why: `invalid slice name 'Hot': character 'H' at
 * offset 0 is not one of a-z 0-9 - _ .`.
 */
int ovl_slice_name_check(const char *name, const char *what, char *err, size_t errlen);

/*
 * Fill `s` for slice `name` of site `site`: validates both, computes the id
 * and the prefix. Returns 0, or -EINVAL (err names the bad input); on error
 * `s` is zeroed.
 */
int ovl_slice_init(struct ovl_slice *s, const char *site, const char *name,
		   char *err, size_t errlen);

/*
 * The raw interface-id hash H(counter, retry) of the key in slice `s`
 * (8 bytes into iid), before any reserved-id check. Exposed for tests and for
 * tools that explain an address; ovl_slice_addr() is what nodes use.
 */
void ovl_slice_iid_hash(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			uint8_t counter, uint8_t retry, uint8_t iid[OVL_SLICE_IID_BYTES]);

/*
 * True when iid (8 bytes, network order) is reserved and never used for a
 * node (IANA "Reserved IPv6 Interface Identifiers", RFC 5453):
 *  - 0000:0000:0000:0000, the subnet-router anycast id (RFC 4291);
 *  - 0200:5eff:fe00:0000 to 0200:5eff:feff:ffff, the ids of the IANA
 *    Ethernet block (RFC 4291, RFC 7136; includes the Proxy Mobile IPv6 id
 *    0200:5eff:fe00:5213 of RFC 6543);
 *  - fdff:ffff:ffff:ff80 to fdff:ffff:ffff:ffff, the subnet anycast ids
 *    (RFC 2526).
 */
bool ovl_slice_iid_is_reserved(const uint8_t iid[OVL_SLICE_IID_BYTES]);

/*
 * The address of the node with Ed25519 public key `pubkey` in slice `s`
 * under collision counter `counter`. Returns 0, or -EADDRNOTAVAIL in the
 * (probability about 2^-10000) case that all 256 retries hit
 * reserved ids; then *addr is zeroed.
 */
int ovl_slice_addr(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
		   uint8_t counter, struct in6_addr *addr);

/*
 * Check that `addr` is the address of `pubkey` in slice `s` under some
 * collision counter 0..max_counter (use OVL_SLICE_COUNTER_MAX_DEFAULT unless
 * the slice says otherwise). Returns that counter (0..255), -EADDRNOTAVAIL
 * when addr is not inside the slice's /64, or -EKEYREJECTED when it is inside
 * but belongs to no counter of this key.
 */
int ovl_slice_addr_verify(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			  const struct in6_addr *addr, uint8_t max_counter);

/* True when addr equals one of taken[0..ntaken) (all 128 bits compared). */
bool ovl_slice_addr_collides(const struct in6_addr *addr, const struct in6_addr *taken,
			     size_t ntaken);

/*
 * For the broker, admitting a node to slice `s`: the lowest collision
 * counter 0..max_counter whose address is not in taken[0..ntaken) (the
 * addresses of the slice's other members; leave out the node's own entry
 * when it re-registers). Returns the counter and stores the address in
 * *addr, or -EADDRINUSE when every allowed counter's address is taken (the
 * broker then refuses the node), or -EADDRNOTAVAIL as ovl_slice_addr().
 */
int ovl_slice_addr_assign(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			  const struct in6_addr *taken, size_t ntaken, uint8_t max_counter,
			  struct in6_addr *addr);

/*
 * Text forms. The formatters write RFC 5952 text (lower case, longest zero
 * run compressed) and return its length, or -ENOSPC when buf is too small
 * (buf then holds ""). The parsers return 0 or -EINVAL with err quoting the
 * input.
 */
int ovl_slice_addr_format(const struct in6_addr *addr, char *buf, size_t buflen);
int ovl_slice_addr_parse(const char *text, struct in6_addr *addr, char *err, size_t errlen);
/* "fd12:3456:789a:1::/64"; plen 0..128, else -EINVAL. */
int ovl_slice_prefix_format(const struct in6_addr *prefix, unsigned plen, char *buf,
			    size_t buflen);
/*
 * Parse "address/len" (len 0..128, decimal, no sign or spaces). Refuses a
 * prefix with bits set beyond len, so that one prefix has one spelling.
 */
int ovl_slice_prefix_parse(const char *text, struct in6_addr *prefix, unsigned *plen,
			   char *err, size_t errlen);
/* The slice id as 64 lower-case hex digits; returns 64 or -ENOSPC. */
int ovl_slice_id_format(const struct ovl_slice *s, char *buf, size_t buflen);

#endif
