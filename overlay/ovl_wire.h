/*
 * ovl_wire: the data-plane wire format and session crypto (docs/PROTOCOL.md
 * section 7). A pure codec: no sockets, no threads, no logging. The node's
 * io_uring server and the client library feed it bytes and send what it
 * produces.
 *
 * A frame on the TCP stream is
 *
 *   header (32 bytes) ‖ meta (msgpack, meta_len bytes) ‖ MAC (16 bytes,
 *   every frame after the handshake) ‖ payload (payload_len bytes)
 *
 * The "head" is header ‖ meta ‖ MAC; it is at most OVL_WIRE_HEAD_MAX_BYTES,
 * so one fixed buffer per connection holds any head. The payload is streamed
 * separately (a PUT of 64 MiB never needs to be in memory at once): in
 * encrypted frames it is a run of AEAD chunks, each OVL_WIRE_CHUNK_BYTES of
 * plaintext (the last one shorter) followed by its 16-byte tag.
 *
 * Sessions: a handshake (HELLO, HELLO_OK, or ERROR) authenticates both
 * certificates, proves possession of the server's key (the proof) and of the
 * client's (the MAC of its first request), and derives fresh per-direction
 * MAC and AEAD keys. After it, every head is MAC'd with the sender's key and
 * carries the sender's next sequence number; a head whose MAC or sequence is
 * wrong is refused and the connection must be closed.
 *
 * Errors: 0 or a negative errno; words in the caller's err buffer naming the
 * frame and the field. Secrets are wiped with sodium_memzero.
 */
#ifndef OVL_WIRE_H
#define OVL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ovl_cert.h"
#include "ovl_id.h"
#include "ovl_place.h"

struct ovl_peers;

/* ---- constants ------------------------------------------------------------ */

#define OVL_WIRE_VERSION_MAJOR 1
#define OVL_WIRE_VERSION_MINOR 0

#define OVL_WIRE_MAGIC "SHD1"                   /* header bytes 0..3 */
#define OVL_WIRE_HDR_BYTES 32                   /* fixed header */
#define OVL_WIRE_MAC_BYTES 16                   /* keyed BLAKE2b-128 */
#define OVL_WIRE_KEY_BYTES 32                   /* every session key */
#define OVL_WIRE_NONCE_BYTES 32                 /* handshake nonces */
#define OVL_WIRE_META_MAX_BYTES (16u << 10)     /* msgpack meta cap, 16 KiB */
#define OVL_WIRE_HEAD_MAX_BYTES (OVL_WIRE_HDR_BYTES + OVL_WIRE_META_MAX_BYTES + OVL_WIRE_MAC_BYTES)
#define OVL_WIRE_OBJECT_MAX_BYTES (64ull << 20) /* largest plaintext payload, 64 MiB */
#define OVL_WIRE_CHUNK_BYTES (64u << 10)        /* AEAD chunk of plaintext, 64 KiB */
#define OVL_WIRE_TAG_BYTES 16                   /* AEAD tag per chunk */
#define OVL_WIRE_CHUNKS_MAX (OVL_WIRE_OBJECT_MAX_BYTES / OVL_WIRE_CHUNK_BYTES)
#define OVL_WIRE_PAYLOAD_MAX_BYTES \
	(OVL_WIRE_OBJECT_MAX_BYTES + OVL_WIRE_CHUNKS_MAX * OVL_WIRE_TAG_BYTES)
#define OVL_WIRE_KEY_MAX_BYTES 1024             /* object keys: 1..1024 bytes */
#define OVL_WIRE_NAME_SIZE 64                   /* slice and counter names, 63 + NUL */
#define OVL_WIRE_TEXT_SIZE 256                  /* error messages, 255 + NUL */
#define OVL_WIRE_LIST_MAX 10000                 /* keys in one LIST answer */
#define OVL_WIRE_COUNTERS_MAX 128               /* entries in a NODE_STAT (or HEAL) counters map */
#define OVL_WIRE_DIGEST_BUCKETS 256             /* DIGEST: buckets of a slice's shared keys */
#define OVL_WIRE_DIGEST_PAIR_BYTES 16           /* DIGEST: count u64 BE, xor u64 BE */
#define OVL_WIRE_NODE_ID_BYTES 32               /* node ids in `fwd` and `held` */
#define OVL_WIRE_CHAIN_MAX 4                    /* `fwd` chain entries (R <= 5) */
#define OVL_WIRE_HELD_MAX OVL_PLACE_REPLICAS_MAX /* node ids in a `held` answer */

