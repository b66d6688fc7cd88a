/*
 * shelf image: build and inspect fleet update images (issue 16).
 *
 *   shelf image build --version V --board B --key RELEASE.key --cert RELEASE.cert
 *                     [--expires 30d|@UNIX_S] [--min-from V] [--rollback]
 *                     --out FILE PAYLOAD
 *   shelf image show FILE [--verify --ca CA.pub [--board B] [--running V]]
 *
 * The image is the fixed head, the signed release metadata, the release
 * key's certificate and the payload (overlay/ovl_fleet.h, 3.2). build reads
 * the payload twice, 1 MiB at a time (hashes, then the copy, which must hash
 * the same), so memory stays bounded whatever the payload's size; the image
 * appears at FILE complete or not at all.
 *
 * Exit codes: 0 ok; 1 failed or refused (the message says why); 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "overlay.h"
#include "admin.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define IMAGE_IO_BYTES (1u << 20)          /* read/write unit: bounds memory */
#define IMAGE_EXPIRES_DEFAULT "30d"

static void fmt_time(uint64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t > (uint64_t)INT32_MAX * 64 || !gmtime_r(&tt, &tm) ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "%" PRIu64, t);
}

/* Read all of a small file (at most cap bytes). */
static int read_small(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
		      size_t errlen)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f) {
		int rc = -errno;

		snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
		return rc;
	}
	n = fread(buf, 1, cap, f);
	if (n == cap && fgetc(f) != EOF) {
		fclose(f);
		snprintf(err, errlen, "'%s' is larger than %zu bytes", path, cap);
		return -E2BIG;
	}
	fclose(f);
	*len = n;
	return 0;
}

