#include "ovl_msg.h"

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovl_mp.h"
#include "ovl_mpr.h"
#include "ovl_util.h"

_Static_assert(sizeof(enum ovl_msg_state) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum ovl_msg_admin_op) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum ovl_msg_left_reason) == sizeof(int), "enums are stored as int");

/* ---- schemas --------------------------------------------------------------
 * FIELD() fills a descriptor from a struct member; the rest is per field. */

#define FIELD(key, ftype, req, st, member, ...)                                   \
	{ .name = key, .name_len = sizeof(key) - 1, .type = ftype, .required = req,   \
	  .offset = offsetof(st, member), .size = sizeof(((st *)0)->member), __VA_ARGS__ }
#define ARRAY(key, req, st, member, count, elem_field, max_count)                 \
	{ .name = key, .name_len = sizeof(key) - 1, .type = OVL_MSG_F_ARRAY,          \
	  .required = req, .offset = offsetof(st, member),                           \
	  .count_offset = offsetof(st, count), .elem = &elem_field, .max = max_count }
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))
#define REQ true
#define OPT false

static const char *const state_names[] = { "unknown", "up", "down", "out", NULL };
static const char *const left_reason_names[] = { "unknown", "expired", "revoked", "deleted",
							  NULL };
static const char *const op_names[] = { NULL, "list_nodes", "list_slices", "show_map",
					"create_slice", "delete_slice", "revoke_node", "stats",
					"fleet",
					NULL };
static const struct ovl_msg_field domain_fields[] = {
	FIELD("site", OVL_MSG_F_STR, REQ, struct ovl_msg_domain, site),
	FIELD("chassis", OVL_MSG_F_STR, REQ, struct ovl_msg_domain, chassis),
	FIELD("slot", OVL_MSG_F_STR, REQ, struct ovl_msg_domain, slot),
};
static const struct ovl_msg_schema domain_schema = {
	.name = "domain", .fields = domain_fields, .nfields = NFIELDS(domain_fields),
};