#define OVL_WIRE_FLAG_ENCRYPTED 0x01            /* payload is AEAD chunks */

/* Frame types (header byte 4). A response's type is its request's | 0x80. */
enum ovl_wire_type {
	OVL_WIRE_T_HELLO = 0x01,     /* client -> server, unauthenticated */
	OVL_WIRE_T_HELLO_OK = 0x02,  /* server -> client, unauthenticated, carries the proof */
	OVL_WIRE_T_ERROR = 0x03,     /* either way before keys exist; then close */
	OVL_WIRE_T_PUT = 0x11,
	OVL_WIRE_T_GET = 0x12,
	OVL_WIRE_T_DELETE = 0x13,
	OVL_WIRE_T_STAT = 0x14,
	OVL_WIRE_T_LIST = 0x15,
	OVL_WIRE_T_NODE_STAT = 0x16,
	OVL_WIRE_T_MAP = 0x17,       /* the broker-signed slice map the node holds */
	OVL_WIRE_T_DIGEST = 0x18,    /* node to node: a digest of the keys both hold (7.13) */
	OVL_WIRE_T_HEAL = 0x19,      /* start an anti-entropy and repair pass of a slice (7.13) */
	OVL_WIRE_T_RESPONSE = 0x80,  /* bit set in every response type */
};

/* Status codes in responses and ERROR frames (section 7.8). */
enum ovl_wire_status {
	OVL_WIRE_OK = 0,
	OVL_WIRE_BAD_REQUEST = 1,
	OVL_WIRE_AUTH_FAILED = 2,
	OVL_WIRE_VERSION = 3,
	OVL_WIRE_STALE_MAP = 4,        /* epoch carries the node's newer epoch */
	OVL_WIRE_WRONG_SLICE = 5,
	OVL_WIRE_NOT_FOUND = 6,
	OVL_WIRE_NO_SPACE = 7,
	OVL_WIRE_TOO_LARGE = 8,
	OVL_WIRE_CHECKSUM_MISMATCH = 9,
	OVL_WIRE_BUSY = 10,
	OVL_WIRE_TIMEOUT = 11,
	OVL_WIRE_READ_ONLY = 12,
	OVL_WIRE_INTERNAL = 13,
	OVL_WIRE_STATUS_COUNT
};

/* "ok", "bad-request", ...; NULL for a code this build does not know. */
const char *ovl_wire_status_name(uint32_t status);

/*
 * The one table between statuses and errno values (both directions read
 * the same table in ovl_wire.c).
 *
 * ovl_wire_status_to_errno: what a client reports for a response status: 0
 * (ok), -ENOENT (not-found), -ENOSPC (no-space), -E2BIG (too-large), -EIO
 * (checksum-mismatch), -EACCES (auth-failed, wrong-slice), -EBUSY, -EROFS
 * (read-only), -ETIMEDOUT (timeout), -ESTALE (stale-map), and -EPROTO for
 * bad-request, version, internal and every code this build does not know.
 *
 * ovl_wire_errno_to_status: the status a node answers for a refusal its
 * own layers gave as 0 or a negative errno: ok, not-found (-ENOENT),
 * no-space (-ENOSPC), read-only (-EROFS), too-large (-E2BIG), bad-request
 * (-EINVAL), busy (-EBUSY), checksum-mismatch (-EIO: the store found a
 * record damaged, or could not read it; never wrong bytes), and internal
 * for every other errno.
 */
int ovl_wire_status_to_errno(uint32_t status);
uint32_t ovl_wire_errno_to_status(int err);

/* "hello", "put", "put-response", ...; NULL when unknown. */
const char *ovl_wire_type_name(uint8_t type);

/* ---- header ----------------------------------------------------------------- */

struct ovl_wire_hdr {
	uint8_t type;         /* enum ovl_wire_type */
	uint8_t flags;        /* OVL_WIRE_FLAG_* */
	uint32_t meta_len;    /* 0..OVL_WIRE_META_MAX_BYTES */
	uint64_t payload_len; /* bytes on the wire (tags included when encrypted) */
	uint64_t seq;         /* sender's sequence number; 0 in handshake frames */
	uint32_t rid;         /* request id, echoed in the response; 0 in handshake frames */
};

