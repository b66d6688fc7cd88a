/*
 * shelf_int.h: libshelf's private header, shared by its three parts:
 *
 * - map.c: slice maps: fetched from the broker or the nodes, cached in the
 *   client directory, decoded and verified, and placement lookups;
 * - client.c: connections to nodes (through ovl_dpc) and one request on one;
 * - replica.c: the order in which a key's replicas are tried, the nodes
 *   remembered as unreachable, the tombstone rule;
 * - shelf.c: the public API (shelf_* of tools/shelf.h);
 * - large.c: large objects (chunks, manifests, intents) and streaming.
 *
 * Every function returns 0 or a negative errno and writes what failed into
 * err, as the public API does.
 */
#ifndef SHELF_INT_H
#define SHELF_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "overlay.h"
#include "shelf.h"

#define SHELF_API __attribute__((visibility("default")))
#define SHELF_MAP_MAX_BYTES (16u << 20)
#define SHELF_CONNS_MAX 64
#define SHELF_SLICES_MAX 16
#define SHELF_MAP_ANSWERS 3 /* nodes asked for a map that answer, before keeping the newest */
#define SH_UNREACH_MAX 64   /* nodes remembered as unreachable */

struct sh_map {
	char slice[OVL_MSG_NAME_SIZE];
	uint8_t *buf;          /* the encoded map; bins in msg point into it */
	size_t len;            /* bytes of it */
	struct ovl_msg msg;
	bool valid;
};

struct sh_node_addr {
	struct in6_addr addr;
	uint16_t port;
};

/* A connection to a node; cn is NULL when the slot is free. */
struct sh_conn {
	struct in6_addr addr;
	uint16_t port;
	struct ovl_dpc_conn *cn;
};

/* A node that refused a connection or did not answer, tried last until until_ms. */
struct sh_unreach {
	struct in6_addr addr;
	uint16_t port;
	uint64_t until_ms;     /* ovl_mono_ms() (CLOCK_MONOTONIC: the same in every process) */
};

/* The last put or rm's answer (shelf_last_write()). */
struct sh_write {
	bool valid;
	struct shelf_write_info info;
};

struct shelf {
	char dir[512], broker[256];
	struct ovl_id *id;
	uint8_t cert[OVL_CERT_MAX_BYTES];
	size_t cert_len;
	uint8_t broker_key[OVL_KEY_BYTES];
	uint8_t broker_sign_pk[OVL_ID_BYTES]; /* checks map signatures (PROTOCOL.md 6.4) */
	struct sh_node_addr nodes[SHELF_NODES_MAX]; /* asked for maps when no broker answers */
	unsigned nnodes;
	struct sh_node_addr hint;             /* a node that answered stale-map: it has a newer map */
	bool has_hint;
	char map_source[96];                  /* where the last map came from */
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	void *zctx;
	ovl_link_client_t *link;
	struct sh_map maps[SHELF_SLICES_MAX];
	struct sh_conn conns[SHELF_CONNS_MAX];
	unsigned nconns;
	int timeout_ms;
	uint64_t deadline_ms;                 /* the current operation's end (ovl_mono_ms) */
	shelf_progress_cb progress;
	void *progress_arg;
	shelf_warn_cb warn;                   /* shelf_set_warn(); NULL: none */
	void *warn_arg;
	int connect_timeout_ms;               /* shelf_set_connect_timeout() */
	int unreach_ms;                       /* shelf_set_unreachable_ms(); 0: not remembered */
	char site[OVL_MSG_SITE_SIZE];         /* shelf_set_chassis(): "" unknown */
	char chassis[OVL_MSG_CHASSIS_SIZE];
	struct sh_unreach unreach[SH_UNREACH_MAX];
	unsigned nunreach;
	bool unreach_loaded;                  /* client_dir/cache/unreachable read */
	struct shelf_counters counters;
	struct sh_write last_write;
	struct sh_aio *aio;                   /* aio.c: the asynchronous operations; NULL until used */
	unsigned inflight;                    /* shelf_set_inflight(): chunks per streaming call */
	bool inflight_set;                    /* ...called: no SH_WINDOW_BYTES_DEFAULT bound */
};

