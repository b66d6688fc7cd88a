/* Node identity: known answers, the key file format, and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"

/* RFC 8032 section 7.1, TEST 1 */
static const char rfc8032_seed[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char rfc8032_pk[] = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc8032_sig[] = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
				  "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24"
				  "655141438e7a100b";
/*
 * crypto_box_seed_keypair(seed = 00 01 .. 1f): sk = SHA-512(seed)[0..32),
 * pk = X25519(sk, 9). Cross-checked with Python's hashlib and
 * cryptography.hazmat X25519; the fingerprint with hashlib.blake2b.
 */
static const char curve_sk_hex[] = "3d94eea49c580aef816935762be049559d6d1440dede12e6a125f1841fff8e6f";
static const char curve_pk_hex[] = "4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01";
static const char curve_pk_z85[] = "m/*$&H^-y+t0OZ/ISr/LFYZlVkyTnmN9xTcTAhI+";
static const char node_fp[] = "7849:ac30:4968:0be1";

struct fixture {
	char dir[64];
	char path[128];
	struct ovl_id *id;
};

static void unhex(uint8_t *out, size_t n, const char *hex)
{
	assert_int_equal(sodium_hex2bin(out, n, hex, strlen(hex), NULL, NULL, NULL), 0);
}

static void kat_identity(struct ovl_id **id)
{
	uint8_t seed[32], curve_seed[32];

	unhex(seed, sizeof(seed), rfc8032_seed);
	for (int i = 0; i < 32; i++)
		curve_seed[i] = (uint8_t)i;
	assert_int_equal(ovl_id_from_seed(id, seed, curve_seed), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || sodium_init() < 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_id.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/id.key", f->dir);
	kat_identity(&f->id);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	ovl_id_destroy(&f->id);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, cap);
	assert_true(n >= 0);
	close(fd);
	return (size_t)n;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e = NULL;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void test_known_answers(void **state)
{
	struct fixture *f = *state;
	uint8_t want[64], sig[64];
	char hex[OVL_ID_HEX_BYTES], fp[OVL_ID_FP_BYTES], z85[OVL_ID_Z85_BYTES];

	unhex(want, 32, rfc8032_pk);
	assert_memory_equal(f->id->sign_pk, want, 32);
	ovl_nodeid_format(f->id->sign_pk, hex);
	assert_string_equal(hex, rfc8032_pk);
	unhex(want, 32, curve_sk_hex);
	assert_memory_equal(f->id->curve_sk, want, 32);
	unhex(want, 32, curve_pk_hex);
	assert_memory_equal(f->id->curve_pk, want, 32);
	ovl_nodeid_fingerprint(f->id->sign_pk, fp);
	assert_string_equal(fp, node_fp);
	ovl_key_z85_encode(f->id->curve_pk, z85);
	assert_string_equal(z85, curve_pk_z85);
	/* the signing key signs as RFC 8032 says */
	crypto_sign_detached(sig, NULL, (const uint8_t *)"", 0, f->id->sign_sk);
	unhex(want, 64, rfc8032_sig);
	assert_memory_equal(sig, want, 64);
}

static void test_text_forms_parse(void **state)
{
	struct fixture *f = *state;
	uint8_t id[32], key[32];
	char upper[65];

	assert_int_equal(ovl_nodeid_parse(rfc8032_pk, id), 0);
	assert_memory_equal(id, f->id->sign_pk, 32);
	for (int i = 0; i < 64; i++)
		upper[i] = (char)(rfc8032_pk[i] >= 'a' ? rfc8032_pk[i] - 32 : rfc8032_pk[i]);
	upper[64] = '\0';
	assert_int_equal(ovl_nodeid_parse(upper, id), 0);
	assert_memory_equal(id, f->id->sign_pk, 32);
	assert_int_equal(ovl_nodeid_parse("d75a98", id), -EINVAL);
	upper[10] = 'g';
	assert_int_equal(ovl_nodeid_parse(upper, id), -EINVAL);
	assert_int_equal(ovl_nodeid_parse(NULL, id), -EINVAL);
	assert_int_equal(ovl_key_z85_decode(curve_pk_z85, key), 0);
	assert_memory_equal(key, f->id->curve_pk, 32);
	assert_int_equal(ovl_key_z85_decode("short", key), -EINVAL);
	assert_int_equal(ovl_key_z85_decode("m/*$&H^-y+t0OZ/ISr/LFYZlVkyTnmN9xTcTAhI~", key), -EINVAL);
}

/* The key file, byte for byte (PROTOCOL.md 2.1). */
static void test_save_format_and_load(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *back = NULL;
	uint8_t buf[256], want[32];
	char err[256];
	struct stat st;
	size_t n;

	assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	n = read_file(f->path, buf, sizeof(buf));
	assert_int_equal(n, OVL_ID_FILE_BYTES);
	assert_memory_equal(buf, "SHELFID\x01", 8);
	unhex(want, 32, rfc8032_seed);
	assert_memory_equal(buf + 8, want, 32);
	unhex(want, 32, curve_sk_hex);
	assert_memory_equal(buf + 40, want, 32);
	unhex(want, 32, rfc8032_pk);
	assert_memory_equal(buf + 72, want, 32);
	unhex(want, 32, curve_pk_hex);
	assert_memory_equal(buf + 104, want, 32);
	assert_int_equal(ovl_id_load(&back, f->path, err, sizeof(err)), 0);
	assert_memory_equal(back, f->id, sizeof(*back));
	ovl_id_destroy(&back);
	assert_null(back);
	ovl_id_destroy(&back); /* NULL is fine */
	ovl_id_destroy(NULL);
	/* no temporary file is left behind */
	assert_int_equal(count_entries(f->dir), 1);
}

static void test_never_overwrites(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *other = NULL;
	uint8_t before[256], after[256];
	char err[256], want[256];
	size_t n;

	assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
	n = read_file(f->path, before, sizeof(before));
	assert_int_equal(ovl_id_generate(&other), 0);
	assert_int_equal(ovl_id_save(other, f->path, err, sizeof(err)), -EEXIST);
	snprintf(want, sizeof(want), "key file '%s' already exists; refusing to overwrite it", f->path);
	assert_string_equal(err, want);
	assert_int_equal(read_file(f->path, after, sizeof(after)), n);
	assert_memory_equal(before, after, n);
	ovl_id_destroy(&other);
}

static void check_mode_refused(struct fixture *f, mode_t mode, const char *fmt)
{
	struct ovl_id *id = NULL;
	char err[256], want[256];

	assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
	assert_int_equal(chmod(f->path, mode), 0);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EPERM);
	assert_null(id);
	snprintf(want, sizeof(want), fmt, f->path);
	assert_string_equal(err, want);
	/* load_or_create refuses too, and leaves the file alone */
	assert_int_equal(ovl_id_load_or_create(&id, f->path, NULL, err, sizeof(err)), -EPERM);
	assert_string_equal(err, want);
	unlink(f->path);
}

static void test_loose_permissions(void **state)
{
	struct fixture *f = *state;

	check_mode_refused(f, 0644, "key file '%s' is readable by group or others (mode 0644); run chmod 600");
	check_mode_refused(f, 0640, "key file '%s' is readable by group or others (mode 0640); run chmod 600");
	check_mode_refused(f, 0604, "key file '%s' is readable by group or others (mode 0604); run chmod 600");
	check_mode_refused(f, 0620, "key file '%s' is accessible by group or others (mode 0620); run chmod 600");
	/* owner-only modes are fine */
	{
		struct ovl_id *id = NULL;
		char err[256];

		assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
		assert_int_equal(chmod(f->path, 0400), 0);
		assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), 0);
		ovl_id_destroy(&id);
	}
}