static const struct ovl_msg_field slice_fields[] = {
	FIELD("name", OVL_MSG_F_STR, REQ, struct ovl_msg_slice, name),
	FIELD("epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_slice, epoch),
	FIELD("replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_slice, replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("members", OVL_MSG_F_UINT, OPT, struct ovl_msg_slice, members,
	      .max = OVL_MSG_MEMBERS_MAX),
	FIELD("selector", OVL_MSG_F_STR, OPT, struct ovl_msg_slice, selector),
	FIELD("owner", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_slice, owner),
	FIELD("encrypt", OVL_MSG_F_BOOL, OPT, struct ovl_msg_slice, encrypt),
	FIELD("min_write_replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_slice, min_write_replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("allow_same_domain", OVL_MSG_F_BOOL, OPT, struct ovl_msg_slice, allow_same_domain),
	FIELD("chunk_size", OVL_MSG_F_UINT, OPT, struct ovl_msg_slice, chunk_size,
	      .max = UINT32_MAX),
};

int ovl_msg_chunk_size_check(uint32_t cs, char *err, size_t errlen)
{
	if (!cs || (cs >= OVL_MSG_CHUNK_SIZE_MIN && cs <= OVL_MSG_CHUNK_SIZE_MAX &&
		    cs % OVL_MSG_CHUNK_SIZE_ALIGN == 0))
		return 0;
	snprintf(err, errlen, "field 'chunk_size' (%u) must be %u..%u bytes (1 MiB..64 MiB), "
		 "a multiple of %u (64 KiB)", cs, OVL_MSG_CHUNK_SIZE_MIN, OVL_MSG_CHUNK_SIZE_MAX,
		 OVL_MSG_CHUNK_SIZE_ALIGN);
	return -EINVAL;
}

/* min_write_replicas, when present, is 1..replicas (and needs replicas) */
static int min_write_check(uint32_t min_write, uint32_t replicas, char *err, size_t errlen)
{
	if (!min_write || (replicas && min_write <= replicas))
		return 0;
	if (!replicas)
		snprintf(err, errlen, "field 'min_write_replicas' (%u) needs field 'replicas'",
			 min_write);
	else
		snprintf(err, errlen, "field 'min_write_replicas' (%u) must be at most 'replicas' (%u)",
			 min_write, replicas);
	return -EINVAL;
}

static int slice_check(const void *obj, char *err, size_t errlen)
{
	const struct ovl_msg_slice *s = obj;

	if (min_write_check(s->min_write_replicas, s->replicas, err, errlen) < 0)
		return -EINVAL;
	return ovl_msg_chunk_size_check(s->chunk_size, err, errlen);
}

static const struct ovl_msg_schema slice_schema = {
	.name = "slice", .fields = slice_fields, .nfields = NFIELDS(slice_fields),
	.check = slice_check,
};
static const struct ovl_msg_field slice_elem = {
	.type = OVL_MSG_F_STRUCT, .size = sizeof(struct ovl_msg_slice), .sub = &slice_schema,
};

static const struct ovl_msg_field member_fields[] = {
	FIELD("id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_member, id),
	FIELD("curve_key", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_member, curve_key),
	FIELD("addr", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_member, addr),
	FIELD("port", OVL_MSG_F_UINT, REQ, struct ovl_msg_member, port, .min = 1,
	      .max = 65535),
	FIELD("domain", OVL_MSG_F_STRUCT, REQ, struct ovl_msg_member, domain,
	      .sub = &domain_schema),
	FIELD("capacity", OVL_MSG_F_UINT, REQ, struct ovl_msg_member, capacity),
	FIELD("state", OVL_MSG_F_ENUM, REQ, struct ovl_msg_member, state,
	      .names = state_names, .open = true),
	FIELD("cert", OVL_MSG_F_BIN, OPT, struct ovl_msg_member, cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
};
static const struct ovl_msg_schema member_schema = {
	.name = "member", .fields = member_fields, .nfields = NFIELDS(member_fields),
};
static const struct ovl_msg_field member_elem = {
	.type = OVL_MSG_F_STRUCT, .size = sizeof(struct ovl_msg_member), .sub = &member_schema,
};

static const struct ovl_msg_field id_elem = {
	.type = OVL_MSG_F_FIXBIN, .size = OVL_MSG_ID_BYTES,
};

static const struct ovl_msg_field left_fields[] = {
	FIELD("id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_left, id),
	FIELD("epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_left, epoch),
	FIELD("reason", OVL_MSG_F_ENUM, REQ, struct ovl_msg_left, reason,
	      .names = left_reason_names, .open = true),
};
static const struct ovl_msg_schema left_schema = {
	.name = "left", .fields = left_fields, .nfields = NFIELDS(left_fields),
};
static const struct ovl_msg_field left_elem = {
	.type = OVL_MSG_F_STRUCT, .size = sizeof(struct ovl_msg_left), .sub = &left_schema,
};

static const struct ovl_msg_field node_info_fields[] = {
	FIELD("id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_node_info, id),
	FIELD("board", OVL_MSG_F_STR, REQ, struct ovl_msg_node_info, board),
	FIELD("version", OVL_MSG_F_STR, REQ, struct ovl_msg_node_info, version),
	FIELD("domain", OVL_MSG_F_STRUCT, REQ, struct ovl_msg_node_info, domain,
	      .sub = &domain_schema),
	FIELD("capacity", OVL_MSG_F_UINT, REQ, struct ovl_msg_node_info, capacity),
	FIELD("used", OVL_MSG_F_UINT, OPT, struct ovl_msg_node_info, used),
	FIELD("state", OVL_MSG_F_ENUM, REQ, struct ovl_msg_node_info, state,
	      .names = state_names, .open = true),
	FIELD("seen_ms", OVL_MSG_F_UINT, OPT, struct ovl_msg_node_info, seen_ms),
};
static const struct ovl_msg_schema node_info_schema = {
	.name = "node", .fields = node_info_fields, .nfields = NFIELDS(node_info_fields),
};
static const struct ovl_msg_field node_info_elem = {
	.type = OVL_MSG_F_STRUCT, .size = sizeof(struct ovl_msg_node_info),
	.sub = &node_info_schema,
};

static const struct ovl_msg_field stat_fields[] = {
	FIELD("name", OVL_MSG_F_STR, REQ, struct ovl_msg_stat, name),
	FIELD("value", OVL_MSG_F_UINT, REQ, struct ovl_msg_stat, value),
};
static const struct ovl_msg_schema stat_schema = {
	.name = "stat", .fields = stat_fields, .nfields = NFIELDS(stat_fields),
};
static const struct ovl_msg_field stat_elem = {
	.type = OVL_MSG_F_STRUCT, .size = sizeof(struct ovl_msg_stat), .sub = &stat_schema,
};

#define TS(st) FIELD("ts", OVL_MSG_F_BIN, REQ, st, ts, .max = OVL_MSG_OPAQUE_MAX_BYTES)

static const struct ovl_msg_field register_fields[] = {
	FIELD("node_id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_register, node_id),
	FIELD("curve_key", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_register, curve_key),
	FIELD("board", OVL_MSG_F_STR, REQ, struct ovl_msg_register, board),
	FIELD("version", OVL_MSG_F_STR, REQ, struct ovl_msg_register, version),
	FIELD("capacity", OVL_MSG_F_UINT, REQ, struct ovl_msg_register, capacity),
	FIELD("domain", OVL_MSG_F_STRUCT, REQ, struct ovl_msg_register, domain,
	      .sub = &domain_schema),
	FIELD("port", OVL_MSG_F_UINT, REQ, struct ovl_msg_register, port, .min = 1,
	      .max = 65535),
	FIELD("token", OVL_MSG_F_STR, OPT, struct ovl_msg_register, token),
	ARRAY("slices", OPT, struct ovl_msg_register, slices, n_slices, slice_elem,
	      OVL_MSG_SLICES_MAX),
	FIELD("group", OVL_MSG_F_STR, OPT, struct ovl_msg_register, group),
	FIELD("sig", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_register, sig),
	FIELD("cert", OVL_MSG_F_BIN, OPT, struct ovl_msg_register, cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
	FIELD("broker_cert", OVL_MSG_F_BIN, OPT, struct ovl_msg_register, broker_cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
};

static const struct ovl_msg_field register_ok_fields[] = {
	TS(struct ovl_msg_register_ok),
	FIELD("cert", OVL_MSG_F_BIN, REQ, struct ovl_msg_register_ok, cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
	FIELD("heartbeat_ms", OVL_MSG_F_UINT, REQ, struct ovl_msg_register_ok, heartbeat_ms,
	      .min = OVL_MSG_HEARTBEAT_MIN_MS, .max = OVL_MSG_HEARTBEAT_MAX_MS),
	ARRAY("slices", REQ, struct ovl_msg_register_ok, slices, n_slices, slice_elem,
	      OVL_MSG_SLICES_MAX),
	FIELD("broker_cert", OVL_MSG_F_BIN, OPT, struct ovl_msg_register_ok, broker_cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
	FIELD("crl", OVL_MSG_F_BIN, OPT, struct ovl_msg_register_ok, crl,
	      .max = OVL_MSG_CRL_MAX_BYTES),
};

static const struct ovl_msg_field heartbeat_fields[] = {
	FIELD("node_id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_heartbeat, node_id),
	FIELD("seq", OVL_MSG_F_UINT, REQ, struct ovl_msg_heartbeat, seq),
	FIELD("used", OVL_MSG_F_UINT, OPT, struct ovl_msg_heartbeat, used),
	FIELD("fleet", OVL_MSG_F_BIN, OPT, struct ovl_msg_heartbeat, fleet,
	      .max = OVL_MSG_FLEET_MAX_BYTES),
};

static const struct ovl_msg_field heartbeat_ok_fields[] = {
	TS(struct ovl_msg_heartbeat_ok),
	FIELD("seq", OVL_MSG_F_UINT, REQ, struct ovl_msg_heartbeat_ok, seq),
	ARRAY("slices", OPT, struct ovl_msg_heartbeat_ok, slices, n_slices, slice_elem,
	      OVL_MSG_SLICES_MAX),
	FIELD("fleet", OVL_MSG_F_BIN, OPT, struct ovl_msg_heartbeat_ok, fleet,
	      .max = OVL_MSG_FLEET_MAX_BYTES),
};

static const struct ovl_msg_field map_get_fields[] = {
	FIELD("slice", OVL_MSG_F_STR, REQ, struct ovl_msg_map_get, slice),
	FIELD("epoch", OVL_MSG_F_UINT, OPT, struct ovl_msg_map_get, epoch),
};

static const struct ovl_msg_field map_fields[] = {
	TS(struct ovl_msg_map),
	FIELD("slice", OVL_MSG_F_STR, REQ, struct ovl_msg_map, slice),
	FIELD("epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_map, epoch),
	FIELD("replicas", OVL_MSG_F_UINT, REQ, struct ovl_msg_map, replicas, .min = 1,
	      .max = OVL_MSG_REPLICAS_MAX),
	ARRAY("members", REQ, struct ovl_msg_map, members, n_members, member_elem,
	      OVL_MSG_MEMBERS_MAX),
	FIELD("crl", OVL_MSG_F_BIN, OPT, struct ovl_msg_map, crl, .max = OVL_MSG_CRL_MAX_BYTES),
	FIELD("encrypt", OVL_MSG_F_BOOL, OPT, struct ovl_msg_map, encrypt),
	FIELD("sig", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_map, sig),
	ARRAY("left", OPT, struct ovl_msg_map, left, n_left, left_elem, OVL_MSG_MEMBERS_MAX),
	FIELD("selector", OVL_MSG_F_STR, OPT, struct ovl_msg_map, selector),
	FIELD("owner", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_map, owner),
	FIELD("min_write_replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_map, min_write_replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("chunk_size", OVL_MSG_F_UINT, OPT, struct ovl_msg_map, chunk_size, .max = UINT32_MAX),
};

static const struct ovl_msg_field map_delta_fields[] = {
	TS(struct ovl_msg_map_delta),
	FIELD("slice", OVL_MSG_F_STR, REQ, struct ovl_msg_map_delta, slice),
	FIELD("base_epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_map_delta, base_epoch),
	FIELD("epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_map_delta, epoch),
	FIELD("replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_map_delta, replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	ARRAY("members", OPT, struct ovl_msg_map_delta, members, n_members, member_elem,
	      OVL_MSG_MEMBERS_MAX),
	ARRAY("removed", OPT, struct ovl_msg_map_delta, removed, n_removed, id_elem,
	      OVL_MSG_MEMBERS_MAX),
	FIELD("crl", OVL_MSG_F_BIN, OPT, struct ovl_msg_map_delta, crl,
	      .max = OVL_MSG_CRL_MAX_BYTES),
	FIELD("encrypt", OVL_MSG_F_BOOL, OPT, struct ovl_msg_map_delta, encrypt),
	FIELD("sig", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_map_delta, sig),
	ARRAY("left", OPT, struct ovl_msg_map_delta, left, n_left, left_elem,
	      OVL_MSG_MEMBERS_MAX),
};

/* map_report: what a node holds of a slice map, signature included, so that a
 * broker that lost its state learns the members it lacks (PROTOCOL.md 6.5).
 * The map's fields but `ts` and `crl`; `sig` is optional here so that the
 * broker refuses an unsigned map with its own reason. */
static const struct ovl_msg_field map_report_fields[] = {
	FIELD("slice", OVL_MSG_F_STR, REQ, struct ovl_msg_map, slice),
	FIELD("epoch", OVL_MSG_F_UINT, REQ, struct ovl_msg_map, epoch),
	FIELD("replicas", OVL_MSG_F_UINT, REQ, struct ovl_msg_map, replicas, .min = 1,
	      .max = OVL_MSG_REPLICAS_MAX),
	ARRAY("members", REQ, struct ovl_msg_map, members, n_members, member_elem,
	      OVL_MSG_MEMBERS_MAX),
	FIELD("encrypt", OVL_MSG_F_BOOL, OPT, struct ovl_msg_map, encrypt),
	FIELD("sig", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_map, sig),
	ARRAY("left", OPT, struct ovl_msg_map, left, n_left, left_elem, OVL_MSG_MEMBERS_MAX),
	FIELD("min_write_replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_map, min_write_replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("chunk_size", OVL_MSG_F_UINT, OPT, struct ovl_msg_map, chunk_size, .max = UINT32_MAX),
};

static const struct ovl_msg_field cert_renew_fields[] = {
	FIELD("node_id", OVL_MSG_F_FIXBIN, REQ, struct ovl_msg_cert_renew, node_id),
	FIELD("cert", OVL_MSG_F_BIN, OPT, struct ovl_msg_cert_renew, cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
};

static const struct ovl_msg_field cert_fields[] = {
	TS(struct ovl_msg_cert),
	FIELD("cert", OVL_MSG_F_BIN, REQ, struct ovl_msg_cert, cert,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
};

static const struct ovl_msg_field error_fields[] = {
	FIELD("code", OVL_MSG_F_UINT, REQ, struct ovl_msg_error, code, .min = 1,
	      .max = UINT32_MAX),
	FIELD("message", OVL_MSG_F_STR, REQ, struct ovl_msg_error, message),
	FIELD("ts", OVL_MSG_F_BIN, OPT, struct ovl_msg_error, ts,
	      .max = OVL_MSG_OPAQUE_MAX_BYTES),
};

static const struct ovl_msg_field admin_fields[] = {
	FIELD("op", OVL_MSG_F_ENUM, REQ, struct ovl_msg_admin, op, .names = op_names),
	FIELD("slice", OVL_MSG_F_STR, OPT, struct ovl_msg_admin, slice),
	FIELD("node_id", OVL_MSG_F_FIXBIN, OPT, struct ovl_msg_admin, node_id),
	FIELD("replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_admin, replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("selector", OVL_MSG_F_STR, OPT, struct ovl_msg_admin, selector),
	FIELD("encrypt", OVL_MSG_F_BOOL, OPT, struct ovl_msg_admin, encrypt),
	FIELD("min_write_replicas", OVL_MSG_F_UINT, OPT, struct ovl_msg_admin, min_write_replicas,
	      .max = OVL_MSG_REPLICAS_MAX),
	FIELD("allow_same_domain", OVL_MSG_F_BOOL, OPT, struct ovl_msg_admin, allow_same_domain),
	FIELD("chunk_size", OVL_MSG_F_UINT, OPT, struct ovl_msg_admin, chunk_size, .max = UINT32_MAX),
	FIELD("fleet", OVL_MSG_F_BIN, OPT, struct ovl_msg_admin, fleet,
	      .max = OVL_MSG_FLEET_MAX_BYTES),
};

static const struct ovl_msg_field admin_ok_fields[] = {
	TS(struct ovl_msg_admin_ok),
	FIELD("op", OVL_MSG_F_ENUM, REQ, struct ovl_msg_admin_ok, op, .names = op_names),
	ARRAY("nodes", OPT, struct ovl_msg_admin_ok, nodes, n_nodes, node_info_elem,
	      OVL_MSG_NODES_MAX),
	ARRAY("slices", OPT, struct ovl_msg_admin_ok, slices, n_slices, slice_elem,
	      OVL_MSG_SLICES_MAX),
	ARRAY("stats", OPT, struct ovl_msg_admin_ok, stats, n_stats, stat_elem,
	      OVL_MSG_STATS_MAX),
	FIELD("epoch", OVL_MSG_F_UINT, OPT, struct ovl_msg_admin_ok, epoch),
	FIELD("fleet", OVL_MSG_F_BIN, OPT, struct ovl_msg_admin_ok, fleet,
	      .max = OVL_MSG_FLEET_MAX_BYTES),
};

/* admin: which op needs which optional field */
static int admin_check(const void *obj, char *err, size_t errlen)
{
	const struct ovl_msg_admin *a = obj;
	const char *need = NULL;

	switch (a->op) {
	case OVL_MSG_ADMIN_SHOW_MAP:
	case OVL_MSG_ADMIN_DELETE_SLICE:
		if (!a->slice[0])
			need = "slice";
		break;
	case OVL_MSG_ADMIN_CREATE_SLICE:
		if (!a->slice[0])
			need = "slice";
		else if (!a->replicas)
			need = "replicas";
		else if (min_write_check(a->min_write_replicas, a->replicas, err, errlen) < 0 ||
			 ovl_msg_chunk_size_check(a->chunk_size, err, errlen) < 0)
			return -EINVAL;
		break;
	case OVL_MSG_ADMIN_REVOKE_NODE:
		if (ovl_mem_is_zero(a->node_id, sizeof(a->node_id)))
			need = "node_id";
		break;
	case OVL_MSG_ADMIN_FLEET:
		if (!a->fleet.len)
			need = "fleet";
		break;
	default:
		break;
	}
	if (!need)
		return 0;
	snprintf(err, errlen, "op '%s' requires field '%s'", op_names[a->op], need);
	return -EINVAL;
}

/* map_delta: a delta moves the epoch forward (it may change only the policy) */
static int map_delta_check(const void *obj, char *err, size_t errlen)
{
	const struct ovl_msg_map_delta *d = obj;

	if (d->epoch > d->base_epoch)
		return 0;
	snprintf(err, errlen, "field 'epoch' (%llu) must be greater than 'base_epoch' (%llu)",
		 (unsigned long long)d->epoch, (unsigned long long)d->base_epoch);
	return -EINVAL;
}

/* map, map_report: min_write_replicas is at most replicas */
static int map_check(const void *obj, char *err, size_t errlen)
{
	const struct ovl_msg_map *m = obj;

	if (min_write_check(m->min_write_replicas, m->replicas, err, errlen) < 0)
		return -EINVAL;
	return ovl_msg_chunk_size_check(m->chunk_size, err, errlen);
}

#define MSG(id, key, tab, size, ...)                                                      \
	[id] = { .name = key, .fields = tab, .nfields = NFIELDS(tab),                    \
		 .max_bytes = OVL_MSG_##size##_MAX_BYTES,                                  \
		 .max_elems = OVL_MSG_##size##_MAX_ELEMS, __VA_ARGS__ }

static const struct ovl_msg_schema msg_schemas[OVL_MSG_TYPE_COUNT] = {
	MSG(OVL_MSG_REGISTER, "register", register_fields, SMALL),
	MSG(OVL_MSG_REGISTER_OK, "register_ok", register_ok_fields, SMALL),
	MSG(OVL_MSG_HEARTBEAT, "heartbeat", heartbeat_fields, SMALL),
	MSG(OVL_MSG_HEARTBEAT_OK, "heartbeat_ok", heartbeat_ok_fields, SMALL),
	MSG(OVL_MSG_MAP_GET, "map_get", map_get_fields, SMALL),
	MSG(OVL_MSG_MAP, "map", map_fields, LARGE, .check = map_check),
	MSG(OVL_MSG_MAP_DELTA, "map_delta", map_delta_fields, LARGE, .check = map_delta_check),
	MSG(OVL_MSG_CERT_RENEW, "cert_renew", cert_renew_fields, SMALL),
	MSG(OVL_MSG_CERT, "cert", cert_fields, SMALL),
	MSG(OVL_MSG_ERROR, "error", error_fields, SMALL),
	MSG(OVL_MSG_ADMIN, "admin", admin_fields, SMALL, .check = admin_check),
	MSG(OVL_MSG_ADMIN_OK, "admin_ok", admin_ok_fields, LARGE),
	MSG(OVL_MSG_MAP_REPORT, "map_report", map_report_fields, SMALL, .check = map_check),
};

/* The walk before the type is known must admit every type. */
static const struct ovl_mp_limits envelope_limits = {
	.max_depth = OVL_MSG_DEPTH_MAX,
	.max_bytes = OVL_MSG_LARGE_MAX_BYTES,
	.max_elems = OVL_MSG_LARGE_MAX_ELEMS,
	.max_str = OVL_MSG_STR_MAX_BYTES,
	.allow_ext = false,
	.allow_float = false,
};

/* Envelope keys, handled by the decoder itself; bits above the schema's. */
#define ENV_BIT_V (1ull << 61)
#define ENV_BIT_T (1ull << 62)
#define ENV_BIT_RID (1ull << 63)

static const struct ovl_msg_field rid_field = {
	.name = "rid", .name_len = 3, .type = OVL_MSG_F_UINT, .offset = offsetof(struct ovl_msg, rid),
	.size = sizeof(uint64_t),
};

const struct ovl_msg_schema *ovl_msg_schema_find(enum ovl_msg_type type)
{
	if ((int)type <= OVL_MSG_NONE || type >= OVL_MSG_TYPE_COUNT)
		return NULL;
	return &msg_schemas[type];
}

const char *ovl_msg_type_name(enum ovl_msg_type type)
{
	if ((int)type <= OVL_MSG_NONE || type >= OVL_MSG_TYPE_COUNT)
		return NULL;
	return msg_schemas[type].name;
}

const char *ovl_msg_state_name(enum ovl_msg_state state)
{
	if ((int)state < 0 || state > OVL_MSG_STATE_OUT)
		return NULL;
	return state_names[state];
}

const char *ovl_msg_left_reason_name(enum ovl_msg_left_reason reason)
{
	if ((int)reason <= OVL_MSG_LEFT_UNKNOWN || reason > OVL_MSG_LEFT_DELETED)
		return NULL;
	return left_reason_names[reason];
}

const char *ovl_msg_admin_op_name(enum ovl_msg_admin_op op)
{
	if ((int)op <= 0 || op > OVL_MSG_ADMIN_FLEET)
		return NULL;
	return op_names[op];
}

void ovl_msg_init(struct ovl_msg *m, enum ovl_msg_type type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->ver_major = OVL_MSG_VERSION_MAJOR;
	m->ver_minor = OVL_MSG_VERSION_MINOR;
}

/* ---- shared helpers ------------------------------------------------------ */

static uint64_t load_uint(const void *p, size_t size)
{
	switch (size) {
	case 1: return *(const uint8_t *)p;
	case 2: return *(const uint16_t *)p;
	case 4: return *(const uint32_t *)p;
	default: return *(const uint64_t *)p;
	}
}

static void store_uint(void *p, size_t size, uint64_t v)
{
	switch (size) {
	case 1: *(uint8_t *)p = (uint8_t)v; break;
	case 2: *(uint16_t *)p = (uint16_t)v; break;
	case 4: *(uint32_t *)p = (uint32_t)v; break;
	default: *(uint64_t *)p = v; break;
	}
}

static uint64_t uint_max(const struct ovl_msg_field *f)
{
	if (f->max)
		return f->max;
	return f->size >= 8 ? UINT64_MAX : (1ull << (8 * f->size)) - 1;
}


static bool has_nul(const uint8_t *s, size_t n)
{
	return memchr(s, 0, n) != NULL;
}

/* A path to a field for error messages: "members[3].domain.site". */
struct path {
	const struct path *up;
	const struct ovl_msg_field *f; /* a named step, or NULL for an element */
	uint32_t index;
};

static size_t path_fmt(const struct path *p, char *buf, size_t cap)
{
	size_t n = 0;
	int w;

	if (!p)
		return 0;
	n = path_fmt(p->up, buf, cap);
	if (n >= cap)
		return n;
	if (p->f)
		w = snprintf(buf + n, cap - n, "%s%s", n ? "." : "", p->f->name);
	else
		w = snprintf(buf + n, cap - n, "[%u]", p->index);
	return w < 0 ? n : n + (size_t)w;
}

/* Copy untrusted text into an error message: printable ASCII, at most 32 bytes. */
static void quote(char *out, size_t cap, const uint8_t *s, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; i < n && j + 4 < cap; i++) {
		if (i == 32) {
			memcpy(out + j, "...", 3);
			j += 3;
			break;
		}
		out[j++] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' ? (char)s[i] : '?';
	}
	out[j] = '\0';
}

/* Error text: "<msg>: field '<path>' <what>" or "<msg>: <what>". */
struct ectx {
	const char *msg; /* message type name, or "message" */
	char *err;
	size_t errlen;
};

static int efail(const struct ectx *c, int ret, const struct path *p, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int efail(const struct ectx *c, int ret, const struct path *p, const char *fmt, ...)
{
	char what[256], where[192];
	va_list ap;

	if (!c->err || c->errlen == 0)
		return ret;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (p) {
		where[0] = '\0';
		path_fmt(p, where, sizeof(where));
		snprintf(c->err, c->errlen, "%s: field '%s' %s", c->msg, where, what);
	} else {
		snprintf(c->err, c->errlen, "%s: %s", c->msg, what);
	}
	return ret;
}

/* ---- the reader: ovl_mpr (msgpack that ovl_mp_check() has accepted) ---- */

static const char *kind_article(uint8_t ftype)
{
	switch (ftype) {
	case OVL_MSG_F_UINT: return "an unsigned integer";
	case OVL_MSG_F_BOOL: return "a boolean";
	case OVL_MSG_F_STR: case OVL_MSG_F_ENUM: return "a string";
	case OVL_MSG_F_FIXBIN: case OVL_MSG_F_BIN: return "a bin";
	case OVL_MSG_F_STRUCT: return "a map";
	default: return "an array";
	}
}

/* The fewest bytes a valid encoding of f can take (a bound used to refuse
 * arrays whose count the remaining bytes cannot hold before allocating). */
static size_t min_encoded(const struct ovl_msg_field *f)
{
	size_t n = 0;

	switch (f->type) {
	case OVL_MSG_F_FIXBIN:
		return (f->size < 256 ? 2 : f->size < 65536 ? 3 : 5) + f->size;
	case OVL_MSG_F_BIN:
		return 2;
	case OVL_MSG_F_ENUM:
		n = SIZE_MAX;
		for (size_t i = 0; f->names[i] || i == 0; i++)
			if (f->names[i] && strlen(f->names[i]) < n)
				n = strlen(f->names[i]);
		return 1 + (f->open ? 0 : n);
	case OVL_MSG_F_STRUCT:
		n = 1;
		for (unsigned i = 0; i < f->sub->nfields; i++)
			if (f->sub->fields[i].required)
				n += 1 + f->sub->fields[i].name_len + min_encoded(&f->sub->fields[i]);
		return n;
	default:
		return 1;
	}
}

/* ---- the decoder ------------------------------------------------------------ */

struct dctx {
	struct ectx e;
};

static int decode_map(struct dctx *c, struct ovl_mpr *r, uint64_t count,
		      const struct ovl_msg_schema *s, void *obj, const struct path *path,
		      struct ovl_msg *env);

static int decode_value(struct dctx *c, struct ovl_mpr *r, const struct ovl_msg_field *f, void *dst,
			const struct path *p);

/* The rarer kinds live apart so that decode_value() stays small and quick. */
static int __attribute__((noinline))
decode_enum(struct dctx *c, const struct ovl_msg_field *f, const struct ovl_mpr_val *v, void *dst,
	    const struct path *p)
{
	char q[40];

	for (int i = 0; f->names[i] || i == 0; i++) {
		if (f->names[i] && strlen(f->names[i]) == v->n &&
		    memcmp(f->names[i], v->ptr, v->n) == 0) {
			*(int *)dst = i;
			return 0;
		}
	}
	if (f->open) {
		*(int *)dst = 0;
		return 0;
	}
	quote(q, sizeof(q), v->ptr, v->n);
	return efail(&c->e, -EBADMSG, p, "has unknown value '%s'", q);
}

static int __attribute__((noinline))
decode_array(struct dctx *c, struct ovl_mpr *r, const struct ovl_msg_field *f, const struct ovl_mpr_val *v,
	     void *dst, const struct path *p)
{
	const struct ovl_msg_field *e = f->elem;
	size_t left = (size_t)(r->end - r->p), min = min_encoded(e);
	uint8_t *arr = NULL;

	if (v->n > f->max)
		return efail(&c->e, -EBADMSG, p, "has %llu elements, more than %llu",
			     (unsigned long long)v->n, (unsigned long long)f->max);
	if (v->n > left / min)
		return efail(&c->e, -EBADMSG, p, "announces %llu elements but only %zu bytes are left",
			     (unsigned long long)v->n, left);
	if (v->n == 0)
		return 0;
	arr = calloc(v->n, e->size);
	if (!arr)
		return efail(&c->e, -ENOMEM, p, "cannot allocate %llu elements",
			     (unsigned long long)v->n);
	/* Stored at once so that release frees it whatever happens next. */
	*(void **)dst = arr;
	*(uint32_t *)((uint8_t *)dst - f->offset + f->count_offset) = (uint32_t)v->n;
	for (uint32_t i = 0; i < v->n; i++) {
		struct path ep = { .up = p, .f = NULL, .index = i };
		int ret = decode_value(c, r, e, arr + (size_t)i * e->size, &ep);

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* A scalar field's value v, already read, into dst. Inlined into the loops. */
static inline __attribute__((always_inline)) int
decode_scalar(struct dctx *c, const struct ovl_msg_field *f, const struct ovl_mpr_val *v, void *dst,
	      const struct path *p)
{
	switch (f->type) {
	case OVL_MSG_F_UINT:
		if (v->kind != OVL_MPR_UINT)
			return efail(&c->e, -EBADMSG, p, v->kind == OVL_MPR_NEG ? "is negative"
									  : "is not an unsigned integer");
		if (v->n < f->min)
			return efail(&c->e, -EBADMSG, p, "is %llu, below the minimum %llu",
				     (unsigned long long)v->n, (unsigned long long)f->min);
		if (v->n > uint_max(f))
			return efail(&c->e, -EBADMSG, p, "is %llu, above the maximum %llu",
				     (unsigned long long)v->n, (unsigned long long)uint_max(f));
		store_uint(dst, f->size, v->n);
		return 0;
	case OVL_MSG_F_STR:
		if (v->kind != OVL_MPR_STR)
			break;
		if (v->n > f->size - 1)
			return efail(&c->e, -EBADMSG, p, "is longer than %zu bytes", f->size - 1);
		if (!ovl_mp_utf8_valid(v->ptr, v->n)) /* which refuses NUL too */
			return efail(&c->e, -EBADMSG, p, has_nul(v->ptr, v->n) ? "contains a NUL byte"
									       : "is not valid UTF-8");
		memcpy(dst, v->ptr, v->n);
		((char *)dst)[v->n] = '\0';
		return 0;
	case OVL_MSG_F_FIXBIN:
		if (v->kind != OVL_MPR_BIN)
			break;
		if (v->n != f->size)
			return efail(&c->e, -EBADMSG, p, "must be %zu bytes, not %llu", f->size,
				     (unsigned long long)v->n);
		memcpy(dst, v->ptr, f->size);
		return 0;
	case OVL_MSG_F_BIN:
		if (v->kind != OVL_MPR_BIN)
			break;
		if (v->n > f->max)
			return efail(&c->e, -EBADMSG, p, "is longer than %llu bytes",
				     (unsigned long long)f->max);
		((struct ovl_msg_bin *)dst)->ptr = v->ptr;
		((struct ovl_msg_bin *)dst)->len = v->n;
		return 0;
	case OVL_MSG_F_BOOL:
		if (v->kind != OVL_MPR_BOOL)
			break;
		*(bool *)dst = v->n != 0;
		return 0;
	default: /* OVL_MSG_F_ENUM */
		if (v->kind != OVL_MPR_STR)
			break;
		return decode_enum(c, f, v, dst, p);
	}
	return efail(&c->e, -EBADMSG, p, "is not %s", kind_article(f->type));
}

static bool is_container(const struct ovl_msg_field *f)
{
	return f->type == OVL_MSG_F_STRUCT || f->type == OVL_MSG_F_ARRAY;
}

/* A map or array field's header v, already read; its elements follow in r. */
static int decode_container(struct dctx *c, struct ovl_mpr *r, const struct ovl_msg_field *f,
			    const struct ovl_mpr_val *v, void *dst, const struct path *p)
{
	if (f->type == OVL_MSG_F_STRUCT) {
		if (v->kind != OVL_MPR_MAP)
			return efail(&c->e, -EBADMSG, p, "is not a map");
		return decode_map(c, r, v->n, f->sub, dst, p, NULL);
	}
	if (v->kind != OVL_MPR_ARRAY)
		return efail(&c->e, -EBADMSG, p, "is not an array");
	return decode_array(c, r, f, v, dst, p);
}

static int decode_value(struct dctx *c, struct ovl_mpr *r, const struct ovl_msg_field *f, void *dst,
			const struct path *p)
{
	struct ovl_mpr_val v;

	if (ovl_mpr_next(r, &v) < 0)
		return efail(&c->e, -EBADMSG, p, "is truncated");
	if (is_container(f))
		return decode_container(c, r, f, &v, dst, p);
	return decode_scalar(c, f, &v, dst, p);
}

static inline bool name_is(const struct ovl_msg_field *f, const struct ovl_mpr_val *key)
{
	const uint8_t *a = (const uint8_t *)f->name, *b = key->ptr;
	size_t n = key->n;

	if (f->name_len != n)
		return false;
	/* Short keys: two overlapping loads from each end, all within both strings */
	if (n >= 8 && n <= 16) {
		uint64_t x0, y0, x1, y1;

		memcpy(&x0, a, 8);
		memcpy(&y0, b, 8);
		memcpy(&x1, a + n - 8, 8);
		memcpy(&y1, b + n - 8, 8);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	if (n >= 4 && n < 8) {
		uint32_t x0, y0, x1, y1;

		memcpy(&x0, a, 4);
		memcpy(&y0, b, 4);
		memcpy(&x1, a + n - 4, 4);
		memcpy(&y1, b + n - 4, 4);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	return memcmp(a, b, n) == 0;
}

/* The field named by key; *idx is tried first (encoders write schema order). */
static const struct ovl_msg_field *find_field(const struct ovl_msg_schema *s,
					      const struct ovl_mpr_val *key, unsigned *idx)
{
	if (key->n == 0)
		return NULL;
	if (*idx < s->nfields && name_is(&s->fields[*idx], key))
		return &s->fields[*idx];
	for (unsigned i = 0; i < s->nfields; i++) {
		if (name_is(&s->fields[i], key)) {
			*idx = i;
			return &s->fields[i];
		}
	}
	return NULL;
}

static bool key_is(const struct ovl_mpr_val *key, const char *name, size_t n)
{
	return key->n == n && memcmp(key->ptr, name, n) == 0;
}

/*
 * Decodes `count` key/value pairs into obj with schema s. At the top level
 * (env != NULL) the envelope keys are recognised too: "v" and "t" were read
 * before and are only checked for duplicates here; "rid" goes into env.
 */
static int decode_map(struct dctx *c, struct ovl_mpr *r, uint64_t count,
		      const struct ovl_msg_schema *s, void *obj, const struct path *path,
		      struct ovl_msg *env)
{
	const uint8_t *unknown[OVL_MSG_KEYS_MAX];
	uint32_t unknown_len[OVL_MSG_KEYS_MAX];
	unsigned nunknown = 0;
	uint64_t seen = 0;
	unsigned hint = 0; /* the field expected next */
	int ret;

	if (count > OVL_MSG_KEYS_MAX) {
		if (path)
			return efail(&c->e, -EBADMSG, path, "has %llu keys, more than %u",
				     (unsigned long long)count, OVL_MSG_KEYS_MAX);
		return efail(&c->e, -EBADMSG, NULL, "message has %llu keys, more than %u",
			     (unsigned long long)count, OVL_MSG_KEYS_MAX);
	}
	for (uint64_t i = 0; i < count; i++) {
		const struct ovl_msg_field *f = NULL;
		uint64_t bit = 0;
		unsigned idx = hint;
		struct ovl_mpr_val key;
		char q[40];

		if (ovl_mpr_next(r, &key) < 0)
			return efail(&c->e, -EBADMSG, path, "is truncated");
		if (key.kind != OVL_MPR_STR) {
			if (path)
				return efail(&c->e, -EBADMSG, path, "has a key that is not a string");
			return efail(&c->e, -EBADMSG, NULL, "a key is not a string");
		}
		/* no schema field is named like an envelope key */
		if (env && key.n <= 3 && key_is(&key, "v", 1)) {
			bit = ENV_BIT_V;
		} else if (env && key.n <= 3 && key_is(&key, "t", 1)) {
			bit = ENV_BIT_T;
		} else if (env && key.n <= 3 && key_is(&key, "rid", 3)) {
			bit = ENV_BIT_RID;
			f = &rid_field;
		} else {
			f = find_field(s, &key, &idx);
			if (f) {
				bit = 1ull << idx;
				hint = idx + 1;
			}
		}
		if (bit) {
			if (seen & bit) {
				quote(q, sizeof(q), key.ptr, key.n);
				if (path)
					return efail(&c->e, -EBADMSG, path, "has a duplicate key '%s'", q);
				return efail(&c->e, -EBADMSG, NULL, "duplicate key '%s'", q);
			}
			seen |= bit;
			if (!f) {
				ret = ovl_mpr_skip(r, 1);
			} else {
				struct path fp = { .up = path, .f = f };
				uint8_t *dst = (uint8_t *)(f == &rid_field ? (void *)env : obj) + f->offset;
				struct ovl_mpr_val v;

				if (ovl_mpr_next(r, &v) < 0)
					ret = efail(&c->e, -EBADMSG, &fp, "is truncated");
				else if (is_container(f))
					ret = decode_container(c, r, f, &v, dst, &fp);
				else
					ret = decode_scalar(c, f, &v, dst, &fp);
			}
			if (ret < 0)
				return ret == -EBADMSG && !f ? efail(&c->e, ret, path, "is truncated")
							   : ret;
			continue;
		}
		/* A key this build does not know: refuse duplicates, then skip it. */
		if (!ovl_mp_utf8_valid(key.ptr, key.n)) {
			if (path)
				return efail(&c->e, -EBADMSG, path, "has a key that is not valid UTF-8");
			return efail(&c->e, -EBADMSG, NULL, "a key is not valid UTF-8");
		}
		for (unsigned j = 0; j < nunknown; j++) {
			if (unknown_len[j] == key.n && memcmp(unknown[j], key.ptr, key.n) == 0) {
				quote(q, sizeof(q), key.ptr, key.n);
				if (path)
					return efail(&c->e, -EBADMSG, path, "has a duplicate key '%s'", q);
				return efail(&c->e, -EBADMSG, NULL, "duplicate key '%s'", q);
			}
		}
		unknown[nunknown] = key.ptr;
		unknown_len[nunknown++] = (uint32_t)key.n;
		if (ovl_mpr_skip(r, 1) < 0)
			return efail(&c->e, -EBADMSG, path, "is truncated");
	}
	/* every field present (the usual case) needs no search for a missing one */
	for (unsigned i = 0; (~seen & ((1ull << s->nfields) - 1)) && i < s->nfields; i++) {
		if (s->fields[i].required && !(seen & (1ull << i))) {
			struct path fp = { .up = path, .f = &s->fields[i] };
			char where[192] = "";

			path_fmt(&fp, where, sizeof(where));
			return efail(&c->e, -EBADMSG, NULL, "required field '%s' is missing", where);
		}
	}
	if (s->check) {
		char why[256];

		why[0] = '\0';
		ret = s->check(obj, why, sizeof(why));
		if (ret < 0)
			return efail(&c->e, -EBADMSG, NULL, "%s", why);
	}
	return 0;
}

/* Arrays are only ever fields of a message (never inside a struct or an
 * array element), so freeing them is one pass over the message's fields. */
static void release_fields(const struct ovl_msg_schema *s, void *obj)
{
	for (unsigned i = 0; i < s->nfields; i++) {
		const struct ovl_msg_field *f = &s->fields[i];

		if (f->type == OVL_MSG_F_ARRAY) {
			void **arr = (void **)((uint8_t *)obj + f->offset);

			free(*arr);
			*arr = NULL;
			*(uint32_t *)((uint8_t *)obj + f->count_offset) = 0;
		}
	}
}

void ovl_msg_release(struct ovl_msg *m)
{
	const struct ovl_msg_schema *s = NULL;

	if (!m)
		return;
	s = ovl_msg_schema_find(m->type);
	if (s)
		release_fields(s, &m->u);
	m->type = OVL_MSG_NONE;
}

static enum ovl_msg_type type_lookup(const uint8_t *name, size_t n)
{
	for (int t = OVL_MSG_NONE + 1; t < OVL_MSG_TYPE_COUNT; t++) {
		const char *s = msg_schemas[t].name;

		if (n && (uint8_t)s[0] == name[0] && strlen(s) == n && memcmp(s, name, n) == 0)
			return (enum ovl_msg_type)t;
	}
	return OVL_MSG_NONE;
}

/*
 * Recognises the canonical start {"v": [major, minor], "t": "<type>", ...}
 * (what our encoder and most others write), so that the walker can run with
 * the type's limits at once. Reads only bounded headers.
 */
static enum ovl_msg_type peek_type(const uint8_t *buf, size_t len, uint64_t *minor)
{
	struct ovl_mpr r = { buf, buf + len };
	struct ovl_mpr_val v;

	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_MAP || v.n < 2)
		return OVL_MSG_NONE;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_STR || !key_is(&v, "v", 1))
		return OVL_MSG_NONE;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_ARRAY || v.n != 2)
		return OVL_MSG_NONE;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_UINT || v.n != OVL_MSG_VERSION_MAJOR)
		return OVL_MSG_NONE;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_UINT || v.n > UINT32_MAX)
		return OVL_MSG_NONE;
	*minor = v.n;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_STR || !key_is(&v, "t", 1))
		return OVL_MSG_NONE;
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_STR)
		return OVL_MSG_NONE;
	return type_lookup(v.ptr, v.n);
}

static void type_limits(const struct ovl_msg_schema *s, struct ovl_mp_limits *lim)
{
	*lim = envelope_limits;
	lim->max_bytes = s->max_bytes;
	lim->max_elems = s->max_elems;
}

static int walk(struct ectx *e, const void *buf, size_t len, const struct ovl_mp_limits *lim)
{
	char why[160];
	size_t used = 0;
	int ret;

	if (len > lim->max_bytes)
		return efail(e, -E2BIG, NULL, "message is larger than %zu bytes", lim->max_bytes);
	why[0] = '\0';
	ret = ovl_mp_check(buf, len, lim, &used, why, sizeof(why));
	if (ret < 0)
		return efail(e, ret, NULL, "%s", why);
	if (used != len)
		return efail(e, -EBADMSG, NULL, "trailing data after the message (%zu bytes)",
			     len - used);
	return 0;
}

/*
 * Finds "v" and "t" wherever they are in the top map (the bytes were walked
 * with the envelope limits), checks the version and the type, and walks the
 * message again with the type's limits. Sets c->e.msg once the type is known.
 */
static int read_envelope(struct dctx *c, const void *buf, size_t len, enum ovl_msg_type *type,
			 uint64_t *major, uint64_t *minor)
{
	struct ovl_mpr r = { buf, (const uint8_t *)buf + len };
	struct ovl_mpr_val top, key, ver = { .kind = OVL_MPR_NIL }, t = { .kind = OVL_MPR_NIL };
	bool have_v = false, have_t = false;
	struct ovl_mp_limits lim;

	if (ovl_mpr_next(&r, &top) < 0 || top.kind != OVL_MPR_MAP)
		return efail(&c->e, -EBADMSG, NULL, "not a map");
	if (top.n > OVL_MSG_KEYS_MAX)
		return efail(&c->e, -EBADMSG, NULL, "message has %llu keys, more than %u",
			     (unsigned long long)top.n, OVL_MSG_KEYS_MAX);
	for (uint64_t i = 0; i < top.n && !(have_v && have_t); i++) {
		if (ovl_mpr_next(&r, &key) < 0 || key.kind != OVL_MPR_STR)
			return efail(&c->e, -EBADMSG, NULL, "a key is not a string");
		if (!have_v && key_is(&key, "v", 1)) {
			struct ovl_mpr vr = r;
			struct ovl_mpr_val a, b;

			have_v = true;
			if (ovl_mpr_next(&vr, &ver) == 0 && ver.kind == OVL_MPR_ARRAY && ver.n == 2 &&
			    ovl_mpr_next(&vr, &a) == 0 && a.kind == OVL_MPR_UINT && a.n <= UINT32_MAX &&
			    ovl_mpr_next(&vr, &b) == 0 && b.kind == OVL_MPR_UINT && b.n <= UINT32_MAX) {
				*major = a.n;
				*minor = b.n;
			} else {
				ver.kind = OVL_MPR_NIL; /* marks "malformed" */
			}
		} else if (!have_t && key_is(&key, "t", 1)) {
			struct ovl_mpr tr = r;

			have_t = true;
			if (ovl_mpr_next(&tr, &t) < 0)
				t.kind = OVL_MPR_NIL;
		}
		if (ovl_mpr_skip(&r, 1) < 0)
			return efail(&c->e, -EBADMSG, NULL, "truncated");
	}
	if (have_t && t.kind == OVL_MPR_STR)
		*type = type_lookup(t.ptr, t.n);
	if (*type)
		c->e.msg = msg_schemas[*type].name;
	if (!have_v)
		return efail(&c->e, -EBADMSG, NULL, "required field 'v' is missing");
	if (ver.kind != OVL_MPR_ARRAY)
		return efail(&c->e, -EBADMSG, NULL,
			     "field 'v' is not an array of two unsigned integers");
	if (*major != OVL_MSG_VERSION_MAJOR)
		return efail(&c->e, -EPROTONOSUPPORT, NULL,
			     "protocol major version %llu is not supported (this build speaks %d)",
			     (unsigned long long)*major, OVL_MSG_VERSION_MAJOR);
	if (!have_t)
		return efail(&c->e, -EBADMSG, NULL, "required field 't' is missing");
	if (t.kind != OVL_MPR_STR)
		return efail(&c->e, -EBADMSG, NULL, "field 't' is not a string");
	if (!*type) {
		char q[40];

		quote(q, sizeof(q), t.ptr, t.n);
		return efail(&c->e, -ENOMSG, NULL, "unknown message type '%s'", q);
	}
	type_limits(&msg_schemas[*type], &lim);
	return walk(&c->e, buf, len, &lim);
}

int ovl_msg_decode(const void *buf, size_t len, struct ovl_msg *out, char *err, size_t errlen)
{
	struct dctx c = { .e = { .msg = "message", .err = err, .errlen = errlen } };
	const struct ovl_msg_schema *s = NULL;
	struct ovl_mp_limits lim;
	struct ovl_mpr r = { buf, (const uint8_t *)buf + len };
	enum ovl_msg_type type = OVL_MSG_NONE;
	uint64_t major = OVL_MSG_VERSION_MAJOR, minor = 0;
	struct ovl_mpr_val top;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';
	if (!buf)
		len = 0;

	/* 1. the walker, with the type's limits when the type shows up front */
	type = peek_type(buf, len, &minor);
	if (type) {
		c.e.msg = msg_schemas[type].name;
		type_limits(&msg_schemas[type], &lim);
	} else {
		lim = envelope_limits;
	}
	ret = walk(&c.e, buf, len, &lim);
	if (ret < 0)
		goto out;

	/* 2. the envelope, when it was not where the encoder puts it */
	if (!type) {
		ret = read_envelope(&c, buf, len, &type, &major, &minor);
		if (ret < 0)
			goto out;
	}

	/* 3. the fields ("v" and "t" are only checked for duplicates now) */
	s = &msg_schemas[type];
	out->type = type;
	out->ver_major = (uint32_t)major;
	out->ver_minor = (uint32_t)minor;
	if (ovl_mpr_next(&r, &top) < 0 || top.kind != OVL_MPR_MAP) {
		ret = efail(&c.e, -EBADMSG, NULL, "not a map");
		goto out;
	}
	ret = decode_map(&c, &r, top.n, s, &out->u, NULL, out);
out:
	if (ret < 0) {
		ovl_msg_release(out);
		memset(out, 0, sizeof(*out));
	}
	return ret;
}

/* ---- the encoder ------------------------------------------------------------ */

static bool value_empty(const struct ovl_msg_field *f, const void *src)
{
	switch (f->type) {
	case OVL_MSG_F_UINT:
		return load_uint(src, f->size) == 0;
	case OVL_MSG_F_BOOL:
		return !*(const bool *)src;
	case OVL_MSG_F_STR:
		return ((const char *)src)[0] == '\0';
	case OVL_MSG_F_FIXBIN:
		return ovl_mem_is_zero(src, f->size);
	case OVL_MSG_F_BIN:
		return ((const struct ovl_msg_bin *)src)->len == 0;
	case OVL_MSG_F_ENUM:
		return *(const int *)src == 0;
	case OVL_MSG_F_STRUCT:
		for (unsigned i = 0; i < f->sub->nfields; i++)
			if (!value_empty(&f->sub->fields[i],
					 (const uint8_t *)src + f->sub->fields[i].offset))
				return false;
		return true;
	default:
		return *(const uint32_t *)((const uint8_t *)src - f->offset + f->count_offset) == 0;
	}
}

/* Where packed bytes go: an sbuffer, or a caller buffer of cap bytes. Writes
 * stop at the message's size limit. */
struct sink {
	struct msgpack_sbuffer *sb;
	uint8_t *buf;
	size_t cap, len, limit;
	int werr; /* first failure: -ENOMEM, -ENOSPC or -E2BIG */
};

static int sink_write(void *data, const char *p, size_t n)
{
	struct sink *k = data;

	if (k->werr)
		return -1;
	if (n > k->limit - k->len) {
		k->werr = -E2BIG;
		return -1;
	}
	if (k->sb) {
		if (msgpack_sbuffer_write(k->sb, p, n) != 0) {
			k->werr = -ENOMEM;
			return -1;
		}
	} else {
		if (n > k->cap - k->len) {
			k->werr = -ENOSPC;
			return -1;
		}
		memcpy(k->buf + k->len, p, n);
	}
	k->len += n;
	return 0;
}

struct ectx_pk {
	struct ectx e;
	msgpack_packer pk;
};

static int encode_struct(struct ectx_pk *c, const struct ovl_msg_schema *s, const void *obj,
			 const struct path *path);

static int encode_value(struct ectx_pk *c, const struct ovl_msg_field *f, const void *src,
			const struct path *p)
{
	msgpack_packer *pk = &c->pk;

	switch (f->type) {
	case OVL_MSG_F_UINT: {
		uint64_t v = load_uint(src, f->size);

		if (v < f->min)
			return efail(&c->e, -EINVAL, p, "is %llu, below the minimum %llu",
				     (unsigned long long)v, (unsigned long long)f->min);
		if (v > uint_max(f))
			return efail(&c->e, -EINVAL, p, "is %llu, above the maximum %llu",
				     (unsigned long long)v, (unsigned long long)uint_max(f));
		msgpack_pack_uint64(pk, v);
		return 0;
	}
	case OVL_MSG_F_BOOL:
		if (*(const bool *)src)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		return 0;
	case OVL_MSG_F_STR: {
		size_t n = strnlen(src, f->size);

		if (n == f->size)
			return efail(&c->e, -EINVAL, p, "is longer than %zu bytes", f->size - 1);
		if (!ovl_mp_utf8_valid(src, n))
			return efail(&c->e, -EINVAL, p, "is not valid UTF-8");
		msgpack_pack_str_with_body(pk, src, n);
		return 0;
	}
	case OVL_MSG_F_ENUM: {
		int v = *(const int *)src, n = 0;

		while (f->names[n] || n == 0)
			n++;
		if (v < 0 || v >= n || !f->names[v])
			return efail(&c->e, -EINVAL, p, "has no valid value (%d)", v);
		msgpack_pack_str_with_body(pk, f->names[v], strlen(f->names[v]));
		return 0;
	}
	case OVL_MSG_F_FIXBIN:
		msgpack_pack_bin_with_body(pk, src, f->size);
		return 0;
	case OVL_MSG_F_BIN: {
		const struct ovl_msg_bin *b = src;

		if (b->len > f->max)
			return efail(&c->e, -EINVAL, p, "is longer than %llu bytes",
				     (unsigned long long)f->max);
		if (b->len && !b->ptr)
			return efail(&c->e, -EINVAL, p, "has a length but no bytes");
		msgpack_pack_bin_with_body(pk, b->len ? b->ptr : (const uint8_t *)"", b->len);
		return 0;
	}
	case OVL_MSG_F_STRUCT:
		return encode_struct(c, f->sub, src, p);
	default:
		break;
	}

	/* OVL_MSG_F_ARRAY */
	{
		const uint8_t *arr = *(const void *const *)src;
		uint32_t n = *(const uint32_t *)((const uint8_t *)src - f->offset + f->count_offset);

		if (n > f->max)
			return efail(&c->e, -EINVAL, p, "has %u elements, more than %llu", n,
				     (unsigned long long)f->max);
		if (n && !arr)
			return efail(&c->e, -EINVAL, p, "has a count but no elements");
		msgpack_pack_array(pk, n);
		for (uint32_t i = 0; i < n; i++) {
			struct path ep = { .up = p, .f = NULL, .index = i };
			int ret = encode_value(c, f->elem, arr + (size_t)i * f->elem->size, &ep);

			if (ret < 0)
				return ret;
		}
		return 0;
	}
}

/* Entries the encoder writes for obj: required fields and non-empty optional ones. */
static unsigned count_fields(const struct ovl_msg_schema *s, const void *obj)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->nfields; i++) {
		const struct ovl_msg_field *f = &s->fields[i];

		if (f->required || !value_empty(f, (const uint8_t *)obj + f->offset))
			n++;
	}
	return n;
}

static int encode_fields(struct ectx_pk *c, const struct ovl_msg_schema *s, const void *obj,
			 const struct path *path)
{
	for (unsigned i = 0; i < s->nfields; i++) {
		const struct ovl_msg_field *f = &s->fields[i];
		const uint8_t *src = (const uint8_t *)obj + f->offset;
		struct path fp = { .up = path, .f = f };
		int ret;

		if (!f->required && value_empty(f, src))
			continue;
		msgpack_pack_str_with_body(&c->pk, f->name, f->name_len);
		ret = encode_value(c, f, src, &fp);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int run_check(struct ectx *e, const struct ovl_msg_schema *s, const void *obj)
{
	char why[256];

	if (!s->check)
		return 0;
	why[0] = '\0';
	if (s->check(obj, why, sizeof(why)) < 0)
		return efail(e, -EINVAL, NULL, "%s", why);
	return 0;
}

static int encode_struct(struct ectx_pk *c, const struct ovl_msg_schema *s, const void *obj,
			 const struct path *path)
{
	int ret = run_check(&c->e, s, obj);

	if (ret < 0)
		return ret;
	msgpack_pack_map(&c->pk, count_fields(s, obj));
	return encode_fields(c, s, obj, path);
}

static int encode_to(const struct ovl_msg *m, struct sink *k, char *err, size_t errlen)
{
	struct ectx_pk c = { .e = { .msg = "message", .err = err, .errlen = errlen } };
	const struct ovl_msg_schema *s = ovl_msg_schema_find(m->type);
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (!s)
		return efail(&c.e, -EINVAL, NULL, "unknown message type %d", (int)m->type);
	c.e.msg = s->name;
	k->limit = s->max_bytes;
	ret = run_check(&c.e, s, &m->u);
	if (ret < 0)
		return ret;
	msgpack_packer_init(&c.pk, k, sink_write);
	msgpack_pack_map(&c.pk, 2 + (m->rid != 0) + count_fields(s, &m->u));
	msgpack_pack_str_with_body(&c.pk, "v", 1);
	msgpack_pack_array(&c.pk, 2);
	msgpack_pack_uint32(&c.pk, OVL_MSG_VERSION_MAJOR);
	msgpack_pack_uint32(&c.pk, OVL_MSG_VERSION_MINOR);
	msgpack_pack_str_with_body(&c.pk, "t", 1);
	msgpack_pack_str_with_body(&c.pk, s->name, strlen(s->name));
	if (m->rid) {
		msgpack_pack_str_with_body(&c.pk, "rid", 3);
		msgpack_pack_uint64(&c.pk, m->rid);
	}
	ret = encode_fields(&c, s, &m->u, NULL);
	if (ret < 0)
		return ret;
	switch (k->werr) {
	case 0:
		return 0;
	case -E2BIG:
		return efail(&c.e, -E2BIG, NULL, "message is larger than %zu bytes", s->max_bytes);
	case -ENOSPC:
		return efail(&c.e, -ENOSPC, NULL, "message does not fit in %zu bytes", k->cap);
	default:
		return efail(&c.e, k->werr, NULL, "out of memory");
	}
}

int ovl_msg_encode(const struct ovl_msg *m, struct msgpack_sbuffer *sb, char *err, size_t errlen)
{
	struct sink k = { .sb = sb };
	size_t start = sb->size;
	int ret = encode_to(m, &k, err, errlen);

	if (ret < 0)
		sb->size = start;
	return ret;
}

int ovl_msg_encode_buf(const struct ovl_msg *m, void *buf, size_t cap, char *err, size_t errlen)
{
	struct sink k = { .buf = buf, .cap = cap };
	int ret = encode_to(m, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (k.len > INT32_MAX)
		return -E2BIG;
	return (int)k.len;
}

/* ---- map signatures ------------------------------------------------------ */

static int member_cmp(const void *a, const void *b)
{
	const struct ovl_msg_member *const *x = a, *const *y = b;

	return memcmp((*x)->id, (*y)->id, OVL_MSG_ID_BYTES);
}

static int left_cmp(const void *a, const void *b)
{
	const struct ovl_msg_left *const *x = a, *const *y = b;

	return memcmp((*x)->id, (*y)->id, OVL_MSG_ID_BYTES);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
	msgpack_pack_bin(pk, n);
	msgpack_pack_bin_body(pk, p, n);
}

int ovl_msg_map_sig_input(const struct ovl_msg_map *m, msgpack_sbuffer *sb)
{
	const struct ovl_msg_member **order = NULL;
	const struct ovl_msg_left **lorder = NULL;
	msgpack_packer pk;
	const char *st;

	if (m->n_left) {
		lorder = malloc(m->n_left * sizeof(*lorder));
		if (!lorder)
			return -ENOMEM;
		for (uint32_t i = 0; i < m->n_left; i++)
			lorder[i] = &m->left[i];
		qsort(lorder, m->n_left, sizeof(*lorder), left_cmp);
	}
	if (m->n_members) {
		order = malloc(m->n_members * sizeof(*order));
		if (!order) {
			free(lorder);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < m->n_members; i++)
			order[i] = &m->members[i];
		qsort(order, m->n_members, sizeof(*order), member_cmp);
	}
	msgpack_sbuffer_write(sb, OVL_MSG_MAP_SIG_DOMAIN, sizeof(OVL_MSG_MAP_SIG_DOMAIN));
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	/* records only when there are some (or a min_write_replicas follows them):
	 * a map without either signs as before 1.3 */
	msgpack_pack_array(&pk, m->chunk_size ? 8 : m->min_write_replicas ? 7 : m->n_left ? 6 : 5);
	pack_str(&pk, m->slice);
	msgpack_pack_uint64(&pk, m->epoch);
	msgpack_pack_uint64(&pk, m->replicas);
	if (m->encrypt)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	msgpack_pack_array(&pk, m->n_members);
	for (uint32_t i = 0; i < m->n_members; i++) {
		const struct ovl_msg_member *mb = order[i];

		msgpack_pack_array(&pk, 10);
		pack_bin(&pk, mb->id, OVL_MSG_ID_BYTES);
		pack_bin(&pk, mb->curve_key, OVL_MSG_KEY_BYTES);
		pack_bin(&pk, mb->addr, OVL_MSG_ADDR_BYTES);
		msgpack_pack_uint64(&pk, mb->port);
		pack_str(&pk, mb->domain.site);
		pack_str(&pk, mb->domain.chassis);
		pack_str(&pk, mb->domain.slot);
		msgpack_pack_uint64(&pk, mb->capacity);
		st = ovl_msg_state_name(mb->state);
		pack_str(&pk, st ? st : "unknown");
		pack_bin(&pk, mb->cert.ptr ? mb->cert.ptr : (const uint8_t *)"", mb->cert.len);
	}
	if (m->n_left || m->min_write_replicas || m->chunk_size) {
		msgpack_pack_array(&pk, m->n_left);
		for (uint32_t i = 0; i < m->n_left; i++) {
			const struct ovl_msg_left *l = lorder[i];
			const char *rn = ovl_msg_left_reason_name(l->reason);

			msgpack_pack_array(&pk, 3);
			pack_bin(&pk, l->id, OVL_MSG_ID_BYTES);
			msgpack_pack_uint64(&pk, l->epoch);
			pack_str(&pk, rn ? rn : "unknown");
		}
	}
	if (m->min_write_replicas || m->chunk_size)
		msgpack_pack_uint64(&pk, m->min_write_replicas);
	if (m->chunk_size)
		msgpack_pack_uint64(&pk, m->chunk_size);
	free(order);
	free(lorder);
	return sb->data ? 0 : -ENOMEM;
}

uint32_t ovl_msg_map_min_write(const struct ovl_msg_map *m)
{
	return m->min_write_replicas ? m->min_write_replicas : m->replicas;
}

uint32_t ovl_msg_map_chunk_size(const struct ovl_msg_map *m)
{
	return m->chunk_size ? m->chunk_size : OVL_MSG_CHUNK_SIZE_DEFAULT;
}

int ovl_msg_map_sign(struct ovl_msg_map *m, const uint8_t sign_sk[64])
{
	msgpack_sbuffer sb;
	int ret;

	msgpack_sbuffer_init(&sb);
	ret = ovl_msg_map_sig_input(m, &sb);
	if (ret == 0)
		crypto_sign_detached(m->sig, NULL, (const uint8_t *)sb.data, sb.size, sign_sk);
	msgpack_sbuffer_destroy(&sb);
	return ret;
}

int ovl_msg_map_verify(const struct ovl_msg_map *m, const uint8_t sign_pk[OVL_MSG_ID_BYTES])
{
	msgpack_sbuffer sb;
	int ret;

	if (ovl_mem_is_zero(m->sig, sizeof(m->sig)))
		return -EKEYREJECTED;
	msgpack_sbuffer_init(&sb);
	ret = ovl_msg_map_sig_input(m, &sb);
	if (ret == 0 && crypto_sign_verify_detached(m->sig, (const uint8_t *)sb.data, sb.size,
						    sign_pk) != 0)
		ret = -EKEYREJECTED;
	msgpack_sbuffer_destroy(&sb);
	return ret;
}