/*
 * Check h against every rule of section 7.2 (known type, flags, caps, a
 * payload only where the type allows one, an encrypted length that is a
 * valid run of chunks) and write its 32 bytes. 0 or -EINVAL (err says why).
 */
int ovl_wire_hdr_pack(const struct ovl_wire_hdr *h, uint8_t out[OVL_WIRE_HDR_BYTES], char *err,
		      size_t errlen);

/*
 * Parse and check 32 header bytes. 0, or -EBADMSG (bad magic, reserved
 * bytes, unknown type or flag, a payload where none is allowed),
 * -EMSGSIZE (meta or payload over its cap: refuse before allocating).
 */
int ovl_wire_hdr_parse(struct ovl_wire_hdr *h, const uint8_t buf[OVL_WIRE_HDR_BYTES], char *err,
		       size_t errlen);

/* Length of the head of a frame with this header: 32 + meta + (MAC if authed). */
size_t ovl_wire_head_len(const struct ovl_wire_hdr *h, bool authed);

/*
 * Incremental receive. buf[0..len) holds the first len bytes of a frame as
 * received so far. Sets *need to how many more bytes the head needs (0 when
 * buf holds the whole head) and, once 32 bytes are there, *h to the parsed
 * header; the header is checked as soon as it is complete, so oversized
 * lengths are refused before the caller allocates or reads more. `authed`:
 * whether heads carry a MAC (every frame after the handshake). Never reads
 * beyond buf[len). Returns 0 or the errors of ovl_wire_hdr_parse().
 */
int ovl_wire_head_need(const uint8_t *buf, size_t len, bool authed, struct ovl_wire_hdr *h,
		       size_t *need, char *err, size_t errlen);

/* ---- payload sizes and plaintext checksums -------------------------------- */

/* Wire length of an encrypted payload of `plain` bytes (16 per started chunk). */
uint64_t ovl_wire_sealed_len(uint64_t plain);

/* Plaintext length of an encrypted payload of `wire` bytes; -EBADMSG when no
 * run of chunks has that length. */
int ovl_wire_plain_len(uint64_t wire, uint64_t *plain);

/* ---- sessions ------------------------------------------------------------- */

/* Keys and counters of one connection after the handshake. A plain value
 * (embed it per connection); wipe it with ovl_wire_session_clear(). */
struct ovl_wire_session {
	uint8_t tx_mac[OVL_WIRE_KEY_BYTES];  /* MACs what we send */
	uint8_t rx_mac[OVL_WIRE_KEY_BYTES];  /* checks what we receive */
	uint8_t tx_aead[OVL_WIRE_KEY_BYTES];
	uint8_t rx_aead[OVL_WIRE_KEY_BYTES];
	uint8_t tx_dir, rx_dir;              /* 1 client->server, 2 server->client */
	uint64_t tx_seq;                     /* sequence of the next head we seal */
	uint64_t rx_seq;                     /* sequence the next head we open must carry */
	struct ovl_cert peer;                /* the peer's verified certificate */
	char slice[OVL_WIRE_NAME_SIZE];      /* slice named in HELLO ("" when none) */
};

/* Wipe every key and counter. */
void ovl_wire_session_clear(struct ovl_wire_session *s);

/* Whether the peer's certificate lists `slice` (a node must check every
 * request's slice with this before serving it). */
bool ovl_wire_session_allows(const struct ovl_wire_session *s, const char *slice);

/*
 * Build the head of an authenticated frame into out[0..cap): sets h->seq to
 * s->tx_seq and h->meta_len to meta_len, packs the header, copies the meta,
 * appends the MAC, and advances tx_seq. Returns the head length, -EINVAL
 * (invalid header) or -ENOSPC (cap too small). h->type, flags, payload_len
 * and rid are the caller's.
 */
int ovl_wire_head_seal(struct ovl_wire_session *s, struct ovl_wire_hdr *h, const uint8_t *meta,
		       size_t meta_len, uint8_t *out, size_t cap, char *err, size_t errlen);