/* printf into err[0..errlen) and return code. */
int sh_fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A public operation starts: its whole work (map fetch, connect, handshake,
 * request, retry) ends by now + timeout_ms. */
void sh_op_begin(struct shelf *s);

/* Milliseconds left of the current operation, at least 1 (a wait with no
 * time left still fails at once rather than blocking). */
int sh_left_ms(const struct shelf *s);

/* The current operation's time is up. */
bool sh_expired(const struct shelf *s);

/* Read a whole small file into buf[0..cap-1), NUL-terminated; 0 or -errno. */
int sh_read_file(const char *path, uint8_t *buf, size_t cap, size_t *len);

/* ---- map.c ---- */

/* The map to use: the one in memory, else the cached one (nodes answer
 * stale-map when it is behind, and then it is fetched again), else the
 * broker's. *out is borrowed from s. */
int sh_map_get(struct shelf *s, const char *slice, struct sh_map **out, char *err, size_t errlen);

/* A fresh map from the broker; when no broker answers, the newest of the
 * cached one and those nodes hold. */
int sh_map_fetch(struct shelf *s, const char *slice, struct sh_map **out, char *err,
		 size_t errlen);

/* The member holding key (the primary, by placement over members up). */
int sh_map_locate(const struct sh_map *m, const void *key, size_t klen,
		  const struct ovl_msg_member **out, char *err, size_t errlen);

/* Free every map s holds. */
void sh_maps_release(struct shelf *s);

/* ---- client.c ---- */

/* A handshaken connection to the node at addr:port (reused when open).
 * *out is borrowed from s. -EHOSTUNREACH (no answer), -EACCES (refused),
 * or the handshake's error. */
int sh_conn_get(struct shelf *s, const uint8_t addr[16], uint16_t port, const char *slice,
		struct sh_conn **out, char *err, size_t errlen);

/* The same, with connect and handshake bounded by budget_ms (at most the
 * operation's time left). */
int sh_conn_get_within(struct shelf *s, const uint8_t addr[16], uint16_t port, const char *slice,
		       int budget_ms, struct sh_conn **out, char *err, size_t errlen);

/* ---- replica.c ---- */

/*
 * The order in which the members of a map are tried for one key.
 *  1. the live homes (placement's R over the members not `out`), those in
 *     the client's chassis first when `reads` and chassis is given, then
 *     placement order;
 *  2. the next live members by placement over the live members only (where
 *     a substitute keeps a hinted copy);
 *  3. the other live members, in map order;
 *  4. the homes that are not live, in placement order, then the other
 *     members that are not live, in map order.
 * "Live": dead[i] is false (the caller: not `down` in the map and not
 * remembered as unreachable). `out` members are never listed.
 */
struct sh_order {
	unsigned n;          /* entries */
	unsigned *idx;       /* member indexes, in the order to try */
	bool *home;          /* per entry: one of the R homes */
	unsigned nhomes;     /* homes (<= R; fewer when fewer members can hold objects) */
	unsigned nlive;      /* the first nlive entries are live */
};

/* Fill o (its arrays malloc'd; sh_order_release()). site and chassis may be
 * NULL or "" (unknown). 0, -ENOMEM, -EHOSTUNREACH (no member can hold
 * objects). */
int sh_order_build(const struct ovl_msg_map *mp, const void *key, size_t klen, const bool *dead,
		   bool reads, const char *site, const char *chassis, struct sh_order *o);
void sh_order_release(struct sh_order *o);

/* Tombstones seen during one read: an object is returned only when it is
 * newer than every one (docs/PROTOCOL.md 8.2). */
struct sh_tombs {
	bool any;
	struct ovl_wire_ver newest;
};
void sh_tombs_note(struct sh_tombs *t, const struct ovl_wire_ver *v);
bool sh_tombs_allow(const struct sh_tombs *t, const struct ovl_wire_ver *found);

/* Whether addr:port is remembered as unreachable now (loads the client
 * directory's file the first time). */
bool sh_unreach_is(struct shelf *s, const uint8_t addr[16], uint16_t port);
/* Remember it for s->unreach_ms from now / forget it; either saves the file
 * when something changed (a failure to save costs only a timeout later). */
