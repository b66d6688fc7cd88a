/*
 * brk_files: the site directory (keys and certificates made by
 * `shelf-broker init`), enrolment tokens, pre-authorised ids, issued
 * clients, the configuration table, and the files object (struct brk_files)
 * that serves a running core through its io seam: the state files
 * (brk_state), tokens and pre-authorisations, and the index of issued
 * clients, each read again only when stat() says its files changed.
 */
#include "broker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

const struct ovl_conf_item brk_conf[] = {
	{ "dir", OVL_CONF_STR, "", offsetof(struct brk_config, dir), BRK_PATH_MAX, 0, 0,
	  "site directory made by `shelf-broker init`" },
	{ "state_dir", OVL_CONF_STR, "", offsetof(struct brk_config, state_dir), BRK_PATH_MAX,
	  0, 0, "soft state (slice definitions, token use); empty = <dir>/state" },
	{ "listen", OVL_CONF_STR, "tcp://[::]:7400", offsetof(struct brk_config, listen), 256,
	  0, 0, "endpoint to bind, tcp://[ADDR]:PORT" },
	{ "site", OVL_CONF_STR, "", offsetof(struct brk_config, site), 64, 0, 0,
	  "site id; empty = the site of broker.cert" },
	{ "heartbeat_ms", OVL_CONF_MS, "1s", offsetof(struct brk_config, heartbeat_ms), 0,
	  OVL_MSG_HEARTBEAT_MIN_MS, OVL_MSG_HEARTBEAT_MAX_MS, "heartbeat interval nodes use" },
	{ "down_ms", OVL_CONF_MS, "5s", offsetof(struct brk_config, down_ms), 0, 200,
	  3600000, "silence before a node is marked down" },
	{ "grace_ms", OVL_CONF_MS, "10m", offsetof(struct brk_config, grace_ms), 0, 500,
	  30LL * 24 * 3600000, "silence before a node is marked out" },
	{ "ttl_ms", OVL_CONF_MS, "24h", offsetof(struct brk_config, ttl_ms), 0, 1000,
	  365LL * 24 * 3600000, "silence before a node's registration is forgotten" },
	{ "cert_lifetime_ms", OVL_CONF_MS, "24h", offsetof(struct brk_config, cert_lifetime_ms),
	  0, 60000, 30LL * 24 * 3600000, "lifetime of node certificates" },
	{ "rate_per_s", OVL_CONF_INT, "20", offsetof(struct brk_config, rate_per_s), 0, 1,
	  100000, "messages per second allowed per key" },
	{ "rate_burst", OVL_CONF_INT, "60", offsetof(struct brk_config, rate_burst), 0, 1,
	  1000000, "burst of messages allowed per key" },
	{ "max_nodes", OVL_CONF_INT, "1000000", offsetof(struct brk_config, max_nodes), 0, 1,
	  BRK_NODES_MAX, "registry limit" },
	{ "log_level", OVL_CONF_STR, "info", offsetof(struct brk_config, log_level), 16, 0, 0,
	  "error, warn, info or debug" },
	{ "fleet_slice", OVL_CONF_STR, "system", offsetof(struct brk_config, fleet_slice),
	  OVL_MSG_NAME_SIZE, 0, 0, "slice that holds the blocks of published images" },
	{ "fleet_soak_ms", OVL_CONF_MS, "60s", offsetof(struct brk_config, fleet_soak_ms), 0, 0,
	  30LL * 24 * 3600000, "default soak of a rollout stage (shelf fleet rollout start --soak)" },
	{ "fleet_assign_valid_ms", OVL_CONF_MS, "60s",
	  offsetof(struct brk_config, fleet_assign_valid_ms), 0, 10000, 24LL * 3600000,
	  "how long a node may act on an update assignment after it was signed" },
	OVL_CONF_END
};

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
		snprintf(err, errlen, "'%s' is larger than %zu bytes", path, cap - 1);
		return -E2BIG;
	}
	fclose(f);
	*len = n;
	return 0;
}

static int sign_cert(struct ovl_cert *c, const struct ovl_id *subject, enum ovl_role role,
		     const char *site, const struct ovl_id *issuer, uint64_t lifetime_s,
		     uint8_t *out, size_t outlen, char *err, size_t errlen)
{
	uint64_t now = (uint64_t)time(NULL);

	ovl_cert_init(c);
	ovl_cert_set_keys(c, subject);
	randombytes_buf(&c->serial, sizeof(c->serial));
	c->serial >>= 1;
	c->role = role;
	snprintf(c->site, sizeof(c->site), "%s", site);
	c->not_before = now - 300;
	c->not_after = now + lifetime_s;
	return ovl_cert_sign(c, issuer->sign_sk, out, outlen, err, errlen);
}

/* A new site (ca_in NULL: a new CA, written to ca.key) or a new broker of
 * the site whose CA is ca_in (borrowed). */