/*
 * Authenticate a complete received head buf[0..len) (len exactly
 * ovl_wire_head_len(h, true)): MAC (constant-time compare) and sequence
 * (must equal s->rx_seq; then rx_seq advances). Handshake-type frames are
 * refused here. Returns 0, -EBADMSG (malformed), -EBADE (MAC mismatch:
 * forged, tampered, or the wrong key), -EPROTO (out of sequence: replayed,
 * reordered or dropped frame). On error nothing changes; close the
 * connection. *h receives the header and meta points into buf (may be NULL).
 */
int ovl_wire_head_open(struct ovl_wire_session *s, const uint8_t *buf, size_t len,
		       struct ovl_wire_hdr *h, const uint8_t **meta, char *err, size_t errlen);

/*
 * Encrypt chunk `idx` of the payload of the frame whose sealed header is
 * hdr, in place: buf[0..len) plaintext becomes ciphertext, and the tag goes
 * to buf[len..len+16), so buf must hold len + 16 bytes. len is
 * OVL_WIRE_CHUNK_BYTES except for the last chunk (1..CHUNK_BYTES). Uses the
 * tx AEAD key. 0 or -EINVAL (a length or index out of range).
 */
int ovl_wire_chunk_seal(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			uint32_t idx, uint8_t *buf, size_t len);

/* The same with the tag written to tag[0..16) instead of after the chunk
 * (a sender that gathers chunks and tags from different buffers). */
int ovl_wire_chunk_seal_detached(const struct ovl_wire_session *s,
				 const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint32_t idx, uint8_t *buf,
				 size_t len, uint8_t tag[OVL_WIRE_TAG_BYTES]);

/*
 * Decrypt chunk `idx` in place: buf[0..len) ciphertext followed by its tag
 * at buf[len..len+16) becomes plaintext in buf[0..len). Uses the rx AEAD
 * key; hdr is the received (opened) header. 0, -EINVAL (idx or len does
 * not match the header's payload_len), or -EBADMSG when the tag does not
 * verify (a tampered, reordered, truncated or replayed chunk); then
 * buf[0..len) is zeroed (libsodium wipes the output of a failed open).
 */
int ovl_wire_chunk_open(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			uint32_t idx, uint8_t *buf, size_t len);

/* ---- whole payloads ----------------------------------------------------------
 *
 * The one implementation of the chunk loop: a sender seals a whole payload
 * with ovl_wire_payload_seal() (into a second buffer) or
 * ovl_wire_payload_seal_detached() (in place, tags apart, for a sender that
 * gathers chunks and tags with an iovec); a receiver opens bytes as they
 * arrive, in pieces of any size, with a struct ovl_wire_opener, or a whole
 * received payload in place with ovl_wire_payload_open().
 */

/* Chunks in an encrypted payload of `plain` bytes (0 when plain is 0). */
uint32_t ovl_wire_chunk_count(uint64_t plain);

/*
 * Seal plain[0..plen) into out[0..ovl_wire_sealed_len(plen)): each chunk
 * followed by its tag, bound to the frame whose sealed header bytes are hdr
 * (it must carry OVL_WIRE_FLAG_ENCRYPTED and payload_len
 * ovl_wire_sealed_len(plen)). out must not overlap plain. Uses the tx AEAD
 * key. 0 or -EINVAL (hdr does not describe plen encrypted bytes).
 */
int ovl_wire_payload_seal(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			  const uint8_t *plain, uint64_t plen, uint8_t *out);

/*
 * Seal buf[0..plen) in place: it becomes ciphertext, and the tag of chunk i
 * goes to tags[16 i .. 16 i + 16) (tags holds ovl_wire_chunk_count(plen) *
 * OVL_WIRE_TAG_BYTES bytes). What goes on the wire is chunk 0, tag 0, chunk
 * 1, tag 1, ... 0 or -EINVAL as ovl_wire_payload_seal().
 */
int ovl_wire_payload_seal_detached(const struct ovl_wire_session *s,
				   const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint8_t *buf,
				   uint64_t plen, uint8_t *tags);