void sh_unreach_mark(struct shelf *s, const uint8_t addr[16], uint16_t port);
void sh_unreach_clear(struct shelf *s, const uint8_t addr[16], uint16_t port);

/* ---- replica.c: one read across the replicas (shared by shelf.c and aio.c) ---- */

/* How many times a replicated read or write starts again with a fresh map
 * after a node answered stale-map: while nodes come and go the epoch may
 * move again before the retry arrives (8 nodes of a chassis restarting
 * make 8 epochs in a second; with 3, a read during a chassis's restart
 * failed, tests/integration/repl_kill.sh). The call's time bounds them. */
#define SH_STALE_RETRIES 8

/* Members beyond R asked when every home answered a plain not-found (a
 * rebalance may still be moving the copy from a displaced home). */
#define SH_REBALANCE_EXTRA 2

#define SH_KSHOW_BYTES 80

/* The key as errors show it: its first 64 bytes, "..." when longer. */
void sh_key_show(const void *key, size_t klen, char out[SH_KSHOW_BYTES]);

/* A slice is named and the key is 1..OVL_WIRE_KEY_MAX_BYTES: 0, else
 * -EINVAL with err saying why. */
int sh_key_check(const char *what, const char *slice, const char *kshow, size_t klen, char *err,
		 size_t errlen);

/* A node's answer as text: "node ADDR: STATUS: MESSAGE". */
void sh_status_text(char *out, size_t len, const char *node, const struct ovl_wire_resp *r);

/* The members of a map that are not live now: down in the map, or
 * remembered as unreachable. calloc'd (the caller frees); NULL on -ENOMEM. */
bool *sh_dead_members(struct shelf *s, const struct ovl_msg_map *mp);

/* One member to try for a key, copied out of the map (the map may be
 * replaced while an asynchronous operation still uses it). */
struct sh_cand {
	uint8_t id[32];
	uint8_t addr[16];
	uint16_t port;
	bool home;                        /* one of the key's R homes */
	char text[INET6_ADDRSTRLEN];      /* addr as text */
};
void sh_cand_set(struct sh_cand *c, const struct ovl_msg_member *mb, bool home);

/* A node did not answer: counted, and remembered as unreachable. */
void sh_node_lost(struct shelf *s, const struct sh_cand *c);
/* A replica is damaged: counted, and the warn callback told. */
void sh_node_damaged(struct shelf *s, const char *what, const char *kshow, const struct sh_cand *c,
		     const char *text);
/* The answer's version, {0, 0} when it gives none. */
struct ovl_wire_ver sh_resp_ver(const struct ovl_wire_resp *r);

/* The answer to give when no replica has the object: the most telling
 * failure seen, by rank. */
enum {
	SH_RK_NONE, SH_RK_OTHER, SH_RK_BUSY, SH_RK_UNREACHABLE, SH_RK_NOT_FOUND, SH_RK_DAMAGED,
	SH_RK_DELETED,
	SH_RK_MAP /* no map, no member: nothing was asked */
};

struct sh_rd_fail {
	int rank, code;
	char text[768];
};
/* Keep (rank, code, text) when rank is higher than the one kept. */
void sh_rd_note(struct sh_rd_fail *f, int rank, int code, const char *text);

/* One pass of a read over a key's candidates (one map). */
struct sh_rd_pass {
	struct sh_rd_fail fail;
	struct sh_tombs tombs;
	unsigned homes_final;     /* homes whose answer is final (not found, or too old) */
	unsigned beyond;          /* members asked beyond the homes after that */
	unsigned tried;           /* candidates asked */
	unsigned nf[OVL_PLACE_REPLICAS_MAX]; /* positions that answered a plain not-found */
	unsigned nnf;
	bool saw_busy;
};
/* Start a pass (first: of the operation; else fail.code stays). */
void sh_rd_pass_begin(struct sh_rd_pass *p, bool first);
/* Before asking the candidate (home or not): true when the pass is over
 * (every home answered for good, and the members beyond were asked). */
