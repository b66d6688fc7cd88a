#include "ovl_id.h"
#include "ovl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Key file layout, see ovl_id.h and docs/PROTOCOL.md 2.1 */
#define FILE_MAGIC "SHELFID"
#define FILE_MAGIC_BYTES 7
#define OFF_VERSION 7
#define OFF_SIGN_SEED 8
#define OFF_CURVE_SK 40
#define OFF_SIGN_PK 72
#define OFF_CURVE_PK 104

static int id_alloc(struct ovl_id **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

int ovl_id_generate(struct ovl_id **out)
{
	struct ovl_id *id = NULL;
	int ret;

	*out = NULL;
	if (sodium_init() < 0)
		return -EIO;
	ret = id_alloc(&id);
	if (ret < 0)
		return ret;
	crypto_sign_keypair(id->sign_pk, id->sign_sk);
	crypto_box_keypair(id->curve_pk, id->curve_sk);
	*out = id;
	return 0;
}

int ovl_id_from_seed(struct ovl_id **out, const uint8_t sign_seed[OVL_ID_SEED_BYTES],
		     const uint8_t curve_seed[OVL_ID_SEED_BYTES])
{
	struct ovl_id *id = NULL;
	int ret;

	*out = NULL;
	ret = id_alloc(&id);
	if (ret < 0)
		return ret;
	crypto_sign_seed_keypair(id->sign_pk, id->sign_sk, sign_seed);
	crypto_box_seed_keypair(id->curve_pk, id->curve_sk, curve_seed);
	*out = id;
	return 0;
}

void ovl_id_destroy(struct ovl_id **id)
{
	if (!id || !*id)
		return;
	sodium_memzero(*id, sizeof(**id));
	free(*id);
	*id = NULL;
}

/* Rebuild an identity from the secret parts of a key file image and check
 * the stored public keys against it. */
static int id_from_image(struct ovl_id **out, const uint8_t *img, const char *path,
			 char *err, size_t errlen)
{
	struct ovl_id *id = NULL;
	int ret;

	if (memcmp(img, FILE_MAGIC, FILE_MAGIC_BYTES) != 0) {
		snprintf(err, errlen, "key file '%s' is not a shelf identity (bad magic)", path);
		return -EBADMSG;
	}
	if (img[OFF_VERSION] != OVL_ID_FILE_VERSION) {
		snprintf(err, errlen, "key file '%s' has format version %u; this build reads version %u",
			 path, img[OFF_VERSION], OVL_ID_FILE_VERSION);
		return -EPROTONOSUPPORT;
	}
	ret = id_alloc(&id);
	if (ret < 0) {
		snprintf(err, errlen, "cannot load key file '%s': %s", path, strerror(-ret));
		goto out;
	}
	crypto_sign_seed_keypair(id->sign_pk, id->sign_sk, img + OFF_SIGN_SEED);
	memcpy(id->curve_sk, img + OFF_CURVE_SK, OVL_ID_CURVE_BYTES);
	crypto_scalarmult_base(id->curve_pk, id->curve_sk);
	if (sodium_memcmp(id->sign_pk, img + OFF_SIGN_PK, OVL_ID_BYTES) != 0 ||
	    sodium_memcmp(id->curve_pk, img + OFF_CURVE_PK, OVL_ID_CURVE_BYTES) != 0) {
		snprintf(err, errlen, "key file '%s' is corrupt: its public keys do not match its secret keys",
			 path);
		ret = -EBADMSG;
		goto out;
	}
	*out = id;
	id = NULL;
	ret = 0;
out:
	ovl_id_destroy(&id);
	return ret;
}

int ovl_id_load(struct ovl_id **out, const char *path, char *err, size_t errlen)
{
	uint8_t img[OVL_ID_FILE_BYTES + 1]; /* one spare byte notices growth after fstat */
	struct stat st;
	ssize_t n = 0;
	size_t got = 0;
	int fd = -1, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open key file '%s': %s", path, strerror(-ret));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat key file '%s': %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file '%s' is not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	if (st.st_mode & 044) {
		snprintf(err, errlen, "key file '%s' is readable by group or others (mode %04o); run chmod 600",
			 path, (unsigned)(st.st_mode & 07777));
		ret = -EPERM;
		goto out;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "key file '%s' is accessible by group or others (mode %04o); run chmod 600",
			 path, (unsigned)(st.st_mode & 07777));
		ret = -EPERM;
		goto out;
	}
	if (st.st_size != OVL_ID_FILE_BYTES) {
		snprintf(err, errlen, "key file '%s' has %lld bytes, expected %d", path,
			 (long long)st.st_size, OVL_ID_FILE_BYTES);
		ret = -EBADMSG;
		goto out;
	}
	while (got < sizeof(img)) {
		n = read(fd, img + got, sizeof(img) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot read key file '%s': %s", path, strerror(-ret));
			goto out;
		}
		if (n == 0)
			break;
		got += n;
	}
	if (got != OVL_ID_FILE_BYTES) {
		snprintf(err, errlen, "key file '%s' has %zu bytes, expected %d", path, got,
			 OVL_ID_FILE_BYTES);
		ret = -EBADMSG;
		goto out;
	}
	ret = id_from_image(out, img, path, err, errlen);
out:
	sodium_memzero(img, sizeof(img));
	if (fd >= 0)
		close(fd);
	return ret;
}

