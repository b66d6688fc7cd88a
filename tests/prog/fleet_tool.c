/*
 * fleet_tool: what tests/integration/fleet_node.sh needs of fleet updates
 * before the director exists (issue 16): an image's blocks as files, and
 * assignments signed with the broker's key as the director would sign them.
 *
 *   fleet_tool blocks IMAGE OUTDIR
 *       write block i of IMAGE's payload to OUTDIR/i; print "release
 *       VERSION ID size SIZE blocks N", then "i HEXKEY" per block (the key
 *       the block is stored under, fe x8 'F' id index)
 *   fleet_tool assign BROKER_DIR NODE_HEX SEQ ACTION SLICE RATE OUT [IMAGE]
 *       an assignment for node NODE_HEX (64 hex digits) signed with
 *       BROKER_DIR/broker.key, issued now, valid 60 s, action stay, fetch
 *       or restart, the release and its certificate from IMAGE's head;
 *       written to OUT
 *
 * Exit 0, or 1 with the error on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "ovl_fleet.h"

static int write_file(const char *p, const void *buf, size_t len)
{
	char err[256];

	if (ovl_file_write_atomic(p, buf, len, 0644, err, sizeof(err)) < 0) {
		fprintf(stderr, "fleet_tool: %s\n", err);
		return -1;
	}
	return 0;
}

static int cmd_blocks(const char *img, const char *outdir)
{
	struct ovl_fleet_image_head h;
	struct ovl_fleet_release r;
	uint8_t *head = NULL, *buf = NULL, key[OVL_FLEET_BLOCK_KEY_BYTES];
	char err[512], hex[2 * OVL_FLEET_BLOCK_KEY_BYTES + 1], p[1024];
	int fd = open(img, O_RDONLY | O_CLOEXEC), rc = 1;

	memset(&r, 0, sizeof(r));
	if (fd < 0) {
		fprintf(stderr, "fleet_tool: cannot open '%s': %s\n", img, strerror(errno));
		return 1;
	}
	if (ovl_fleet_image_read_head(fd, &head, &h, err, sizeof(err)) < 0 ||
	    ovl_fleet_release_decode(&r, h.meta, h.meta_len, err, sizeof(err)) < 0) {
		fprintf(stderr, "fleet_tool: '%s': %s\n", img, err);
		goto out;
	}
	buf = malloc(r.block_size);
	if (!buf)
		goto out;
	ovl_hex_encode(r.id, 32, hex);
	printf("release %s %s size %" PRIu64 " blocks %u\n", r.version, hex, r.size, r.nblocks);
	for (uint32_t i = 0; i < r.nblocks; i++) {
		uint64_t len = ovl_fleet_block_len(&r, i);

		if (pread(fd, buf, len, (off_t)(h.head_len + (uint64_t)i * r.block_size)) != (ssize_t)len) {
			fprintf(stderr, "fleet_tool: '%s' is short\n", img);
			goto out;
		}
		snprintf(p, sizeof(p), "%s/%u", outdir, i);
		if (write_file(p, buf, len) < 0)
			goto out;
		ovl_fleet_block_key(key, r.id, i);
		ovl_hex_encode(key, sizeof(key), hex);
		printf("%u %s\n", i, hex);
	}
	rc = 0;
out:
	ovl_fleet_release_free(&r);
	free(buf);
	free(head);
	close(fd);
	return rc;
}

static int cmd_assign(char **argv, int argc)
{
	struct ovl_fleet_assign a;
	struct ovl_fleet_image_head h;
	struct ovl_id *id = NULL;
	uint8_t *head = NULL, *out = NULL;
	size_t outlen = 0;
	char err[512], p[1024];
	int rc = 1, fd = -1;

	memset(&a, 0, sizeof(a));
	snprintf(p, sizeof(p), "%s/broker.key", argv[0]);
	if (ovl_id_load(&id, p, err, sizeof(err)) < 0) {
		fprintf(stderr, "fleet_tool: %s\n", err);
		return 1;
	}
	if (strlen(argv[1]) != 64 || ovl_hex_decode(argv[1], a.node, 32) < 0) {
		fprintf(stderr, "fleet_tool: '%s' is not a node id\n", argv[1]);
		goto out;
	}
	a.seq = strtoull(argv[2], NULL, 10);
	if (strcmp(argv[3], "stay") == 0)
		a.action = OVL_FLEET_ACTION_STAY;
	else if (strcmp(argv[3], "fetch") == 0)
		a.action = OVL_FLEET_ACTION_FETCH;
	else if (strcmp(argv[3], "restart") == 0)
		a.action = OVL_FLEET_ACTION_RESTART;
	else {
		fprintf(stderr, "fleet_tool: unknown action '%s'\n", argv[3]);
		goto out;
	}
	snprintf(a.slice, sizeof(a.slice), "%s", argv[4]);
	a.rate = strtoull(argv[5], NULL, 10);
	a.issued = (uint64_t)time(NULL);
	a.valid = OVL_FLEET_ASSIGN_VALID_S;
	if (argc > 7) {
		fd = open(argv[7], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || ovl_fleet_image_read_head(fd, &head, &h, err, sizeof(err)) < 0) {
			fprintf(stderr, "fleet_tool: '%s': %s\n", argv[7], fd < 0 ? strerror(errno) : err);
			goto out;
		}
		a.release = h.meta;
		a.release_len = h.meta_len;
		a.cert = h.cert;
		a.cert_len = h.cert_len;
	}
	if (ovl_fleet_assign_sign(&a, id->sign_sk, &out, &outlen, err, sizeof(err)) < 0) {
		fprintf(stderr, "fleet_tool: %s\n", err);
		goto out;
	}
	if (write_file(argv[6], out, outlen) < 0)
		goto out;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(out);
	free(head);
	ovl_id_destroy(&id);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "blocks") == 0)
		return cmd_blocks(argv[2], argv[3]);
	if ((argc == 9 || argc == 10) && strcmp(argv[1], "assign") == 0)
		return cmd_assign(argv + 2, argc - 2);
	fprintf(stderr, "usage: fleet_tool blocks IMAGE OUTDIR\n"
			"       fleet_tool assign BROKER_DIR NODE_HEX SEQ ACTION SLICE RATE OUT [IMAGE]\n");
	return 2;
}