bool sh_rd_pass_done(struct sh_rd_pass *p, bool home, unsigned nhomes);
/* The request to c failed without an answer (ret: -EHOSTUNREACH, or a bad
 * answer -EBADMSG/-EPROTO/-EIO with the connection closed): counted and
 * noted. */
void sh_rd_lost(struct shelf *s, struct sh_rd_pass *p, const char *what, const char *kshow,
		const struct sh_cand *c, int ret, const char *text);

enum sh_rd_verdict {
	SH_RD_NEXT,    /* ask the next candidate */
	SH_RD_OBJECT,  /* the object (checksum verified): probe the positions in nf[] with
			* STAT when type is GET and nnf > 0 (sh_tombs_probe_answer()), then
			* sh_rd_accept() */
	SH_RD_STALE,   /* the node has a newer map (s->hint set): start again with a fresh map */
};
/* What c's answer r (body[0..blen) for a GET) at position pos means; the
 * node is forgotten as unreachable, and counters, tombstones and failures
 * noted. stale_ok: a stale-map answer may start again. */
enum sh_rd_verdict sh_rd_answer(struct shelf *s, struct sh_rd_pass *p, const char *what,
				const char *kshow, const struct sh_cand *c, unsigned pos,
				uint8_t type, const struct ovl_wire_resp *r, const uint8_t *body,
				size_t blen, bool stale_ok);
/* A STAT probe's answer to a member that answered a GET with a plain not-found. */
void sh_tombs_probe_answer(struct sh_rd_pass *p, const struct ovl_wire_resp *r);
/* The object answered is newer than every tombstone seen: give it. Else
 * counted as skipped (false). */
bool sh_rd_accept(struct shelf *s, struct sh_rd_pass *p, bool home, const struct ovl_wire_resp *r);
/* The read failed: its most telling failure into err; returns its code. */
int sh_rd_fail_end(struct sh_rd_pass *p, const char *what, const char *kshow, char *err,
		   size_t errlen);
/* The pause before asking again after busy, the retries-th time (ms). */
int sh_busy_pause_ms(unsigned retries);


/* ---- aio.c ---- */

/* Free every asynchronous operation without its callback, and the
 * connections (shelf_close()). */
void sh_aio_destroy(struct shelf *s);
/* Drop the queued (not started) operations with this callback, without
 * calling it. */
void sh_aio_cancel_queued(struct shelf *s, shelf_done_fn done);

/*
 * One request of `type` (q's other fields are the caller's) on c: send,
 * wait for the answer and its payload. With encrypt, a request payload goes
 * out as AEAD chunks and a response payload must arrive as chunks
 * (PROTOCOL.md 7.6). *r is the answer (whatever its status); *out (when
 * out is given) the plaintext payload, malloc'd, the caller frees it.
 * -EHOSTUNREACH when the node went away or did not answer; -EBADMSG,
 * -EPROTO, -EIO when it answered wrongly (the connection is closed).
 */
int sh_call(struct shelf *s, struct sh_conn *c, uint8_t type, struct ovl_wire_req *q,
	    const void *payload, size_t plen, bool encrypt, struct ovl_wire_resp *r,
	    uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* Close every connection. */
void sh_conns_close(struct shelf *s);

/* ---- shelf.c: one stored object as the nodes hold it ----
 *
 * No large-object rule applies here (no reserved-key check, no manifest):
 * large.c builds large objects from these, and the public calls reach them
 * through large.c. Each is one operation (its own timeout). */

/* What a node said of an object: its stored size, crc (of the whole
 * value; of the range for a ranged GET), seq and version. */
struct sh_objinfo {
	uint64_t size;
	uint32_t crc;
	uint64_t seq;
	bool has_ver;
	struct ovl_wire_ver ver;
};

int sh_obj_put(struct shelf *s, const char *slice, const void *key, size_t klen,
	       const void *data, size_t len, char *err, size_t errlen);
/* Bytes [off, off+len) (len UINT64_MAX: to the end) into a malloc'd *data;
 * info (may be NULL) as the node answered. */
int sh_obj_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
	       uint64_t len, uint8_t **data, size_t *dlen, struct sh_objinfo *info, char *err,
	       size_t errlen);