static int read_full(int fd, uint8_t *buf, size_t len, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = read(fd, buf + *got, len - *got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/*
 * Read `size` payload bytes from fd (at its current offset), IMAGE_IO_BYTES
 * at a time, hashing each block of block_size into blocks[] and the whole
 * into sha; copy them to out_fd when it is >= 0. `tail` (may be NULL) is set
 * when bytes follow the payload. 0, -ENODATA (fewer bytes than size), or
 * -errno (err says which file).
 */
static int hash_payload(int fd, const char *path, uint64_t size, uint32_t block_size,
			uint8_t (*blocks)[32], uint8_t sha[32], int out_fd, const char *out_path,
			bool *tail, char *err, size_t errlen)
{
	crypto_hash_sha256_state whole, blk;
	uint8_t *buf = malloc(IMAGE_IO_BYTES);
	uint64_t done = 0, in_block = 0;
	uint32_t bi = 0;
	size_t got = 0;
	int ret;

	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	crypto_hash_sha256_init(&whole);
	crypto_hash_sha256_init(&blk);
	while (done < size) {
		size_t want = IMAGE_IO_BYTES;

		if (size - done < want)
			want = (size_t)(size - done);
		/* never read across a block boundary: each chunk feeds one block */
		if (block_size - in_block < want)
			want = (size_t)(block_size - in_block);
		ret = read_full(fd, buf, want, &got);
		if (ret < 0) {
			snprintf(err, errlen, "cannot read '%s': %s", path, strerror(-ret));
			goto out;
		}
		if (got < want) {
			snprintf(err, errlen, "'%s' ends after %" PRIu64 " payload bytes, %" PRIu64 " expected",
				 path, done + got, size);
			ret = -ENODATA;
			goto out;
		}
		crypto_hash_sha256_update(&whole, buf, want);
		crypto_hash_sha256_update(&blk, buf, want);
		if (out_fd >= 0 && (ret = ovl_file_write_full(out_fd, buf, want)) < 0) {
			snprintf(err, errlen, "cannot write '%s': %s", out_path, strerror(-ret));
			goto out;
		}
		done += want;
		in_block += want;
		if (in_block == block_size || done == size) {
			crypto_hash_sha256_final(&blk, blocks[bi++]);
			crypto_hash_sha256_init(&blk);
			in_block = 0;
		}
	}
	crypto_hash_sha256_final(&whole, sha);
	if (tail) {
		ret = read_full(fd, buf, 1, &got);
		if (ret < 0) {
			snprintf(err, errlen, "cannot read '%s': %s", path, strerror(-ret));
			goto out;
		}
		*tail = got > 0;
	}
	ret = 0;
out:
	free(buf);
	return ret;
}

/* ---- build --------------------------------------------------------------- */

static int build_usage(FILE *f)
{
	fprintf(f,
		"usage: shelf image build --version V --board B --key RELEASE.key --cert RELEASE.cert\n"
		"                         [--expires DURATION|@UNIX_S] [--min-from V] [--rollback]\n"
		"                         --out FILE PAYLOAD\n"
		"\n"
		"Sign PAYLOAD (for the sim board: a ustar archive of VERSION, bin/shelf-node,\n"
		"boards/) as release V for board B with a release key (`shelf-broker\n"
		"release-key`), and write the image to FILE (complete or not at all).\n"
		"  --expires   how long nodes accept it (default %s), or an absolute unix time\n"
		"  --min-from  the lowest version it may upgrade from (default 0.0.0: any)\n"
		"  --rollback  it may replace a higher version\n",
		IMAGE_EXPIRES_DEFAULT);
	return f == stdout ? 0 : EXIT_USAGE;
}

/* "30d", "1s", or "@1700000000" into an absolute expiry. */
static int parse_expires(const char *s, uint64_t now, uint64_t *out)
{
	int64_t ms;
	char *end = NULL;

	if (s[0] == '@') {
		if (s[1] < '0' || s[1] > '9')
			return -EINVAL;
		errno = 0;
		*out = strtoull(s + 1, &end, 10);
		return errno || *end ? -EINVAL : 0;
	}
	if (ovl_parse_ms(s, &ms) < 0 || ms < 1000)
		return -EINVAL;
	*out = now + (uint64_t)ms / 1000;
	return 0;
}

int cmd_image_build(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "version", required_argument, NULL, 'V' }, { "board", required_argument, NULL, 'b' },
		{ "key", required_argument, NULL, 'k' },     { "cert", required_argument, NULL, 'c' },
		{ "expires", required_argument, NULL, 'e' }, { "min-from", required_argument, NULL, 'm' },
		{ "rollback", no_argument, NULL, 'r' },      { "out", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 }
	};
	const char *version = NULL, *board = NULL, *key = NULL, *certp = NULL, *outp = NULL;
	const char *expires = IMAGE_EXPIRES_DEFAULT, *min_from = "0.0.0", *payload;
	char err[9216] = "", why[512] = "", tmp[4096], hex[65], fp[OVL_ID_FP_BYTES], t1[32];
	uint8_t cert[OVL_CERT_MAX_BYTES], fixed[OVL_FLEET_IMAGE_FIXED_BYTES], sha2[32], id[32];
	uint8_t (*blocks2)[32] = NULL;
	uint8_t *meta = NULL;
	size_t cert_len = 0, meta_len = 0;
	struct ovl_fleet_release r;
	struct ovl_id *rk = NULL;
	struct ovl_cert rc;
	struct stat st;
	uint64_t now = (uint64_t)time(NULL), vnum;
	bool rollback = false, tmp_made = false, tail = false;
	int c, fd = -1, ofd = -1, ret = EXIT_FAIL, rv;

	memset(&r, 0, sizeof(r));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'V': version = optarg; break;
		case 'b': board = optarg; break;
		case 'k': key = optarg; break;
		case 'c': certp = optarg; break;
		case 'e': expires = optarg; break;
		case 'm': min_from = optarg; break;
		case 'r': rollback = true; break;
		case 'o': outp = optarg; break;
		case 'h': return build_usage(stdout);
		default: return build_usage(stderr);
		}
	}
	if (!version || !board || !key || !certp || !outp || optind != argc - 1) {
		fprintf(stderr, "shelf image build: --version, --board, --key, --cert, --out and one PAYLOAD are required\n");
		return build_usage(stderr);
	}
	payload = argv[optind];
	if (ovl_fleet_version_check(version, &vnum, err, sizeof(err)) < 0 ||
	    ovl_fleet_version_check(min_from, &vnum, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf image build: %s\n", err);
		return EXIT_USAGE;
	}
	if (!ovl_fleet_board_ok(board)) {
		fprintf(stderr, "shelf image build: board '%s' must be 1 to %d of [A-Za-z0-9._-], not starting with '.'\n",
			board, OVL_FLEET_BOARD_BYTES - 1);
		return EXIT_USAGE;
	}
	if (parse_expires(expires, now, &r.expires) < 0) {
		fprintf(stderr, "shelf image build: invalid --expires '%s' (a duration such as 30d, 12h, 1s, or @UNIX_SECONDS)\n",
			expires);
		return EXIT_USAGE;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "shelf image build: cannot initialise libsodium\n");
		return EXIT_FAIL;
	}
	/* the key and its certificate must belong together */
	if (ovl_id_load(&rk, key, err, sizeof(err)) < 0)
		goto fail;
	if (read_small(certp, cert, sizeof(cert), &cert_len, err, sizeof(err)) < 0)
		goto fail;
	if (ovl_cert_decode(&rc, cert, cert_len, why, sizeof(why)) < 0) {
		snprintf(err, sizeof(err), "'%s': %s", certp, why);
		goto fail;
	}
	if (memcmp(rc.sign_pk, rk->sign_pk, OVL_ID_BYTES) != 0) {
		snprintf(err, sizeof(err), "'%s' is not the certificate of the key '%s'", certp, key);
		goto fail;
	}
	if (rc.role != OVL_ROLE_RELEASE) {
		snprintf(err, sizeof(err), "'%s' is a certificate of role '%s', not a release key's", certp,
			 ovl_role_name(rc.role) ? ovl_role_name(rc.role) : "?");
		goto fail;
	}
	if (rc.not_after < r.expires) {
		fmt_time(rc.not_after, t1, sizeof(t1));
		fprintf(stderr, "shelf image build: warning: the release certificate expires at %s, before the metadata; nodes refuse the image from then\n",
			t1);
	}
	fd = open(payload, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, sizeof(err), "cannot open '%s': %s", payload, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, sizeof(err), "'%s' is not a regular file", payload);
		goto fail;
	}
	{
		struct stat ost;

		if (stat(outp, &ost) == 0 && ost.st_dev == st.st_dev && ost.st_ino == st.st_ino) {
			snprintf(err, sizeof(err), "--out '%s' is the payload itself", outp);
			goto fail;
		}
	}
	if (st.st_size <= 0 || (uint64_t)st.st_size > OVL_FLEET_SIZE_MAX_BYTES) {
		snprintf(err, sizeof(err), "'%s' is %lld bytes; a payload is 1 byte to 64 GiB", payload,
			 (long long)st.st_size);
		goto fail;
	}
	snprintf(r.version, sizeof(r.version), "%s", version);
	snprintf(r.board, sizeof(r.board), "%s", board);
	snprintf(r.min_from, sizeof(r.min_from), "%s", min_from);
	r.rollback = rollback;
	r.issued = now;
	r.size = (uint64_t)st.st_size;
	r.block_size = ovl_fleet_block_size_for(r.size);
	r.nblocks = (uint32_t)((r.size + r.block_size - 1) / r.block_size);
	r.blocks = calloc(r.nblocks, 32);
	blocks2 = calloc(r.nblocks, 32);
	if (!r.blocks || !blocks2) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	if (hash_payload(fd, payload, r.size, r.block_size, r.blocks, r.sha256, -1, NULL, NULL, err,
			 sizeof(err)) < 0)
		goto fail;
	if (ovl_fleet_release_sign(&r, rk->sign_sk, &meta, &meta_len, err, sizeof(err)) < 0)
		goto fail;
	ovl_fleet_release_id(meta, meta_len, id);
	/* write beside FILE, then rename: FILE appears complete or not at all */
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", outp, (long)getpid());
	ofd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (ofd < 0) {
		snprintf(err, sizeof(err), "cannot create '%s': %s", tmp, strerror(errno));
		goto fail;
	}
	tmp_made = true;
	ovl_fleet_image_fixed(fixed, (uint32_t)meta_len, (uint32_t)cert_len);
	if ((rv = ovl_file_write_full(ofd, fixed, sizeof(fixed))) < 0 ||
	    (rv = ovl_file_write_full(ofd, meta, meta_len)) < 0 ||
	    (rv = ovl_file_write_full(ofd, cert, cert_len)) < 0) {
		snprintf(err, sizeof(err), "cannot write '%s': %s", tmp, strerror(-rv));
		goto fail;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		snprintf(err, sizeof(err), "cannot rewind '%s': %s", payload, strerror(errno));
		goto fail;
	}
	/* the second pass copies; a payload that changed in between is refused */
	if (hash_payload(fd, payload, r.size, r.block_size, blocks2, sha2, ofd, tmp, &tail, err,
			 sizeof(err)) < 0)
		goto fail;
	if (tail || memcmp(sha2, r.sha256, 32) != 0 ||
	    memcmp(blocks2, r.blocks, (size_t)r.nblocks * 32) != 0) {
		snprintf(err, sizeof(err), "'%s' changed while the image was built", payload);
		goto fail;
	}
	if (fsync(ofd) < 0) {
		snprintf(err, sizeof(err), "cannot fsync '%s': %s", tmp, strerror(errno));
		goto fail;
	}
	close(ofd);
	ofd = -1;
	if (rename(tmp, outp) < 0) {
		snprintf(err, sizeof(err), "cannot rename '%s' to '%s': %s", tmp, outp, strerror(errno));
		goto fail;
	}
	tmp_made = false;
	if ((rv = ovl_file_sync_parent(outp)) < 0) {
		snprintf(err, sizeof(err), "cannot fsync the folder of '%s': %s", outp, strerror(-rv));
		goto fail;
	}
	ovl_hex_encode(r.sha256, 32, hex);
	ovl_nodeid_fingerprint(rk->sign_pk, fp);
	fmt_time(r.expires, t1, sizeof(t1));
	printf("image %s: release %s for board %s, %" PRIu64 " bytes in %u blocks of %u\n", outp,
	       r.version, r.board, r.size, r.nblocks, r.block_size);
	printf("sha256 %s, signed by release key %s, expires %s\n", hex, fp, t1);
	ovl_hex_encode(id, 32, hex);
	printf("release id %s\n", hex);
	ret = 0;
	goto out;
