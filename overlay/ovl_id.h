/*
 * ovl_id: a node's identity and the text forms of its keys.
 *
 * An identity is two key pairs generated together on first start:
 *  - Curve25519, for ZeroMQ CURVE and libsodium crypto_kx session keys;
 *  - Ed25519, for signatures. Its public key is the node id.
 *
 * Key file (docs/PROTOCOL.md section 2.1), exactly OVL_ID_FILE_BYTES bytes,
 * mode 0600:
 *   [0,8)     magic "SHELFID" followed by the format version byte 0x01
 *   [8,40)    Ed25519 seed (crypto_sign_seed_keypair input)
 *   [40,72)   Curve25519 secret key
 *   [72,104)  Ed25519 public key  (must match the seed)
 *   [104,136) Curve25519 public key (must match the secret key)
 * The public keys are redundant on purpose: they make a corrupt file
 * detectable without a separate checksum.
 *
 * Text forms: a node id prints as 64 lower-case hex digits; its fingerprint
 * is its key id (the first 8 bytes of the unkeyed BLAKE2b-256 of the Ed25519
 * public key) as hex in four groups, "1a2b:3c4d:5e6f:7081". Curve public keys
 * print in Z85 (40 characters), the form ZeroMQ takes.
 *
 * Secret keys are wiped with sodium_memzero when an identity is destroyed.
 */
#ifndef OVL_ID_H
#define OVL_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OVL_ID_BYTES 32              /* node id = Ed25519 public key */
#define OVL_ID_SIGN_SK_BYTES 64      /* libsodium Ed25519 secret key (seed ‖ pk) */
#define OVL_ID_SEED_BYTES 32         /* Ed25519 seed, Curve25519 seed */
#define OVL_ID_CURVE_BYTES 32        /* Curve25519 public or secret key */
#define OVL_ID_SIG_BYTES 64          /* Ed25519 signature */
#define OVL_KEYID_BYTES 8            /* issuer key id: BLAKE2b-256(pk)[0..8) */
#define OVL_ID_HEX_BYTES 65          /* 64 hex digits and a NUL */
#define OVL_ID_FP_BYTES 20           /* "xxxx:xxxx:xxxx:xxxx" and a NUL */
#define OVL_ID_Z85_BYTES 41          /* 40 Z85 characters and a NUL */
#define OVL_ID_FILE_BYTES 136        /* size of a key file */
#define OVL_ID_FILE_VERSION 1        /* key file format version (byte 7) */
#define OVL_ID_FILE_MODE 0600        /* mode of a created key file */

struct ovl_id {
	uint8_t sign_pk[OVL_ID_BYTES];         /* Ed25519 public key = node id */
	uint8_t sign_sk[OVL_ID_SIGN_SK_BYTES]; /* Ed25519 secret key */
	uint8_t curve_pk[OVL_ID_CURVE_BYTES];  /* Curve25519 public key */
	uint8_t curve_sk[OVL_ID_CURVE_BYTES];  /* Curve25519 secret key */
};

/*
 * Create a fresh identity from the system's random source into *out.
 * Returns 0, -ENOMEM, or -EIO when libsodium cannot initialise. The caller
 * owns *out and frees it with ovl_id_destroy().
 */
int ovl_id_generate(struct ovl_id **out);

/*
 * Create an identity deterministically: Ed25519 from crypto_sign_seed_keypair
 * (sign_seed), Curve25519 from crypto_box_seed_keypair (curve_seed). For
 * tests and known-answer vectors. Returns 0 or -ENOMEM; the caller owns *out.
 */
int ovl_id_from_seed(struct ovl_id **out, const uint8_t sign_seed[OVL_ID_SEED_BYTES],
		     const uint8_t curve_seed[OVL_ID_SEED_BYTES]);

/*
 * Load the key file at `path` into *out (the caller owns it). Refuses, with
 * err naming the file:
 *  -ENOENT etc.     the file cannot be opened (the open(2) error);
 *  -EPERM           group or others have any access to it (mode & 077);
 *  -EINVAL          it is not a regular file;
 *  -EBADMSG         wrong size, wrong magic, or keys that do not match;
 *  -EPROTONOSUPPORT an unknown format version.
 */
int ovl_id_load(struct ovl_id **out, const char *path, char *err, size_t errlen);

/*
 * Write `id` to a new key file at `path` with mode 0600. The file appears
 * complete or not at all (written to a temporary file in the same directory,
 * fsynced, then hard-linked into place), and an existing file is never
 * replaced: -EEXIST. Other failures return the system's -errno. The
 * directory must exist.
 */
int ovl_id_save(const struct ovl_id *id, const char *path, char *err, size_t errlen);

/*
 * Load `path`, or when it does not exist generate a new identity and save it
 * there. *created (may be NULL) tells which happened. A file that exists but
 * is refused is never replaced: its error is returned.
 */
int ovl_id_load_or_create(struct ovl_id **out, const char *path, bool *created,
			  char *err, size_t errlen);

/* Wipe and free *id and set it to NULL. Accepts NULL and *id == NULL. */
void ovl_id_destroy(struct ovl_id **id);

/* Format a node id (Ed25519 public key) as 64 lower-case hex digits. */
void ovl_nodeid_format(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_HEX_BYTES]);

/* Parse 64 hex digits (either case, nothing else) into id. 0 or -EINVAL. */
int ovl_nodeid_parse(const char *s, uint8_t id[OVL_ID_BYTES]);

/* The key id of an Ed25519 public key: BLAKE2b-256(pk) truncated to 8 bytes. */
void ovl_keyid_compute(const uint8_t pk[OVL_ID_BYTES], uint8_t keyid[OVL_KEYID_BYTES]);

/* Format a key id as "xxxx:xxxx:xxxx:xxxx" (lower-case hex). */
void ovl_keyid_format(const uint8_t keyid[OVL_KEYID_BYTES], char out[OVL_ID_FP_BYTES]);

/* The fingerprint of a node id: ovl_keyid_format(ovl_keyid_compute(id)). */
void ovl_nodeid_fingerprint(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_FP_BYTES]);

/* Encode a 32-byte key in Z85 (ZeroMQ's text key form, 40 characters). */
void ovl_key_z85_encode(const uint8_t key[OVL_ID_CURVE_BYTES], char out[OVL_ID_Z85_BYTES]);

/* Decode 40 Z85 characters into a 32-byte key. 0 or -EINVAL. */
int ovl_key_z85_decode(const char *s, uint8_t key[OVL_ID_CURVE_BYTES]);

#endif