static void test_wrong_size(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *id = NULL;
	uint8_t buf[OVL_ID_FILE_BYTES + 1];
	char err[256], want[256];

	assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
	read_file(f->path, buf, sizeof(buf));
	unlink(f->path);
	write_file(f->path, buf, 100, 0600);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "key file '%s' has 100 bytes, expected 136", f->path);
	assert_string_equal(err, want);
	unlink(f->path);
	buf[OVL_ID_FILE_BYTES] = 0;
	write_file(f->path, buf, sizeof(buf), 0600);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "key file '%s' has 137 bytes, expected 136", f->path);
	assert_string_equal(err, want);
	unlink(f->path);
	write_file(f->path, buf, 0, 0600);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "key file '%s' has 0 bytes, expected 136", f->path);
	assert_string_equal(err, want);
	assert_null(id);
}

static void test_corrupt_content(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *id = NULL;
	uint8_t good[OVL_ID_FILE_BYTES], buf[OVL_ID_FILE_BYTES];
	char err[256], want[256];

	assert_int_equal(ovl_id_save(f->id, f->path, err, sizeof(err)), 0);
	read_file(f->path, good, sizeof(good));

	memcpy(buf, good, sizeof(buf));
	buf[0] = 'X';
	unlink(f->path);
	write_file(f->path, buf, sizeof(buf), 0600);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "key file '%s' is not a shelf identity (bad magic)", f->path);
	assert_string_equal(err, want);

	memcpy(buf, good, sizeof(buf));
	buf[7] = 2;
	unlink(f->path);
	write_file(f->path, buf, sizeof(buf), 0600);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EPROTONOSUPPORT);
	snprintf(want, sizeof(want), "key file '%s' has format version 2; this build reads version 1",
		 f->path);
	assert_string_equal(err, want);

	/* one flipped bit anywhere in the keys is noticed */
	for (size_t off = 8; off < OVL_ID_FILE_BYTES; off += 13) {
		memcpy(buf, good, sizeof(buf));
		buf[off] ^= 0x10;
		unlink(f->path);
		write_file(f->path, buf, sizeof(buf), 0600);
		assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EBADMSG);
		snprintf(want, sizeof(want),
			 "key file '%s' is corrupt: its public keys do not match its secret keys", f->path);
		assert_string_equal(err, want);
		assert_null(id);
	}
}