int sh_obj_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
		struct sh_objinfo *info, char *err, size_t errlen);
int sh_obj_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		  size_t errlen);
/* shelf_list_partial(), with the reserved keys too when `reserved` (for
 * tests and tools that look at chunks and intents). */
int sh_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
	    const void *after, size_t alen, unsigned limit, shelf_list_cb cb, void *arg,
	    shelf_missing_cb missing, void *missing_arg, bool reserved, char *err, size_t errlen);

/* ---- large.c: large objects (docs/PROTOCOL.md, "Large objects") ----
 *
 * The formats (chunk and intent keys, the manifest, the intent) are
 * overlay/ovl_large.h's.
 */
#define SH_INTENT_REFRESH_MS (15u * 60 * 1000) /* a quarter of the nodes' default chunk_gc_after (1 h) */
#define SH_INFLIGHT_DEFAULT 4
#define SH_INFLIGHT_MAX 64
#define SH_WINDOW_BYTES_DEFAULT (48ull << 20) /* chunk buffers of a transfer, inflight unset */

/* What follows "what 'KEY': " in an error text (the whole text when that
 * is not there): borrowed from e. */
const char *sh_err_inner(const char *e);

/* "chunk I of N (key HEX)" (N OVL_LARGE_COUNT_UNKNOWN: "chunk I (key HEX)"). */
void sh_chunk_name(char *out, size_t len, uint32_t i, uint32_t n,
		   const uint8_t id[OVL_LARGE_ID_BYTES]);
/* The words of chunk i's failed read (res; e: the read's error text):
 * "chunk I of N (key HEX): not found" or ": WHY". */
void sh_chunk_fail(const struct ovl_large_head *h, uint32_t i, int res, const char *e, char *err,
		   size_t errlen);
/* Chunk i's length and crc32c against entry i of the checked manifest
 * man: 0, or -EIO with err "chunk I of N (key HEX): damaged: ...". */
int sh_chunk_check(const void *man, const struct ovl_large_head *h, uint32_t i, size_t len,
		   uint32_t crc, char *err, size_t errlen);

/* ---- aio.c, for large.c: chunks through the asynchronous engine ---- */

/* Queue a GET of [off, off+len) / a PUT of libshelf's own key (the
 * reserved prefix allowed; a manifest's bytes are given as they are): as
 * shelf_get_async() / shelf_put_async(). */
/* shelf_get_async() of a whole object whose first pass asks in order o,
 * worked out by the caller with sh_order_build() for reads over the map of
 * `epoch` (shelf_get_batch() does, to group its keys by node). On success
 * the op takes o's arrays (o is zeroed); on failure o stays the caller's.
 * The order is used only while the map is still that epoch. */
int sh_aio_get_ordered(struct shelf *s, const char *slice, const void *key, size_t klen,
		       struct sh_order *o, uint64_t epoch, shelf_done_fn done, void *arg);
int sh_aio_get_chunk(struct shelf *s, const char *slice, const void *key, size_t klen,
		     uint64_t off, uint64_t len, shelf_done_fn done, void *arg);
int sh_aio_put_chunk(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const void *data, size_t len, shelf_done_fn done, void *arg);
/* Run the engine until at least one operation completed (or none is
 * left): 0, -EBUSY (inside a callback), -ENOMEM. */
int sh_aio_run_one(struct shelf *s);
/* Whether shelf_run() is running (a callback is the caller). */
bool sh_aio_running(const struct shelf *s);

/* The public object calls' bodies (shelf.h): put from a source, get to a
 * sink, stat, delete, with every large-object rule. */
int sh_large_put(struct shelf *s, const char *slice, const void *key, size_t klen,
		 const void *data, uint64_t size, shelf_read_fn rd, void *arg, char *err,
		 size_t errlen);
int sh_large_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
		 uint64_t len, shelf_write_fn wr, void *arg, void **whole, size_t *wlen,
		 uint64_t *total, char *err, size_t errlen);
int sh_large_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
		  struct shelf_objstat *st, char *err, size_t errlen);
int sh_large_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		    size_t errlen);

#endif