/*
 * Incremental receive of one frame's payload, encrypted or not. A plain
 * value: embed it, ovl_wire_opener_init() it per frame; it holds no memory
 * (the bytes live in the caller's buffers) and borrows the session.
 *
 * The payload arrives as pieces: for an encrypted payload a piece is one
 * chunk, for a plaintext one whatever arrived. A piece accumulates from the
 * start of a buffer of the caller's (`piece`, with room for at least
 * OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES bytes, or the whole rest of a
 * plaintext payload as ovl_wire_opener_want() says), passed unchanged until
 * the piece completes; then its plaintext is at piece[0..n). A receiver can
 * point `piece` into its object buffer at the plaintext received so far and
 * get the object in place with no further copy.
 */
struct ovl_wire_opener {
	const struct ovl_wire_session *s;  /* borrowed: the rx key */
	uint8_t hdr[OVL_WIRE_HDR_BYTES];   /* the received header bytes (the AEAD binds them) */
	bool encrypted;
	uint64_t wire_left;                /* payload bytes not yet taken */
	uint64_t plain_left;               /* plaintext bytes not yet given back */
	uint32_t idx;                      /* chunk being received (the failed one after -EBADMSG) */
	size_t fill;                       /* bytes of the current chunk held in the piece */
	size_t need;                       /* sealed size of the current chunk */
};

/*
 * Start on the payload of the frame whose header bytes (as received and
 * opened with ovl_wire_head_open()) are hdr. 0, or -EBADMSG when hdr says
 * encrypted and its payload_len is no run of chunks.
 */
int ovl_wire_opener_init(struct ovl_wire_opener *o, const struct ovl_wire_session *s,
			 const uint8_t hdr[OVL_WIRE_HDR_BYTES]);

/*
 * Payload bytes the current piece can still take: for an encrypted payload
 * the rest of the current chunk with its tag, for a plaintext one the rest
 * of the payload; 0 when the payload is complete. A receiver may receive
 * straight into piece + o->fill, at most this many bytes, and pass that as
 * `in` (then nothing is copied).
 */
size_t ovl_wire_opener_want(const struct ovl_wire_opener *o);

/* Whether every payload byte was taken (and every chunk opened). */
bool ovl_wire_opener_done(const struct ovl_wire_opener *o);

/*
 * Take payload bytes in[0..len) into piece + o->fill (copied with memmove,
 * so in may overlap the piece; nothing is copied when in == piece +
 * o->fill). Stops at the end of a chunk, and at the end of the payload:
 * returns how many bytes were taken (0..len). *plain is 0 while the piece is
 * incomplete; when it completes, *plain is its plaintext length and
 * piece[0..*plain) holds the plaintext (the next piece starts afresh, in a
 * buffer the caller chooses). Returns -EBADMSG when a chunk's tag does not
 * verify (tampered, reordered, truncated or replayed; o->idx names the
 * chunk; its bytes are wiped): the payload is lost, close the connection.
 */
ssize_t ovl_wire_opener_feed(struct ovl_wire_opener *o, uint8_t *piece, const uint8_t *in,
			     size_t len, size_t *plain);

/*
 * Open a whole received payload in place: buf[0..wire) holds the payload of
 * the frame whose header bytes are hdr (payload_len == wire); afterwards
 * buf[0..*plain) is the plaintext. A plaintext frame is left as it is.
 * 0, or -EBADMSG (a bad length, or a chunk that does not verify: *bad_chunk,
 * may be NULL, names it).
 */
int ovl_wire_payload_open(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			  uint8_t *buf, uint64_t wire, uint64_t *plain, uint32_t *bad_chunk);

/* ---- handshake ------------------------------------------------------------ */

/*
 * How a peer certificate is judged. Returns 0 and fills *out with the
 * decoded, verified certificate, or a negative errno with words in err.
 * `slice` is the slice the client named in HELLO ("" when none; always ""
 * on the client side).
 */
typedef int (*ovl_wire_verify_fn)(void *arg, const uint8_t *cert, size_t len, const char *slice,
				  struct ovl_cert *out, char *err, size_t errlen);

