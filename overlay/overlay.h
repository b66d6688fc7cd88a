/*
 * overlay.h: the public interface of libshelf-overlay, the library every
 * shelf process links (broker, nodes, clients, tools).
 *
 * Each concern has its own header, included here; other folders include only
 * this file. Conventions for every function: 0 or a negative errno on return
 * (a positive value is a count); errors that need words are written into a
 * caller-supplied `char *err, size_t errlen` buffer; `x_new()` allocates and
 * `x_destroy(&x)` frees and NULLs; `char *` returned is the caller's to free.
 */
#ifndef SHELF_OVERLAY_H
#define SHELF_OVERLAY_H

#include "ovl_log.h"
#include "ovl_conf.h"
#include "ovl_board.h"
#include "ovl_crc32c.h"
#include "ovl_mp.h"
#include "ovl_slice.h"
#include "ovl_nl.h"
#include "ovl_link.h"
#include "ovl_id.h"
#include "ovl_cert.h"
#include "ovl_msg.h"
#include "ovl_map.h"
#include "ovl_peers.h"
#include "ovl_wire.h"
#include "ovl_dpc.h"
#include "ovl_place.h"
#include "ovl_util.h"
#include "ovl_large.h"
#include "ovl_fleet.h"

#endif