fail:
	fprintf(stderr, "shelf image build: %s\n", err);
	ret = EXIT_FAIL;
out:
	if (ofd >= 0)
		close(ofd);
	if (tmp_made)
		unlink(tmp);
	if (fd >= 0)
		close(fd);
	free(meta);
	free(blocks2);
	ovl_fleet_release_free(&r);
	ovl_id_destroy(&rk);
	return ret;
}

/* ---- show ---------------------------------------------------------------- */

static int show_usage(FILE *f)
{
	fprintf(f,
		"usage: shelf image show FILE [--verify --ca CA.pub [--board B] [--running V]]\n"
		"\n"
		"Print an image's release metadata. --verify checks what a node checks: the\n"
		"release certificate against the site CA (CA.pub: a file with the CA's key in\n"
		"hex, or the 64 hex digits), the signature, the expiry, with --board the board\n"
		"and with --running the version rules, then every block and the sha256.\n"
		"exit codes: 0 ok, 1 refused or unreadable (stderr says why), 2 usage\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

/* CA.pub: a file holding 64 hex digits (and a newline), or the digits. */
static int load_ca(const char *s, uint8_t pk[OVL_ID_BYTES], char *err, size_t errlen)
{
	uint8_t buf[256];
	size_t len = 0;
	int rc;

	if (strlen(s) == 2 * OVL_ID_BYTES && ovl_hex_decode(s, pk, OVL_ID_BYTES) == 0)
		return 0;
	rc = read_small(s, buf, sizeof(buf) - 1, &len, err, errlen);
	if (rc < 0)
		return rc;
	buf[len] = '\0';
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	if (len != 2 * OVL_ID_BYTES || ovl_hex_decode((const char *)buf, pk, OVL_ID_BYTES) < 0) {
		snprintf(err, errlen, "'%s' does not hold a CA key (64 hex digits)", s);
		return -EINVAL;
	}
	return 0;
}

int cmd_image_show(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "verify", no_argument, NULL, 'v' },     { "ca", required_argument, NULL, 'c' },
		{ "board", required_argument, NULL, 'b' }, { "running", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },       { NULL, 0, NULL, 0 }
	};
	const char *ca = NULL, *board = NULL, *running = NULL, *path;
	char err[768] = "", hex[65], fp[OVL_ID_FP_BYTES], t1[32], t2[32];
	uint8_t sha[32], keyid[OVL_KEYID_BYTES];
	uint8_t (*blocks)[32] = NULL;
	uint8_t *head = NULL;
	struct ovl_fleet_image_head h;
	struct ovl_fleet_release r;
	struct ovl_trust trust;
	struct ovl_cert rc;
	struct stat st;
	bool verify = false, tail = false, cert_ok;
	uint64_t vnum;
	int c, fd = -1, ret = EXIT_FAIL;

	memset(&r, 0, sizeof(r));
	memset(&trust, 0, sizeof(trust));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'v': verify = true; break;
		case 'c': ca = optarg; break;
		case 'b': board = optarg; break;
		case 'r': running = optarg; break;
		case 'h': return show_usage(stdout);
		default: return show_usage(stderr);
		}
	}
	if (optind != argc - 1)
		return show_usage(stderr);
	path = argv[optind];
	if (verify && !ca) {
		fprintf(stderr, "shelf image show: --verify needs --ca CA.pub (the site CA's public key)\n");
		return EXIT_USAGE;
	}
	if (!verify && (ca || board || running)) {
		fprintf(stderr, "shelf image show: --ca, --board and --running go with --verify\n");
		return EXIT_USAGE;
	}
	if (running && ovl_fleet_version_check(running, &vnum, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf image show: --running: %s\n", err);
		return EXIT_USAGE;
	}
	if (board && !ovl_fleet_board_ok(board)) {
		fprintf(stderr, "shelf image show: '%s' is not a board name\n", board);
		return EXIT_USAGE;
	}
	if (ca && load_ca(ca, trust.ca_pk, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf image show: --ca: %s\n", err);
		return EXIT_USAGE;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "shelf image show: cannot initialise libsodium\n");
		return EXIT_FAIL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, sizeof(err), "cannot open '%s': %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, sizeof(err), "'%s' is not a regular file", path);
		goto fail;
	}
	if (ovl_fleet_image_read_head(fd, &head, &h, err, sizeof(err)) < 0)
		goto fail;
	if (ovl_fleet_release_decode(&r, h.meta, h.meta_len, err, sizeof(err)) < 0) {
		/* under --verify, say what a node would: the signature comes first */
		if (verify && ovl_fleet_release_verify(&r, h.meta, h.meta_len, h.cert, h.cert_len,
						       &trust, (uint64_t)time(NULL), board, running,
						       err, sizeof(err)) < 0)
			goto refused;
		goto fail;
	}
	cert_ok = ovl_cert_decode(&rc, h.cert, h.cert_len, err, sizeof(err)) == 0;
	ovl_hex_encode(r.sha256, 32, hex);
	printf("version      %s\n", r.version);
	printf("board        %s\n", r.board);
	printf("size         %" PRIu64 "\n", r.size);
	printf("sha256       %s\n", hex);
	printf("block size   %u\n", r.block_size);
	printf("blocks       %u\n", r.nblocks);
	printf("min from     %s\n", r.min_from);
	fmt_time(r.issued, t1, sizeof(t1));
	fmt_time(r.expires, t2, sizeof(t2));
	printf("issued       %s\n", t1);
	printf("expires      %s\n", t2);
	printf("rollback     %s\n", r.rollback ? "yes" : "no");
	ovl_keyid_compute(r.key, keyid);
	ovl_keyid_format(keyid, fp);
	printf("release key  %s\n", fp);
	if (cert_ok) {
		fmt_time(rc.not_after, t1, sizeof(t1));
		ovl_keyid_format(rc.issuer, fp);
		printf("certificate  serial %llu, role %s, issued by %s, valid until %s\n",
		       (unsigned long long)rc.serial, ovl_role_name(rc.role), fp, t1);
	} else {
		printf("certificate  cannot be decoded: %s\n", err);
	}
	ovl_hex_encode(r.id, 32, hex);
	printf("release id   %s\n", hex);
	if ((uint64_t)st.st_size != h.head_len + r.size)
		printf("payload      %lld bytes in the file, %" PRIu64 " expected\n",
		       (long long)st.st_size - (long long)h.head_len, r.size);
	if (!verify) {
		ret = 0;
		goto out;
	}
	/* what a node checks, in its order: trust and rules, then every byte */
	ovl_fleet_release_free(&r);
	if (ovl_fleet_release_verify(&r, h.meta, h.meta_len, h.cert, h.cert_len, &trust,
				     (uint64_t)time(NULL), board, running, err, sizeof(err)) < 0)
		goto refused;
	blocks = calloc(r.nblocks, 32);
	if (!blocks) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	if (lseek(fd, (off_t)h.head_len, SEEK_SET) < 0) {
		snprintf(err, sizeof(err), "cannot seek in '%s': %s", path, strerror(errno));
		goto fail;
	}
	if (hash_payload(fd, path, r.size, r.block_size, blocks, sha, -1, NULL, &tail, err,
			 sizeof(err)) < 0)
		goto refused;
	for (uint32_t i = 0; i < r.nblocks; i++) {
		if (sodium_memcmp(blocks[i], r.blocks[i], 32) != 0) {
			snprintf(err, sizeof(err), "block %u of release %s does not verify", i, r.version);
			goto refused;
		}
	}
	if (sodium_memcmp(sha, r.sha256, 32) != 0) {
		snprintf(err, sizeof(err), "the payload's sha256 does not verify");
		goto refused;
	}
	if (tail) {
		snprintf(err, sizeof(err), "bytes follow the payload; an image ends with it");
		goto refused;
	}
	printf("verify       ok: release certificate by the CA, signature, %sexpiry, %s%u blocks, sha256\n",
	       board ? "board, " : "", running ? "version rules, " : "", r.nblocks);
	ret = 0;
	goto out;
refused:
	fprintf(stderr, "shelf image show: refused: %s\n", err);
	ret = EXIT_FAIL;
	goto out;
fail:
	fprintf(stderr, "shelf image show: %s\n", err);
	ret = EXIT_FAIL;
out:
	if (fd >= 0)
		close(fd);
	free(blocks);
	free(head);
	ovl_fleet_release_free(&r);
	return ret;
}