struct ovl_wire_hs_cfg {
	const struct ovl_id *id;    /* our identity (borrowed; its Curve25519 pair is used) */
	const uint8_t *cert;        /* our certificate (borrowed), at most OVL_CERT_MAX_BYTES */
	size_t cert_len;
	/* Peer certificates: `verify` when set, otherwise ovl_peers_admit(peers, ..., now). */
	ovl_wire_verify_fn verify;
	void *verify_arg;
	struct ovl_peers *peers;
	uint64_t now;               /* unix seconds for `peers` (trusted time) */
	const char *slice;          /* client: optional slice to name in HELLO */
	const uint8_t *nonce;       /* tests: fixed 32-byte nonce; NULL = random */
	uint32_t ver_major;         /* tests: version to announce; 0 = this build's */
};

struct ovl_wire_hs;

/* A client (HELLO sender) or server handshake. The config is copied, its
 * pointers borrowed until the handshake is destroyed. 0, -EINVAL, -ENOMEM. */
int ovl_wire_client_new(struct ovl_wire_hs **out, const struct ovl_wire_hs_cfg *cfg, char *err,
			size_t errlen);
int ovl_wire_server_new(struct ovl_wire_hs **out, const struct ovl_wire_hs_cfg *cfg, char *err,
			size_t errlen);

/* Wipe and free *hs, NULL it. Accepts NULL. */
void ovl_wire_hs_destroy(struct ovl_wire_hs **hs);

/* Client: write the HELLO frame into out[0..cap). Returns its length, or
 * -ENOSPC / -EINVAL. Call once. */
int ovl_wire_client_hello(struct ovl_wire_hs *hs, uint8_t *out, size_t cap, char *err,
			  size_t errlen);

/*
 * Server: consume the complete HELLO frame in[0..len) and write the answer
 * into out[0..cap) (OVL_WIRE_HEAD_MAX_BYTES always suffices), its length in
 * *outlen. Send the answer in every case. Returns 0 (HELLO_OK written; the
 * session is ready, though the client's key is proven only by its first
 * request's MAC), or a negative errno with an ERROR frame written (then
 * close): -EBADMSG bad frame, -EPROTONOSUPPORT unknown major version, the
 * verifier's error for a refused certificate (-EKEYEXPIRED, -EKEYREVOKED,
 * -ENOKEY, ...). *outlen is 0 only when out is too small (-ENOSPC).
 */
int ovl_wire_server_hello(struct ovl_wire_hs *hs, const uint8_t *in, size_t len, uint8_t *out,
			  size_t cap, size_t *outlen, char *err, size_t errlen);

/*
 * Client: consume the complete HELLO_OK (or ERROR) frame in[0..len). 0 when
 * the server's certificate is valid and its proof verifies. Otherwise:
 * -ECONNREFUSED (the server sent ERROR; err quotes its code and text; see
 * *status, may be NULL), -EBADE (proof mismatch: the server does not hold
 * the key its certificate names), -EPROTONOSUPPORT, -EBADMSG, or the
 * verifier's error.
 */
int ovl_wire_client_finish(struct ovl_wire_hs *hs, const uint8_t *in, size_t len,
			   uint32_t *status, char *err, size_t errlen);

/* After success on either side: move the session keys into *s (the
 * handshake keeps none). 0 or -EINVAL when the handshake is not done. */
int ovl_wire_hs_session(struct ovl_wire_hs *hs, struct ovl_wire_session *s);

/*
 * Write an unauthenticated ERROR frame (status and text) into out[0..cap):
 * what a server sends when it refuses before keys exist (too many
 * connections, a malformed HELLO). Returns the length or -ENOSPC.
 */
int ovl_wire_error_frame(uint32_t status, const char *text, uint8_t *out, size_t cap);

/* Parse an ERROR frame's meta. 0 or -EBADMSG. */
int ovl_wire_error_parse(const uint8_t *meta, size_t len, uint32_t *status,
			 char text[OVL_WIRE_TEXT_SIZE], char *err, size_t errlen);

/* ---- request and response meta ------------------------------------------- */

/*
 * A version (docs/PROTOCOL.md 7.7, "Versions"): ordered by hlc, then node.
 * (0, 0) is "no version", older than every real one; a version a request
 * carries has hlc >= 1.
 */
struct ovl_wire_ver {
	uint64_t hlc;   /* hybrid logical clock: (unix ms << 16) | counter */
	uint64_t node;  /* the head's node id, first 8 bytes big-endian */
};

/* <0, 0, >0 as a is older than, the same as, newer than b. */
int ovl_wire_ver_cmp(const struct ovl_wire_ver *a, const struct ovl_wire_ver *b);