int ovl_id_save(const struct ovl_id *id, const char *path, char *err, size_t errlen)
{
	uint8_t img[OVL_ID_FILE_BYTES];
	char *tmp = NULL;
	int fd = -1, ret;

	memcpy(img, FILE_MAGIC, FILE_MAGIC_BYTES);
	img[OFF_VERSION] = OVL_ID_FILE_VERSION;
	/* libsodium's Ed25519 secret key is seed ‖ public key */
	memcpy(img + OFF_SIGN_SEED, id->sign_sk, OVL_ID_SEED_BYTES);
	memcpy(img + OFF_CURVE_SK, id->curve_sk, OVL_ID_CURVE_BYTES);
	memcpy(img + OFF_SIGN_PK, id->sign_pk, OVL_ID_BYTES);
	memcpy(img + OFF_CURVE_PK, id->curve_pk, OVL_ID_CURVE_BYTES);

	if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
		tmp = NULL;
		ret = -ENOMEM;
		snprintf(err, errlen, "cannot write key file '%s': %s", path, strerror(-ret));
		goto out;
	}
	/* mkstemp creates the file with mode 0600 and O_EXCL */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create key file '%s': %s", path, strerror(-ret));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	ret = fchmod(fd, OVL_ID_FILE_MODE) < 0 ? -errno : 0;
	if (ret == 0)
		ret = ovl_file_write_full(fd, img, sizeof(img));
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret < 0) {
		snprintf(err, errlen, "cannot write key file '%s': %s", path, strerror(-ret));
		goto out;
	}
	/* link() fails with EEXIST instead of replacing an existing file */
	if (link(tmp, path) < 0) {
		ret = -errno;
		if (ret == -EEXIST)
			snprintf(err, errlen, "key file '%s' already exists; refusing to overwrite it",
				 path);
		else
			snprintf(err, errlen, "cannot create key file '%s': %s", path,
				 strerror(-ret));
		goto out;
	}
	ret = ovl_file_sync_parent(path);
	if (ret < 0) {
		snprintf(err, errlen, "cannot sync the directory of key file '%s': %s", path,
			 strerror(-ret));
		goto out;
	}
	ret = 0;
out:
	sodium_memzero(img, sizeof(img));
	if (fd >= 0)
		close(fd);
	if (tmp)
		unlink(tmp);
	free(tmp);
	return ret;
}

int ovl_id_load_or_create(struct ovl_id **out, const char *path, bool *created,
			  char *err, size_t errlen)
{
	struct ovl_id *id = NULL;
	int ret;

	*out = NULL;
	if (created)
		*created = false;
	ret = ovl_id_load(out, path, err, errlen);
	if (ret != -ENOENT)
		return ret;
	ret = ovl_id_generate(&id);
	if (ret < 0) {
		snprintf(err, errlen, "cannot generate an identity for '%s': %s", path,
			 strerror(-ret));
		goto out;
	}
	ret = ovl_id_save(id, path, err, errlen);
	if (ret == -EEXIST) {
		/* another process created it first: use theirs */
		ret = ovl_id_load(out, path, err, errlen);
		goto out;
	}
	if (ret < 0)
		goto out;
	if (created)
		*created = true;
	*out = id;
	id = NULL;
out:
	ovl_id_destroy(&id);
	return ret;
}

void ovl_nodeid_format(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_HEX_BYTES])
{
	ovl_hex_encode(id, OVL_ID_BYTES, out);
}

int ovl_nodeid_parse(const char *s, uint8_t id[OVL_ID_BYTES])
{
	if (!s || strlen(s) != 2 * OVL_ID_BYTES)
		return -EINVAL;
	return ovl_hex_decode(s, id, OVL_ID_BYTES);
}

void ovl_keyid_compute(const uint8_t pk[OVL_ID_BYTES], uint8_t keyid[OVL_KEYID_BYTES])
{
	uint8_t h[crypto_generichash_BYTES]; /* 32: BLAKE2b-256 */

	crypto_generichash(h, sizeof(h), pk, OVL_ID_BYTES, NULL, 0);
	memcpy(keyid, h, OVL_KEYID_BYTES);
}

void ovl_keyid_format(const uint8_t keyid[OVL_KEYID_BYTES], char out[OVL_ID_FP_BYTES])
{
	char hex[2 * OVL_KEYID_BYTES + 1];
	size_t o = 0;

	ovl_hex_encode(keyid, OVL_KEYID_BYTES, hex);
	for (size_t i = 0; i < 2 * OVL_KEYID_BYTES; i++) {
		if (i > 0 && i % 4 == 0)
			out[o++] = ':';
		out[o++] = hex[i];
	}
	out[o] = '\0';
}

void ovl_nodeid_fingerprint(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_FP_BYTES])
{
	uint8_t keyid[OVL_KEYID_BYTES];

	ovl_keyid_compute(id, keyid);
	ovl_keyid_format(keyid, out);
}

void ovl_key_z85_encode(const uint8_t key[OVL_ID_CURVE_BYTES], char out[OVL_ID_Z85_BYTES])
{
	zmq_z85_encode(out, key, OVL_ID_CURVE_BYTES);
}

int ovl_key_z85_decode(const char *s, uint8_t key[OVL_ID_CURVE_BYTES])
{
	uint8_t tmp[OVL_ID_CURVE_BYTES];

	if (!s || strlen(s) != OVL_ID_Z85_BYTES - 1)
		return -EINVAL;
	if (!zmq_z85_decode(tmp, s))
		return -EINVAL;
	memcpy(key, tmp, OVL_ID_CURVE_BYTES);
	return 0;
}