static void test_missing_file(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *id = NULL, *again = NULL;
	bool created = false;
	char err[256], want[256];
	struct stat st;

	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "cannot open key file '%s': No such file or directory", f->path);
	assert_string_equal(err, want);

	assert_int_equal(ovl_id_load_or_create(&id, f->path, &created, err, sizeof(err)), 0);
	assert_true(created);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, OVL_ID_FILE_BYTES);
	/* the second start loads the same identity */
	assert_int_equal(ovl_id_load_or_create(&again, f->path, &created, err, sizeof(err)), 0);
	assert_false(created);
	assert_memory_equal(id, again, sizeof(*id));
	ovl_id_destroy(&again);
	ovl_id_destroy(&id);
	unlink(f->path);
}

static void test_not_regular_and_bad_dir(void **state)
{
	struct fixture *f = *state;
	struct ovl_id *id = NULL;
	char err[256], want[256], path[160];

	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(ovl_id_load(&id, f->path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "key file '%s' is not a regular file", f->path);
	assert_string_equal(err, want);
	rmdir(f->path);

	snprintf(path, sizeof(path), "%s/no/such/dir/id.key", f->dir);
	assert_true(ovl_id_load_or_create(&id, path, NULL, err, sizeof(err)) == -ENOENT);
	assert_non_null(strstr(err, "cannot create key file"));
	assert_null(id);
}

static void test_generate_distinct(void **state)
{
	struct ovl_id *a = NULL, *b = NULL;
	uint8_t pk[32];

	assert_int_equal(ovl_id_generate(&a), 0);
	assert_int_equal(ovl_id_generate(&b), 0);
	assert_memory_not_equal(a->sign_pk, b->sign_pk, 32);
	assert_memory_not_equal(a->curve_pk, b->curve_pk, 32);
	crypto_scalarmult_base(pk, a->curve_sk);
	assert_memory_equal(pk, a->curve_pk, 32);
	ovl_id_destroy(&a);
	ovl_id_destroy(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_known_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_forms_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_format_and_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_never_overwrites, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loose_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_regular_and_bad_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_generate_distinct, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