static int site_make(const char *dir, const char *site, struct ovl_id *ca_in, char *out,
		     size_t outlen, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 32], z85[OVL_ID_Z85_BYTES], cahex[OVL_ID_HEX_BYTES];
	char fp_ca[OVL_ID_FP_BYTES], fp_b[OVL_ID_FP_BYTES], line[128];
	uint8_t cert[OVL_CERT_MAX_BYTES];
	struct ovl_id *ca = NULL, *broker = NULL, *admin = NULL;
	struct ovl_cert c;
	struct stat st;
	int rc, n;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	rc = ovl_slice_name_check(site, "site id", err, errlen);
	if (rc < 0)
		return rc;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create '%s': %s", dir, strerror(errno));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/broker.key", dir);
	if (stat(path, &st) == 0) {
		snprintf(err, errlen, "'%s' already holds a site (broker.key exists)", dir);
		return -EEXIST;
	}
	if ((!ca_in && (rc = ovl_id_generate(&ca)) < 0) || (rc = ovl_id_generate(&broker)) < 0 ||
	    (rc = ovl_id_generate(&admin)) < 0) {
		snprintf(err, errlen, "cannot generate keys: %s", strerror(-rc));
		goto out;
	}
	if (ca_in) {
		ca = ca_in;
	} else {
		snprintf(path, sizeof(path), "%s/ca.key", dir);
		if ((rc = ovl_id_save(ca, path, err, errlen)) < 0)
			goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.key", dir);
	if ((rc = ovl_id_save(broker, path, err, errlen)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/admin.key", dir);
	if ((rc = ovl_id_save(admin, path, err, errlen)) < 0)
		goto out;
	ovl_hex_encode(ca->sign_pk, OVL_ID_BYTES, cahex);
	snprintf(line, sizeof(line), "%s\n", cahex);
	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	if ((rc = ovl_file_write_atomic(path, line, strlen(line), 0644, err, errlen)) < 0)
		goto out;
	n = sign_cert(&c, broker, OVL_ROLE_BROKER, site, ca, BRK_BROKER_CERT_LIFETIME_S, cert,
		      sizeof(cert), err, errlen);
	if (n < 0 || (rc = 0))
		goto fail_n;
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	if ((rc = ovl_file_write_atomic(path, cert, (size_t)n, 0644, err, errlen)) < 0)
		goto out;
	n = sign_cert(&c, admin, OVL_ROLE_ADMIN, site, broker, BRK_BROKER_CERT_LIFETIME_S, cert,
		      sizeof(cert), err, errlen);
	if (n < 0)
		goto fail_n;
	snprintf(path, sizeof(path), "%s/admin.cert", dir);
	if ((rc = ovl_file_write_atomic(path, cert, (size_t)n, 0644, err, errlen)) < 0)
		goto out;
	ovl_key_z85_encode(broker->curve_pk, z85);
	snprintf(line, sizeof(line), "%s\n", z85);
	snprintf(path, sizeof(path), "%s/broker.pub", dir);
	if ((rc = ovl_file_write_atomic(path, line, strlen(line), 0644, err, errlen)) < 0)
		goto out;
	ovl_nodeid_fingerprint(ca->sign_pk, fp_ca);
	ovl_nodeid_fingerprint(broker->sign_pk, fp_b);
	snprintf(out, outlen,
		 "site:            %s\n"
		 "broker key:      %s   (CURVE server key for nodes and the CLI; also in %s/broker.pub)\n"
		 "CA public key:   %s   (fingerprint %s; also in %s/ca.pub)\n"
		 "broker id:       fingerprint %s\n"
		 "admin identity:  %s/admin.key with %s/admin.cert\n",
		 site, z85, dir, cahex, fp_ca, dir, fp_b, dir, dir);
	if (!ca_in)
		snprintf(out + strlen(out), outlen - strlen(out),
			 "IMPORTANT: %s/ca.key is the site CA's secret key. Move it offline now;\n"
			 "the broker does not need it to run.\n", dir);
	goto out;
fail_n:
	rc = n < 0 ? n : -EINVAL;
out:
	if (ca != ca_in)
		ovl_id_destroy(&ca);
	ovl_id_destroy(&broker);
	ovl_id_destroy(&admin);
	return rc;
}

int brk_site_init(const char *dir, const char *site, char *out, size_t outlen, char *err,
		  size_t errlen)
{
	return site_make(dir, site, NULL, out, outlen, err, errlen);
}

/* Copy the file src to dst (small files: certificates). */
static int copy_small(const char *src, const char *dst, char *err, size_t errlen)
{
	uint8_t buf[OVL_CERT_MAX_BYTES + 1];
	size_t len = 0;
	int rc = read_small(src, buf, sizeof(buf), &len, err, errlen);

	return rc < 0 ? rc : ovl_file_write_atomic(dst, buf, len, 0644, err, errlen);
}

int brk_site_add_broker(const char *dir, const char *from, char *out, size_t outlen, char *err,
			size_t errlen)
{
	char path[BRK_PATH_MAX + 96], dst[BRK_PATH_MAX + 96], fp_new[OVL_ID_FP_BYTES];
	char fp_from[OVL_ID_FP_BYTES], summary[1536];
	struct brk_site old, nw;
	struct ovl_id *ca = NULL;
	struct dirent *de;
	DIR *d = NULL;
	int rc;

	memset(&old, 0, sizeof(old));
	memset(&nw, 0, sizeof(nw));
	if ((rc = brk_site_load(&old, from, err, errlen)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/ca.key", from);
	if ((rc = ovl_id_load(&ca, path, err, errlen)) < 0)
		goto out;
	if (memcmp(ca->sign_pk, old.ca_pk, OVL_ID_BYTES) != 0) {
		snprintf(err, errlen, "'%s' is not the CA key of '%s/ca.pub'", path, from);
		rc = -EKEYREJECTED;
		goto out;
	}
	if ((rc = site_make(dir, old.site, ca, summary, sizeof(summary), err, errlen)) < 0)
		goto out;
	if ((rc = brk_site_load(&nw, dir, err, errlen)) < 0)
		goto out;
	/* each side gets the other's certificate; the new one also gets the peers
	 * `from` knows, so a third broker knows the first two */
	snprintf(path, sizeof(path), "%s/peers", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/peers", from);
	mkdir(path, 0700);
	ovl_nodeid_fingerprint(old.id->sign_pk, fp_from);
	ovl_nodeid_fingerprint(nw.id->sign_pk, fp_new);
	snprintf(path, sizeof(path), "%s/broker.cert", from);
	snprintf(dst, sizeof(dst), "%s/peers/%s.cert", dir, fp_from);
	if ((rc = copy_small(path, dst, err, errlen)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	snprintf(dst, sizeof(dst), "%s/peers/%s.cert", from, fp_new);
	if ((rc = copy_small(path, dst, err, errlen)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/peers", from);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".cert") != 0 ||
		    strncmp(de->d_name, fp_new, strlen(fp_new)) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/peers/%.64s", from, de->d_name);
		snprintf(dst, sizeof(dst), "%s/peers/%.64s", dir, de->d_name);
		if ((rc = copy_small(path, dst, err, errlen)) < 0)
			goto out;
	}
	snprintf(out, outlen,
		 "%sbroker %s added to site '%s' (CA from %s).\n"
		 "peers: %s/peers/%s.cert and %s/peers/%s.cert were written; every other\n"
		 "broker of the site needs %s/broker.cert copied into its peers/ directory.\n"
		 "Restart running brokers so they read peers/. Move %s/ca.key offline again.\n",
		 summary, fp_new, old.site, from, dir, fp_from, from, fp_new, dir, from);
out:
	if (d)
		closedir(d);
	ovl_id_destroy(&ca);
	brk_site_release(&old);
	brk_site_release(&nw);
	return rc;
}

/* DIR/peers/NAME.cert: broker certificates of the same site, under the CA. */
static int peers_load(struct brk_site *s, const char *dir, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 96], e2[200];
	uint8_t buf[OVL_CERT_MAX_BYTES + 1];
	uint64_t now = (uint64_t)time(NULL);
	struct dirent *de;
	struct ovl_cert pc;
	size_t len;
	DIR *d = NULL;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/peers", dir);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (rc == 0 && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		bool dup = false;

		if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".cert") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/peers/%.64s", dir, de->d_name);
		rc = read_small(path, buf, sizeof(buf), &len, e2, sizeof(e2));
		if (rc == 0)
			rc = ovl_cert_verify(&pc, buf, len, s->ca_pk, now, e2, sizeof(e2));
		if (rc == 0 && pc.role != OVL_ROLE_BROKER) {
			rc = -EPERM;
			snprintf(e2, sizeof(e2), "role is not broker");
		}
		if (rc == 0 && strcmp(pc.site, s->site) != 0) {
			rc = -EPERM;
			snprintf(e2, sizeof(e2), "site '%s' is not '%s'", pc.site, s->site);
		}
		if (rc < 0) {
			snprintf(err, errlen, "peer broker certificate '%s': %s", path, e2);
			break;
		}
		dup = memcmp(pc.sign_pk, s->id->sign_pk, OVL_ID_BYTES) == 0;
		for (unsigned i = 0; i < s->n_peers; i++)
			dup = dup || memcmp(s->peers[i], pc.sign_pk, OVL_ID_BYTES) == 0;
		if (dup)
			continue;
		if (s->n_peers == BRK_PEERS_MAX) {
			snprintf(err, errlen, "'%s/peers': more than %d peer brokers", dir,
				 BRK_PEERS_MAX);
			rc = -E2BIG;
			break;
		}
		memcpy(s->peers[s->n_peers++], pc.sign_pk, OVL_ID_BYTES);
	}
	closedir(d);
	return rc;
}

int brk_site_load(struct brk_site *s, const char *dir, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 32], e2[200];
	uint8_t buf[OVL_CERT_MAX_BYTES + 1];
	struct ovl_cert adm;
	size_t len = 0;
	uint64_t now = (uint64_t)time(NULL);
	int rc;

	memset(s, 0, sizeof(*s));
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	snprintf(path, sizeof(path), "%s/broker.key", dir);
	if ((rc = ovl_id_load(&s->id, path, err, errlen)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	if ((rc = read_small(path, buf, sizeof(buf), &len, err, errlen)) < 0)
		goto out;
	buf[len < sizeof(buf) ? len : sizeof(buf) - 1] = 0;
	if (len < 64 || ovl_hex_decode((const char *)buf, s->ca_pk, OVL_ID_BYTES) < 0) {
		snprintf(err, errlen, "'%s' does not hold 64 hex digits", path);
		rc = -EINVAL;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	if ((rc = read_small(path, s->broker_cert, sizeof(s->broker_cert), &len, err, errlen)) < 0)
		goto out;
	s->broker_cert_len = len;
	rc = ovl_cert_verify(&s->broker, s->broker_cert, len, s->ca_pk, now, e2, sizeof(e2));
	if (rc == 0 && s->broker.role != OVL_ROLE_BROKER)
		rc = -EPERM, snprintf(e2, sizeof(e2), "role is not broker");
	if (rc == 0 && memcmp(s->broker.sign_pk, s->id->sign_pk, OVL_ID_BYTES) != 0)
		rc = -EKEYREJECTED, snprintf(e2, sizeof(e2), "it is not for broker.key");
	if (rc < 0) {
		snprintf(err, errlen, "broker certificate '%s': %s", path, e2);
		goto out;
	}
	snprintf(s->site, sizeof(s->site), "%s", s->broker.site);
	snprintf(path, sizeof(path), "%s/admin.cert", dir);
	if (read_small(path, buf, sizeof(buf), &len, e2, sizeof(e2)) == 0 &&
	    ovl_cert_verify(&adm, buf, len, s->id->sign_pk, now, e2, sizeof(e2)) == 0 &&
	    adm.role == OVL_ROLE_ADMIN)
		memcpy(s->admin_keys[s->n_admins++], adm.curve_pk, OVL_ID_CURVE_BYTES);
	if ((rc = peers_load(s, dir, err, errlen)) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		brk_site_release(s);
	return rc;
}

void brk_site_release(struct brk_site *s)
{
	ovl_id_destroy(&s->id);
	sodium_memzero(s, sizeof(*s));
}

/* Append one line to path (created when missing) so that it survives a
 * crash: written in full, fsynced, and the folder fsynced for a new name. */
static int append_line(const char *path, const char *line, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
		return rc;
	}
	rc = ovl_file_write_full(fd, line, strlen(line));
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (rc == 0)
		rc = ovl_file_sync_parent(path);
	if (rc < 0)
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(-rc));
	close(fd);
	return rc;
}

int brk_token_mint(const char *dir, unsigned uses, uint64_t ttl_s, char *out, size_t outlen,
		   char *err, size_t errlen)
{
	uint8_t raw[BRK_TOKEN_BYTES], hash[32];
	char hex[2 * BRK_TOKEN_BYTES + 1], hhex[65], path[BRK_PATH_MAX + 16], line[160];

	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	if (uses == 0) {
		snprintf(err, errlen, "token uses must be at least 1");
		return -EINVAL;
	}
	randombytes_buf(raw, sizeof(raw));
	ovl_hex_encode(raw, sizeof(raw), hex);
	snprintf(out, outlen, BRK_TOKEN_PREFIX "%s", hex);
	crypto_generichash(hash, sizeof(hash), (const uint8_t *)out, strlen(out), NULL, 0);
	ovl_hex_encode(hash, sizeof(hash), hhex);
	snprintf(line, sizeof(line), "%s %u %llu\n", hhex, uses,
		 (unsigned long long)((uint64_t)time(NULL) + ttl_s));
	snprintf(path, sizeof(path), "%s/tokens", dir);
	return append_line(path, line, err, errlen);
}

int brk_preauth_add_file(const char *dir, const uint8_t node_id[OVL_ID_BYTES], char *err,
			 size_t errlen)
{
	char hex[OVL_ID_HEX_BYTES], path[BRK_PATH_MAX + 16], line[80];

	ovl_nodeid_format(node_id, hex);
	snprintf(line, sizeof(line), "%s\n", hex);
	snprintf(path, sizeof(path), "%s/preauth", dir);
	return append_line(path, line, err, errlen);
}

int brk_client_issue(const char *dir, const char *name, const char *slices, uint64_t ttl_s,
		     char *out, size_t outlen, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 96], cdir[BRK_PATH_MAX + 64], list[512], *save = NULL, *sl;
	uint8_t cert[OVL_CERT_MAX_BYTES], buf[OVL_CERT_MAX_BYTES];
	struct brk_site site;
	struct ovl_id *cl = NULL;
	struct ovl_cert c;
	size_t len;
	int rc, n;

	memset(&site, 0, sizeof(site));
	rc = ovl_slice_name_check(name, "client name", err, errlen);
	if (rc < 0)
		return rc;
	rc = brk_site_load(&site, dir, err, errlen);
	if (rc < 0)
		return rc;
	snprintf(cdir, sizeof(cdir), "%s/clients", dir);
	mkdir(cdir, 0700);
	snprintf(cdir, sizeof(cdir), "%s/clients/%s", dir, name);
	if (mkdir(cdir, 0700) < 0) {
		rc = -errno;
		snprintf(err, errlen, errno == EEXIST ? "client '%s' already exists in '%s'"
						      : "cannot create client '%s' in '%s'", name, dir);
		goto out;
	}
	if ((rc = ovl_id_generate(&cl)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/id.key", cdir);
	if ((rc = ovl_id_save(cl, path, err, errlen)) < 0)
		goto out;
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, cl);
	randombytes_buf(&c.serial, sizeof(c.serial));
	c.serial >>= 1;
	c.role = OVL_ROLE_CLIENT;
	snprintf(c.site, sizeof(c.site), "%s", site.site);
	c.not_before = (uint64_t)time(NULL) - 300;
	c.not_after = (uint64_t)time(NULL) + ttl_s;
	snprintf(list, sizeof(list), "%s", slices);
	for (sl = strtok_r(list, ",", &save); sl; sl = strtok_r(NULL, ",", &save))
		if ((rc = ovl_cert_add_slice(&c, sl, err, errlen)) < 0)
			goto out;
	n = ovl_cert_sign(&c, site.id->sign_sk, cert, sizeof(cert), err, errlen);
	if (n < 0) {
		rc = n;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/client.cert", cdir);
	if ((rc = ovl_file_write_atomic(path, cert, (size_t)n, 0644, err, errlen)) < 0)
		goto out;
	/* what the client needs to trust and reach the site */
	{
		static const char *const files[] = { "ca.pub", "broker.cert", "broker.pub" };

		for (unsigned i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
			if ((rc = read_small(path, buf, sizeof(buf), &len, err, errlen)) < 0)
				goto out;
			snprintf(path, sizeof(path), "%s/%s", cdir, files[i]);
			if ((rc = ovl_file_write_atomic(path, buf, len, 0644, err, errlen)) < 0)
				goto out;
		}
	}
	snprintf(out, outlen, "client '%s' for slices %s: %s (use --client %s or SHELF_CLIENT)",
		 name, slices, cdir, cdir);
out:
	ovl_id_destroy(&cl);
	brk_site_release(&site);
	return rc;
}

int brk_release_key_issue(const char *dir, const char *name, uint64_t ttl_s, char *out,
			  size_t outlen, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 96], kpath[BRK_PATH_MAX + 96], cpath[BRK_PATH_MAX + 96];
	char hex[OVL_ID_HEX_BYTES + 8], fp[OVL_ID_FP_BYTES], until[32];
	uint8_t cert[OVL_CERT_MAX_BYTES], pub[OVL_ID_BYTES], buf[OVL_CERT_MAX_BYTES + 1];
	struct ovl_id *ca = NULL, *rk = NULL;
	struct ovl_cert c, bc;
	struct stat st;
	struct tm tm;
	time_t t;
	size_t len = 0;
	int rc, n;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	rc = ovl_slice_name_check(name, "release key name", err, errlen);
	if (rc < 0)
		return rc;
	if (ttl_s == 0 || ttl_s > 100ull * 365 * 86400) {
		snprintf(err, errlen, "release key lifetime must be 1 s to 100 years");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	rc = ovl_id_load(&ca, path, err, errlen);
	if (rc < 0) {
		if (rc == -ENOENT)
			snprintf(err, errlen,
				 "'%s' does not exist: a release key is certified by the site CA, whose secret key must be in the site directory for this",
				 path);
		goto out;
	}
	/* ca.pub, when there, names the CA nodes trust: the key must be that one */
	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	if (read_small(path, buf, sizeof(buf), &len, err, errlen) == 0) {
		if (len < 2 * OVL_ID_BYTES || ovl_hex_decode((const char *)buf, pub, OVL_ID_BYTES) < 0 ||
		    memcmp(pub, ca->sign_pk, OVL_ID_BYTES) != 0) {
			snprintf(err, errlen, "'%s/ca.key' is not the CA key of '%s'", dir, path);
			rc = -EKEYREJECTED;
			goto out;
		}
	}
	snprintf(path, sizeof(path), "%s/release", dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create '%s': %s", path, strerror(errno));
		goto out;
	}
	snprintf(kpath, sizeof(kpath), "%s/release/%s.key", dir, name);
	snprintf(cpath, sizeof(cpath), "%s/release/%s.cert", dir, name);
	if (stat(kpath, &st) == 0 || stat(cpath, &st) == 0) {
		snprintf(err, errlen, "release key '%s' already exists in '%s/release' (nothing was replaced)",
			 name, dir);
		rc = -EEXIST;
		goto out;
	}
	if ((rc = ovl_id_generate(&rk)) < 0) {
		snprintf(err, errlen, "cannot generate a key: %s", strerror(-rc));
		goto out;
	}
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, rk);
	randombytes_buf(&c.serial, sizeof(c.serial));
	c.serial >>= 1;
	c.role = OVL_ROLE_RELEASE;
	/* the site of the broker certificate, when there is one */
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	if (read_small(path, buf, sizeof(buf), &len, err, errlen) == 0 &&
	    ovl_cert_decode(&bc, buf, len, err, errlen) == 0)
		snprintf(c.site, sizeof(c.site), "%s", bc.site);
	c.not_before = (uint64_t)time(NULL) - 300;
	c.not_after = (uint64_t)time(NULL) + ttl_s;
	n = ovl_cert_sign(&c, ca->sign_sk, cert, sizeof(cert), err, errlen);
	if (n < 0) {
		rc = n;
		goto out;
	}
	/* the key first: ovl_id_save never replaces a file, so of two runs at
	 * once only one gets past it */
	if ((rc = ovl_id_save(rk, kpath, err, errlen)) < 0)
		goto out;
	if ((rc = ovl_file_write_atomic(cpath, cert, (size_t)n, 0644, err, errlen)) < 0) {
		unlink(kpath);
		goto out;
	}
	ovl_nodeid_fingerprint(rk->sign_pk, fp);
	ovl_hex_encode(rk->sign_pk, OVL_ID_BYTES, hex);
	t = (time_t)c.not_after;
	if (!gmtime_r(&t, &tm) || strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(until, sizeof(until), "%llu", (unsigned long long)c.not_after);
	snprintf(out, outlen,
		 "release key '%s': %s with %s\n"
		 "key id %s, certificate serial %llu, valid until %s\n"
		 "Keep %s secret: it signs the images every node of the site installs.\n",
		 name, kpath, cpath, fp, (unsigned long long)c.serial, until, kpath);
	rc = 0;
out:
	ovl_id_destroy(&ca);
	ovl_id_destroy(&rk);
	return rc;
}

/* ---- the files behind a running core ------------------------------------------ */

/* What stat() says of a file: a change in any of these is a change. */
struct fsig {
	bool exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
};

/* A subdirectory of DIR/clients as last read: its certificate's fsig. */
struct client_dir {
	char name[256];
	struct fsig cert;
};

/* A client certificate of this broker, its signature checked. */
struct client {
	uint8_t key[OVL_KEY_BYTES];     /* CURVE key */
	uint64_t not_before, not_after; /* unix seconds, inclusive */
	uint32_t nslices;
	char slices[OVL_CERT_LIST_MAX][OVL_CERT_NAME_BYTES];
};

struct brk_files {
	char site_dir[BRK_PATH_MAX];    /* "": none */
	char state_dir[BRK_PATH_MAX];   /* "": none */
	uint8_t broker_pk[OVL_ID_BYTES]; /* issuer of the clients that count */
	struct fsig tokens, preauth;    /* the files as last read */
	struct fsig clients_dir;        /* DIR/clients as last read */
	struct client_dir *seen;        /* its subdirectories then */
	size_t n_seen;
	struct client *clients;         /* the index */
	size_t n_clients;
	bool clients_loaded;            /* the index was built */
	struct brk_members_log *members; /* the membership journal, open once loaded */
	struct brk_files_stats st;
};

static void fsig_get(const char *path, struct fsig *g)
{
	struct stat st;

	memset(g, 0, sizeof(*g));
	if (stat(path, &st) < 0)
		return;
	g->exists = true;
	g->dev = st.st_dev;
	g->ino = st.st_ino;
	g->size = st.st_size;
	g->mtim = st.st_mtim;
}

static bool fsig_same(const struct fsig *a, const struct fsig *b)
{
	return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec;
}

/* Does path differ from *last? Then *last becomes what it is now. A file that
 * cannot be looked at counts as unchanged (its entries are kept). */
static bool file_changed(const char *path, struct fsig *last)
{
	struct fsig now;

	fsig_get(path, &now);
	if (!now.exists || fsig_same(&now, last))
		return false;
	*last = now;
	return true;
}

/* DIR/tokens when it changed (its tokens replace the core's) and ids new in
 * DIR/preauth. How many were added. */
static int admission_reload(struct brk_files *f, brk_t *b)
{
	char path[BRK_PATH_MAX + 16], line[256];
	FILE *fp = NULL;
	int added = 0;

	if (!f->site_dir[0])
		return 0;
	snprintf(path, sizeof(path), "%s/tokens", f->site_dir);
	if (file_changed(path, &f->tokens) && (fp = fopen(path, "r"))) {
		brk_token_clear(b);
		while (fgets(line, sizeof(line), fp)) {
			char hex[65];
			unsigned uses;
			unsigned long long exp;
			uint8_t h[32];

			if (sscanf(line, "%64s %u %llu", hex, &uses, &exp) == 3 &&
			    ovl_hex_decode(hex, h, sizeof(h)) == 0 &&
			    brk_token_add(b, h, uses, exp) == 0)
				added++;
		}
		fclose(fp);
	}
	snprintf(path, sizeof(path), "%s/preauth", f->site_dir);
	if (file_changed(path, &f->preauth) && (fp = fopen(path, "r"))) {
		while (fgets(line, sizeof(line), fp)) {
			uint8_t id[OVL_ID_BYTES];

			line[strcspn(line, "\r\n")] = 0;
			if (ovl_nodeid_parse(line, id) == 0 && brk_preauth_add(b, id) > 0)
				added++;
		}
		fclose(fp);
	}
	return added;
}

static int cert_path(char *out, size_t len, const struct brk_files *f, const char *name)
{
	if (snprintf(out, len, "%s/clients/%s/client.cert", f->site_dir, name) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/* Did anything under DIR/clients change since the index was built? A stat of
 * the folder and one per client certificate. */
static bool clients_changed(struct brk_files *f)
{
	char path[BRK_PATH_MAX + 300];
	struct fsig g;

	if (!f->clients_loaded)
		return true;
	snprintf(path, sizeof(path), "%s/clients", f->site_dir);
	fsig_get(path, &g);
	if (!fsig_same(&g, &f->clients_dir))
		return true;
	for (size_t i = 0; i < f->n_seen; i++) {
		if (cert_path(path, sizeof(path), f, f->seen[i].name) < 0)
			continue;
		fsig_get(path, &g);
		if (!fsig_same(&g, &f->seen[i].cert))
			return true;
	}
	return false;
}

/* Build the index from DIR/clients/NAME/client.cert: certificates of role
 * client signed by this broker. Each signature is checked here, once; the
 * validity window is kept and checked at each look-up. 0 or -ENOMEM (the
 * index is then rebuilt at the next look-up). */
static int clients_load(struct brk_files *f)
{
	char path[BRK_PATH_MAX + 300], e[256];
	uint8_t buf[OVL_CERT_MAX_BYTES];
	struct client_dir *seen = NULL;
	struct client *clients = NULL;
	size_t n_seen = 0, n_clients = 0;
	struct dirent *de;
	struct fsig dir;
	DIR *d = NULL;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/clients", f->site_dir);
	/* looked at before reading: a change while reading shows next time */
	fsig_get(path, &dir);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		struct client_dir *cd = NULL;
		struct ovl_cert c;
		size_t len = 0;
		void *g = NULL;

		if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof(cd->name) ||
		    cert_path(path, sizeof(path), f, de->d_name) < 0)
			continue;
		g = realloc(seen, (n_seen + 1) * sizeof(*seen));
		if (!g) {
			rc = -ENOMEM;
			goto out;
		}
		seen = g;
		cd = &seen[n_seen++];
		snprintf(cd->name, sizeof(cd->name), "%s", de->d_name);
		fsig_get(path, &cd->cert);
		if (!cd->cert.exists || read_small(path, buf, sizeof(buf), &len, e, sizeof(e)) < 0)
			continue;
		f->st.client_certs_checked++;
		/* the signature now; the time at each look-up, by the core's clock */
		if (ovl_cert_decode(&c, buf, len, e, sizeof(e)) < 0 ||
		    ovl_cert_verify(&c, buf, len, f->broker_pk, c.not_before, e, sizeof(e)) < 0 ||
		    c.role != OVL_ROLE_CLIENT)
			continue;
		g = realloc(clients, (n_clients + 1) * sizeof(*clients));
		if (!g) {
			rc = -ENOMEM;
			goto out;
		}
		clients = g;
		memcpy(clients[n_clients].key, c.curve_pk, OVL_KEY_BYTES);
		clients[n_clients].not_before = c.not_before;
		clients[n_clients].not_after = c.not_after;
		clients[n_clients].nslices = c.nslices;
		memcpy(clients[n_clients].slices, c.slices, sizeof(c.slices));
		n_clients++;
	}
	free(f->seen);
	free(f->clients);
	f->seen = seen;
	f->n_seen = n_seen;
	f->clients = clients;
	f->n_clients = n_clients;
	f->clients_dir = dir;
	f->clients_loaded = true;
	f->st.client_loads++;
	seen = NULL;
	clients = NULL;
out:
	if (d)
		closedir(d);
	free(seen);
	free(clients);
	if (rc < 0)
		f->clients_loaded = false;
	return rc;
}

static int clients_find(const struct brk_files *f, const uint8_t key[OVL_KEY_BYTES],
			const char *slice, uint64_t now)
{
	int rc = -ENOENT;

	for (size_t i = 0; i < f->n_clients; i++) {
		const struct client *c = &f->clients[i];

		if (memcmp(c->key, key, OVL_KEY_BYTES) != 0 || now < c->not_before ||
		    now > c->not_after)
			continue;
		rc = -EACCES;
		for (uint32_t k = 0; k < c->nslices; k++)
			if (strcmp(c->slices[k], slice) == 0)
				return 0;
	}
	return rc;
}

int brk_files_client_slices(struct brk_files *f, const uint8_t key[OVL_KEY_BYTES],
			    const char *slice, uint64_t now)
{
	int rc;

	f->st.client_lookups++;
	if (!f->site_dir[0])
		return -ENOENT;
	if (!f->clients_loaded && clients_load(f) < 0)
		return -EIO;
	rc = clients_find(f, key, slice, now);
	/* a client issued a moment ago: look again when the files changed */
	if (rc != 0 && clients_changed(f)) {
		if (clients_load(f) < 0)
			return -EIO;
		rc = clients_find(f, key, slice, now);
	}
	return rc;
}

int brk_files_reload(struct brk_files *f, brk_t *b)
{
	int added = admission_reload(f, b);

	if (f->site_dir[0] && clients_changed(f))
		clients_load(f);
	return added;
}

void brk_files_stats_get(const struct brk_files *f, struct brk_files_stats *st)
{
	*st = f->st;
	st->clients = f->n_clients;
}

/* ---- the seam ------------------------------------------------------------------- */

static const char *revoked_dir(const struct brk_files *f)
{
	return f->site_dir[0] ? f->site_dir : f->state_dir;
}

static int io_slices_load(void *files, struct brk_slice_def **defs, size_t *n, char *err,
			  size_t errlen)
{
	return brk_state_slices_load(((struct brk_files *)files)->state_dir, defs, n, err, errlen);
}

static int io_slices_save(void *files, const struct brk_slice_def *defs, size_t n, char *err,
			  size_t errlen)
{
	return brk_state_slices_save(((struct brk_files *)files)->state_dir, defs, n, err, errlen);
}

static int io_uses_load(void *files, struct brk_token_use **uses, size_t *n, char *err,
			size_t errlen)
{
	return brk_state_uses_load(((struct brk_files *)files)->state_dir, uses, n, err, errlen);
}

static int io_uses_save(void *files, const struct brk_token_use *uses, size_t n, char *err,
			size_t errlen)
{
	return brk_state_uses_save(((struct brk_files *)files)->state_dir, uses, n, err, errlen);
}

/* Loading opens the journal (again: a core loads once, but a test may load twice). */
static int io_members_load(void *files, struct brk_membership *m, char *err, size_t errlen)
{
	struct brk_files *f = files;

	brk_members_log_close(&f->members);
	return brk_members_log_open(&f->members, f->state_dir, m, err, errlen);
}

/* The journal, opened (its content dropped) when the core saves before it loaded. */
static int members_open(struct brk_files *f, char *err, size_t errlen)
{
	struct brk_membership m;
	int rc;

	if (f->members)
		return 0;
	rc = brk_members_log_open(&f->members, f->state_dir, &m, err, errlen);
	brk_membership_release(&m);
	return rc;
}

static int io_members_append(void *files, const struct brk_change *c, size_t n, char *err,
			     size_t errlen)
{
	int rc = members_open(files, err, errlen);

	return rc < 0 ? rc : brk_members_log_append(((struct brk_files *)files)->members, c, n,
						      err, errlen);
}

static int io_members_save(void *files, const struct brk_membership *m, char *err,
			   size_t errlen)
{
	struct brk_files *f = files;
	int rc = members_open(f, err, errlen);

	/* a damaged journal is never replaced here: it is reported, and stays */
	return rc < 0 ? rc : brk_members_log_compact(f->members, m, err, errlen);
}

static int io_revoked_load(void *files, struct brk_revocations *r, char *err, size_t errlen)
{
	return brk_state_revoked_load(revoked_dir(files), r, err, errlen);
}

static int io_revoked_save(void *files, const struct brk_revocations *r, char *err,
			   size_t errlen)
{
	return brk_state_revoked_save(revoked_dir(files), r, err, errlen);
}

static void io_admission_refresh(void *files, brk_t *b)
{
	admission_reload(files, b);
}

static int io_client_slices(void *files, const uint8_t key[OVL_KEY_BYTES], const char *slice,
			    uint64_t now)
{
	return brk_files_client_slices(files, key, slice, now);
}

void brk_files_io(struct brk_files *f, struct brk_io *io)
{
	bool state = f->state_dir[0], site = f->site_dir[0];

	io->slices_load = state ? io_slices_load : NULL;
	io->slices_save = state ? io_slices_save : NULL;
	io->members_load = state ? io_members_load : NULL;
	io->members_append = state ? io_members_append : NULL;
	io->members_save = state ? io_members_save : NULL;
	io->uses_load = state ? io_uses_load : NULL;
	io->uses_save = state ? io_uses_save : NULL;
	io->revoked_load = state || site ? io_revoked_load : NULL;
	io->revoked_save = state || site ? io_revoked_save : NULL;
	io->admission_refresh = site ? io_admission_refresh : NULL;
	io->client_slices = site ? io_client_slices : NULL;
	io->files = f;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int brk_files_new(struct brk_files **out, const struct brk_site *site, const char *site_dir,
		  const char *state_dir, char *err, size_t errlen)
{
	struct brk_files *f = NULL;
	int rc = 0;

	*out = NULL;
	if (site_dir && !site) {
		snprintf(err, errlen, "a site directory needs its site");
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		const char *dir = i ? state_dir : site_dir;
		char *to = i ? f->state_dir : f->site_dir;

		if (dir && snprintf(to, BRK_PATH_MAX, "%s", dir) >= BRK_PATH_MAX) {
			snprintf(err, errlen, "directory '%s' is too long", dir);
			rc = -ENAMETOOLONG;
			goto out;
		}
	}
	if (site)
		memcpy(f->broker_pk, site->id->sign_pk, OVL_ID_BYTES);
	if (state_dir && mkdir(state_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create state directory '%s': %s", state_dir,
			 strerror(errno));
		goto out;
	}
out:
	if (rc < 0)
		brk_files_destroy(&f);
	*out = f;
	return rc;
}

void brk_files_destroy(struct brk_files **fp)
{
	struct brk_files *f = fp ? *fp : NULL;

	if (!f)
		return;
	brk_members_log_close(&f->members);
	free(f->seen);
	free(f->clients);
	free(f);
	*fp = NULL;
}