/* One entry of a forwarded write's chain: a node that must store the write. */
struct ovl_wire_hop {
	uint8_t id[OVL_WIRE_NODE_ID_BYTES];    /* the node */
	bool has_home;                         /* false: id is a home replica of the key */
	uint8_t home[OVL_WIRE_NODE_ID_BYTES];  /* has_home: id keeps a hinted copy for home */
};

/* `fwd` of a forwarded PUT or DELETE (only nodes send it). */
struct ovl_wire_fwd {
	uint32_t nchain;                                /* 0..OVL_WIRE_CHAIN_MAX */
	struct ovl_wire_hop chain[OVL_WIRE_CHAIN_MAX];  /* who stores it after the receiver, in order */
	bool has_home;                                  /* false: the receiver is a home replica */
	uint8_t home[OVL_WIRE_NODE_ID_BYTES];           /* has_home: the receiver keeps a hint for home */
};

struct ovl_wire_req {
	uint8_t type;                      /* OVL_WIRE_T_PUT .. OVL_WIRE_T_HEAL */
	char slice[OVL_WIRE_NAME_SIZE];    /* every request: slice name, 1..63 bytes */
	uint64_t epoch;                    /* every request: the client's map epoch */
	uint8_t key[OVL_WIRE_KEY_MAX_BYTES]; /* PUT GET DELETE STAT: 1..1024 bytes; LIST: prefix 0..1024 */
	uint32_t key_len;
	uint64_t size;                     /* PUT: object bytes (plaintext), 0..64 MiB */
	uint32_t crc;                      /* PUT: crc32c of the object */
	bool has_range;                    /* GET: offset/length given */
	uint64_t offset, length;           /* GET: range */
	uint8_t after[OVL_WIRE_KEY_MAX_BYTES]; /* LIST: start strictly after this key (0..1024) */
	uint32_t after_len;
	uint32_t limit;                    /* LIST: 1..OVL_WIRE_LIST_MAX; 0 = the maximum */
	bool vers;                         /* LIST: answer with versions and tombstones */
	bool has_bucket;                   /* LIST (nodes only): only keys of this digest bucket */
	uint8_t bucket;                    /* ... shared with the asking node (7.13) */
	/* LIST with bucket: the keys of every bucket in this set instead (bit b
	 * of byte b / 8, least significant first; `bucket` is in it); a node
	 * that honours it says so with by_set in the response */
	bool has_bucket_set;
	uint8_t bucket_set[OVL_WIRE_DIGEST_BUCKETS / 8];
	uint32_t buckets;                  /* DIGEST: 0 (the root) or OVL_WIRE_DIGEST_BUCKETS */
	bool check_only;                   /* HEAL: compare and count, repair nothing */
	bool has_rate;                     /* HEAL: set the node's repair rate limit */
	uint64_t rate;                     /* ... bytes/s, 0: unlimited */
	bool has_duty;                     /* HEAL: set the node's repair duty cycle */
	uint32_t duty;                     /* ... percent, 1..100 */
	bool repair;                       /* PUT, DELETE forwarded: a repair copy (needs ver/fwd) */
	/* PUT, DELETE forwarded by a node: both or neither (`ver` and `fwd` go together) */
	bool has_ver;
	struct ovl_wire_ver ver;           /* the write's version, hlc >= 1 */
	bool has_fwd;
	struct ovl_wire_fwd fwd;
};

struct ovl_wire_counter {
	char name[OVL_WIRE_NAME_SIZE];
	uint64_t value;
};

