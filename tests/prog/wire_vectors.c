/*
 * wire_vectors: runs one data-plane handshake and an encrypted PUT with fixed
 * seeds and nonces, and prints name=hex lines (the client's curve keys, the
 * node's, the HELLO and HELLO_OK frames, the sealed PUT head and payload) for
 * tests/integration/wire_python.sh to check against docs/PROTOCOL.md
 * section 7 with an independent implementation.
 */
#include <stdio.h>
#include <string.h>
#include "overlay.h"
static int acc(void *a, const uint8_t *c, size_t l, const char *s, struct ovl_cert *o, char *e, size_t el);
static void hex(const char *n, const uint8_t *b, size_t l);
static int mk(struct ovl_id *id, uint8_t *out);
static int acc(void *a, const uint8_t *c, size_t l, const char *s, struct ovl_cert *o, char *e, size_t el)
{ (void)a; (void)s; return ovl_cert_decode(o, c, l, e, el); }
static void hex(const char *n, const uint8_t *b, size_t l) { printf("%s=", n); for (size_t i=0;i<l;i++) printf("%02x", b[i]); printf("\n"); }
static int mk(struct ovl_id *id, uint8_t *out) { struct ovl_cert c; char e[256]; ovl_cert_init(&c); ovl_cert_set_keys(&c, id); c.serial=1; c.role=OVL_ROLE_NODE; c.not_after=9; return ovl_cert_sign(&c, id->sign_sk, out, 4096, e, sizeof e); }
int main(void) {
	uint8_t s1[32], s2[32], cn[32], sn[32], cc[4096], sc[4096], hello[20000], ok[20000], head[20000], pay[200];
	struct ovl_id *cid=NULL, *sid=NULL; char e[256]; size_t okl=0;
	memset(s1,1,32); memset(s2,2,32); memset(cn,3,32); memset(sn,4,32);
	ovl_id_from_seed(&cid,s1,s1); ovl_id_from_seed(&sid,s2,s2);
	int ccl=mk(cid,cc), scl=mk(sid,sc);
	struct ovl_wire_hs_cfg a={0}, b={0}; a.id=cid;a.cert=cc;a.cert_len=ccl;a.verify=acc;a.nonce=cn;a.slice="hot";
	b.id=sid;b.cert=sc;b.cert_len=scl;b.verify=acc;b.nonce=sn;
	struct ovl_wire_hs *c=NULL,*s=NULL; ovl_wire_client_new(&c,&a,e,256); ovl_wire_server_new(&s,&b,e,256);
	int hl=ovl_wire_client_hello(c,hello,sizeof hello,e,256);
	if (ovl_wire_server_hello(s,hello,hl,ok,sizeof ok,&okl,e,256)) { puts(e); return 1; }
	if (ovl_wire_client_finish(c,ok,okl,NULL,e,256)) { puts(e); return 1; }
	struct ovl_wire_session cs; ovl_wire_hs_session(c,&cs);
	hex("csk",cid->curve_sk,32); hex("cpk",cid->curve_pk,32); hex("spk",sid->curve_pk,32);
	hex("hello",hello,hl); hex("hellook",ok,okl);
	struct ovl_wire_req r={0}; uint8_t meta[200]; r.type=0x11; strcpy(r.slice,"hot"); r.key_len=1; r.key[0]='x'; r.size=100; 
	for (int i=0;i<100;i++)
		pay[i]=i;
	r.crc=ovl_crc32c(0,pay,100);
	int ml=ovl_wire_req_encode(&r,meta,200,e,256);
	struct ovl_wire_hdr h={.type=0x11,.flags=1,.payload_len=116,.rid=5};
	int n=ovl_wire_head_seal(&cs,&h,meta,ml,head,sizeof head,e,256);
	ovl_wire_chunk_seal(&cs,head,0,pay,100);
	hex("head",head,n); hex("payload",pay,116);
	ovl_wire_session_clear(&cs);
	ovl_wire_hs_destroy(&c);
	ovl_wire_hs_destroy(&s);
	ovl_id_destroy(&cid);
	ovl_id_destroy(&sid);
	return 0;
}
