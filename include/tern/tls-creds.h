/* tls-creds.h: the -object registry: TLS credentials (tls-creds-x509, tls-creds-psk) and
 * authorization (authz-simple) objects, parsed and loaded at start-up, looked up by id. */
#ifndef TERN_TLS_CREDS_H
#define TERN_TLS_CREDS_H

#include <glib.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tls_creds_type { TLS_CREDS_X509, TLS_CREDS_PSK };
enum tls_endpoint { TLS_ENDPOINT_CLIENT, TLS_ENDPOINT_SERVER };

struct tls_creds;

/* Parse one -object option string ("TYPE,id=ID,prop=value,..."; QEMU's
 * spelling, "qom-type=TYPE" also accepted), load and check its files, and
 * register it under its id. Types: tls-creds-x509 (dir, endpoint,
 * verify-peer), tls-creds-psk (dir, endpoint, username), authz-simple
 * (identity). False with (errp) naming the object, the property or the file. */
bool tls_object_add(const char *optstr, GError **errp);
/* Forget every object (tests, teardown). */
void tls_objects_clear(void);

/* The credentials object (id), or NULL. */
struct tls_creds *tls_creds_find(const char *id);
/* The credentials (id) for this side of a migration ((want)), or NULL with an
 * error saying what is missing or which endpoint the object is for. */
struct tls_creds *tls_creds_lookup(const char *id, enum tls_endpoint want, GError **errp);
/* The identity of authz-simple object (id), or NULL if there is no such object. */
const char *tls_authz_identity(const char *id);
/* Whether (id) names any registered object (of any type). */
bool tls_object_exists(const char *id);

const char *tls_creds_id(const struct tls_creds *c);
enum tls_creds_type tls_creds_type(const struct tls_creds *c);
enum tls_endpoint tls_creds_endpoint(const struct tls_creds *c);
bool tls_creds_verify_peer(const struct tls_creds *c);
const char *tls_endpoint_name(enum tls_endpoint e);

/* Put (c)'s credentials and TLS 1.3-only priorities on (session) (whose
 * endpoint matches (c)'s). False with (errp) on a GnuTLS failure. */
bool tls_creds_apply(struct tls_creds *c, gnutls_session_t session, GError **errp);

/* ---- keys.psk (exposed for tests) ---- */

struct tls_psk_key {
    char *name;
    uint8_t *key;
    size_t len;
};

/* Parse (text) in QEMU's keys.psk format: "name:hexkey" per line; empty
 * lines are skipped. (where) names the file in errors ("FILE:LINE: ...").
 * Returns an array of struct tls_psk_key (free with tls_psk_keys_free). */
GArray *tls_psk_parse(const char *text, const char *where, GError **errp);
void tls_psk_keys_free(GArray *keys);

#endif