struct ovl_wire_resp {
	uint8_t type;                      /* the request's type | OVL_WIRE_T_RESPONSE */
	uint32_t status;                   /* enum ovl_wire_status, or a newer code */
	char message[OVL_WIRE_TEXT_SIZE];  /* for people; "" when ok */
	uint64_t epoch;                    /* the node's map epoch (newer one on stale-map) */
	uint64_t size;                     /* PUT, STAT: object size; GET: whole object size */
	bool has_crc;
	uint32_t crc;                      /* PUT, STAT: object crc; GET, LIST, MAP: crc of the payload */
	uint64_t seq;                      /* PUT, STAT: the store's sequence of the object */
	uint64_t offset;                   /* GET: where the returned bytes start */
	uint32_t count;                    /* LIST: keys in the payload */
	bool more;                         /* LIST: more keys follow `after` the last one */
	bool by_set;                       /* LIST: the keys are of the request's bucket_set */
	uint32_t ncounters;                /* NODE_STAT, HEAL */
	struct ovl_wire_counter counters[OVL_WIRE_COUNTERS_MAX];
	/* versions: GET and STAT (the object's; with tomb on not-found, the
	 * tombstone's), PUT and DELETE (the write's) */
	bool has_ver;
	struct ovl_wire_ver ver;
	bool tomb;                         /* GET, STAT not-found: the key is a tombstone at ver */
	bool vers;                         /* LIST: the payload is the versioned form */
	/* PUT, DELETE of a replicated write */
	bool has_held;
	uint32_t nheld;                    /* 0..OVL_WIRE_HELD_MAX */
	uint8_t held[OVL_WIRE_HELD_MAX][OVL_WIRE_NODE_ID_BYTES]; /* nodes holding it durably */
	uint32_t homes;                    /* how many of held are at their proper home (<= nheld) */
	bool superseded;                   /* this node already held a newer version */
};

/*
 * Encode a request's / response's meta into out[0..cap). Checks every field
 * first (the encoder never writes what the decoder refuses). Returns the
 * length, -EINVAL (err names the field) or -ENOSPC.
 */
int ovl_wire_req_encode(const struct ovl_wire_req *r, uint8_t *out, size_t cap, char *err,
			size_t errlen);
int ovl_wire_resp_encode(const struct ovl_wire_resp *r, uint8_t *out, size_t cap, char *err,
			 size_t errlen);

/*
 * Decode the meta of a frame of type `type` (from its header). Runs
 * ovl_mp_check() first; refuses trailing bytes, duplicate or non-string
 * keys, missing required fields, wrong types and values out of range;
 * skips unknown keys. 0 or -EBADMSG (err: "<type>: field '<name>' ..."),
 * -E2BIG (over the limits).
 */
int ovl_wire_req_decode(uint8_t type, const uint8_t *meta, size_t len, struct ovl_wire_req *r,
			char *err, size_t errlen);
int ovl_wire_resp_decode(uint8_t type, const uint8_t *meta, size_t len, struct ovl_wire_resp *r,
			 char *err, size_t errlen);

/*
 * LIST payload: a msgpack array of bin (the keys, 1..1024 bytes each, at
 * most OVL_WIRE_LIST_MAX). Encode: returns the length, -ENOSPC or -EINVAL.
 * Decode: *keys (calloc'd, the caller frees; entries point into buf) and
 * *n; 0, -EBADMSG or -E2BIG, -ENOMEM.
 */
struct ovl_wire_bin {
	const uint8_t *ptr;
	uint32_t len;
};
int ovl_wire_keys_encode(const struct ovl_wire_bin *keys, uint32_t n, uint8_t *out, size_t cap);
int ovl_wire_keys_decode(const uint8_t *buf, size_t len, struct ovl_wire_bin **keys, uint32_t *n,
			 char *err, size_t errlen);

/*
 * The versioned LIST payload (a LIST with `vers`, answered with `vers`): a
 * msgpack array of at most OVL_WIRE_LIST_MAX entries, each an array of
 * exactly four: [key bin 1..1024, hlc uint, node uint, tomb bool]
 * (tombstones included). Encode: the length, -ENOSPC or -EINVAL. Decode:
 * *ents (calloc'd, the caller frees; keys point into buf) and *n; 0,
 * -EBADMSG or -E2BIG (err says which entry and why), -ENOMEM.
 */
struct ovl_wire_vkey {
	const uint8_t *ptr;       /* the key */
	uint32_t len;
	struct ovl_wire_ver ver;  /* (0, 0): written without a version */
	bool tomb;                /* a tombstone (a delete at ver) */
};
int ovl_wire_vkeys_encode(const struct ovl_wire_vkey *ents, uint32_t n, uint8_t *out, size_t cap);
int ovl_wire_vkeys_decode(const uint8_t *buf, size_t len, struct ovl_wire_vkey **ents, uint32_t *n,
			  char *err, size_t errlen);

#endif
