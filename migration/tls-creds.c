/* tls-creds.c: -object tls-creds-x509 / tls-creds-psk / authz-simple: option parsing,
 * loading the files at start-up (QEMU's directory layout), and lookup by id. */
#include "tern/tls-creds.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "tern/util.h"

/* AES-128-GCM first: with AES-NI it encrypts a migration's gigabytes faster
 * than AES-256-GCM (GnuTLS's default first choice), at a strength no one
 * attacks; the others stay for peers that want them. */
#define TLS_CIPHERS "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
/* TLS 1.3 only; PSK adds its key exchanges, with (EC)DHE for forward secrecy (as QEMU). */
#define TLS_PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:" TLS_CIPHERS
#define TLS_PRIORITY_PSK "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:" TLS_CIPHERS
#define TLS_PSK_DEFAULT_USER "qemu" /* QEMU's default username */

enum tls_object_kind { TLS_OBJ_CREDS, TLS_OBJ_AUTHZ };

struct tls_creds {
    enum tls_object_kind kind; /* first: objects are told apart by it */
    char *id;
    enum tls_creds_type type;
    enum tls_endpoint endpoint;
    bool verify_peer;
    char *dir;
    char *username;   /* PSK client */
    GArray *psk_keys; /* PSK: struct tls_psk_key; a client keeps only its own */
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
};

struct tls_authz {
    enum tls_object_kind kind;
    char *id;
    char *identity;
};

static GPtrArray *tls_objects; /* struct tls_creds or struct tls_authz, by their kind */

static const char *object_id(gconstpointer obj)
{
    const enum tls_object_kind *kind = obj;

    return *kind == TLS_OBJ_CREDS ? ((const struct tls_creds *)obj)->id
                                  : ((const struct tls_authz *)obj)->id;
}

static gpointer object_find(const char *id)
{
    for (guint i = 0; id && tls_objects && i < tls_objects->len; i++)
        if (!strcmp(object_id(g_ptr_array_index(tls_objects, i)), id))
            return g_ptr_array_index(tls_objects, i);
    return NULL;
}

static void creds_free(struct tls_creds *c)
{
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk_server)
        gnutls_psk_free_server_credentials(c->psk_server);
    if (c->psk_client)
        gnutls_psk_free_client_credentials(c->psk_client);
    tls_psk_keys_free(c->psk_keys);
    g_free(c->id);
    g_free(c->dir);
    g_free(c->username);
    g_free(c);
}

static void object_free(gpointer obj)
{
    enum tls_object_kind *kind = obj;

    if (*kind == TLS_OBJ_CREDS) {
        creds_free(obj);
    } else {
        struct tls_authz *a = obj;
        g_free(a->id);
        g_free(a->identity);
        g_free(a);
    }
}

void tls_objects_clear(void)
{
    g_clear_pointer(&tls_objects, g_ptr_array_unref);
}

/* ---- keys.psk ---- */

static void psk_key_clear(gpointer p)
{
    struct tls_psk_key *k = p;

    if (k->key)
        memset(k->key, 0, k->len);
    g_free(k->key);
    g_free(k->name);
}

void tls_psk_keys_free(GArray *keys)
{
    if (keys)
        g_array_unref(keys);
}

GArray *tls_psk_parse(const char *text, const char *where, GError **errp)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    GArray *keys = g_array_new(FALSE, TRUE, sizeof(struct tls_psk_key));

    g_array_set_clear_func(keys, psk_key_clear);
    for (guint i = 0; lines[i]; i++) {
        char *line = g_strstrip(lines[i]);
        const char *colon = strchr(line, ':');
        struct tls_psk_key k = { 0 };

        if (!*line)
            continue;
        if (!colon || colon == line) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s:%u: expected NAME:HEXKEY", where,
                        i + 1);
            goto fail;
        }
        const char *hex = colon + 1;
        size_t n = strlen(hex);
        if (n == 0 || n % 2 || strspn(hex, "0123456789abcdefABCDEF") != n) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "%s:%u: the key of '%.*s' is not an even number of hex digits", where,
                        i + 1, (int)(colon - line), line);
            goto fail;
        }
        k.name = g_strndup(line, (gsize)(colon - line));
        k.len = n / 2;
        k.key = g_malloc(k.len);
        for (size_t j = 0; j < k.len; j++)
            k.key[j] = (uint8_t)(g_ascii_xdigit_value(hex[2 * j]) << 4 |
                                 g_ascii_xdigit_value(hex[2 * j + 1]));
        g_array_append_val(keys, k);
    }
    if (keys->len == 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: no keys", where);
        goto fail;
    }
    return keys;
fail:
    g_array_unref(keys);
    return NULL;
}

static const struct tls_psk_key *psk_find(GArray *keys, const char *name)
{
    for (guint i = 0; keys && i < keys->len; i++) {
        const struct tls_psk_key *k = &g_array_index(keys, struct tls_psk_key, i);
        if (!strcmp(k->name, name))
            return k;
    }
    return NULL;
}

/* The server's key lookup: any identity of keys.psk (GnuTLS frees (key)). */
static int psk_server_key(gnutls_session_t session, const char *username, gnutls_datum_t *key)
{
    struct tls_creds *c = gnutls_session_get_ptr(session);
    const struct tls_psk_key *k = c ? psk_find(c->psk_keys, username) : NULL;

    if (!k)
        return -1;
    key->data = gnutls_malloc(k->len);
    if (!key->data)
        return -1;
    memcpy(key->data, k->key, k->len);
    key->size = (unsigned)k->len;
    return 0;
}

/* ---- loading ---- */

static bool gnutls_failed(int rc, GError **errp, const char *what, const char *path)
{
    if (rc >= 0)
        return false;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s %s: %s", what, path, gnutls_strerror(rc));
    return true;
}

/* (dir)/(name) if the file exists; else NULL, an error if (required). */
static char *creds_file(struct tls_creds *c, const char *name, bool required, GError **errp)
{
    char *path = g_build_filename(c->dir, name, NULL);

    if (access(path, R_OK) == 0)
        return path;
    if (required)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "tls-creds-x509 '%s': cannot read %s: %s",
                    c->id, path, g_strerror(errno));
    g_free(path);
    return NULL;
}

static bool load_x509(struct tls_creds *c, GError **errp)
{
    bool server = c->endpoint == TLS_ENDPOINT_SERVER;
    g_autofree char *ca = creds_file(c, "ca-cert.pem", true, errp);
    if (!ca)
        return false;
    /* The client's certificate is needed only if the server verifies peers. */
    g_autofree char *cert = creds_file(c, server ? "server-cert.pem" : "client-cert.pem", server,
                                       errp);
    if (server && !cert)
        return false;
    g_autofree char *key = creds_file(c, server ? "server-key.pem" : "client-key.pem",
                                      server || cert, errp);
    if (cert && !key)
        return false;

    int rc = gnutls_certificate_allocate_credentials(&c->x509);
    if (gnutls_failed(rc, errp, "tls-creds-x509: allocating credentials for", c->id))
        return false;
    rc = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
    if (gnutls_failed(rc, errp, "tls-creds-x509: CA certificate", ca))
        return false;
    if (rc == 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "tls-creds-x509: CA certificate %s: no PEM certificate in it", ca);
        return false;
    }
    g_autofree char *crl = creds_file(c, "ca-crl.pem", false, NULL);
    if (crl) {
        rc = gnutls_certificate_set_x509_crl_file(c->x509, crl, GNUTLS_X509_FMT_PEM);
        if (gnutls_failed(rc, errp, "tls-creds-x509: CRL", crl))
            return false;
    }
    if (cert) {
        rc = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "tls-creds-x509: certificate %s with key %s: %s", cert, key,
                        gnutls_strerror(rc));
            return false;
        }
    }
    return true;
}

static bool load_psk(struct tls_creds *c, GError **errp)
{
    g_autofree char *path = g_build_filename(c->dir, "keys.psk", NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &text, NULL, &err)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "tls-creds-psk '%s': %s", c->id,
                    err->message);
        return false;
    }
    c->psk_keys = tls_psk_parse(text, path, errp);
    memset(text, 0, strlen(text));
    if (!c->psk_keys)
        return false;
    if (c->endpoint == TLS_ENDPOINT_SERVER) {
        int rc = gnutls_psk_allocate_server_credentials(&c->psk_server);
        if (gnutls_failed(rc, errp, "tls-creds-psk: allocating credentials for", c->id))
            return false;
        gnutls_psk_set_server_credentials_function(c->psk_server, psk_server_key);
        return true;
    }
    const struct tls_psk_key *k = psk_find(c->psk_keys, c->username);
    if (!k) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "tls-creds-psk '%s': no key for username '%s' in %s", c->id, c->username, path);
        return false;
    }
    gnutls_datum_t datum = { .data = k->key, .size = (unsigned)k->len };
    int rc = gnutls_psk_allocate_client_credentials(&c->psk_client);
    if (gnutls_failed(rc, errp, "tls-creds-psk: allocating credentials for", c->id))
        return false;
    rc = gnutls_psk_set_client_credentials(c->psk_client, c->username, &datum, GNUTLS_PSK_KEY_RAW);
    return !gnutls_failed(rc, errp, "tls-creds-psk: key of", c->username);
}

/* ---- -object parsing ---- */

static bool parse_on_off(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = false;
        return true;
    }
    return false;
}

/* Apply property (name)=(value) of a creds object; false if unknown or bad. */
static bool creds_prop(struct tls_creds *c, const char *type, const char *name, const char *value,
                       GError **errp)
{
    if (!strcmp(name, "dir")) {
        g_free(c->dir);
        c->dir = g_strdup(value);
    } else if (!strcmp(name, "endpoint")) {
        if (!strcmp(value, "client")) {
            c->endpoint = TLS_ENDPOINT_CLIENT;
        } else if (!strcmp(value, "server")) {
            c->endpoint = TLS_ENDPOINT_SERVER;
        } else {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "%s: endpoint must be client or server, not '%s'", type, value);
            return false;
        }
    } else if (!strcmp(name, "verify-peer") && c->type == TLS_CREDS_X509) {
        if (!parse_on_off(value, &c->verify_peer)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "%s: verify-peer must be on or off, not '%s'", type, value);
            return false;
        }
    } else if (!strcmp(name, "username") && c->type == TLS_CREDS_PSK) {
        g_free(c->username);
        c->username = g_strdup(value);
    } else {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: unknown property '%s'", type, name);
        return false;
    }
    return true;
}

static gpointer creds_new(const char *type, char **props, GError **errp)
{
    struct tls_creds *c = g_new0(struct tls_creds, 1);

    c->kind = TLS_OBJ_CREDS;
    c->type = !strcmp(type, "tls-creds-psk") ? TLS_CREDS_PSK : TLS_CREDS_X509;
    c->verify_peer = true; /* QEMU's default */
    for (guint i = 0; props[i]; i++) {
        const char *eq = strchr(props[i], '=');
        g_autofree char *name = g_strndup(props[i], (gsize)(eq - props[i]));
        if (!strcmp(name, "id")) {
            g_free(c->id);
            c->id = g_strdup(eq + 1);
        } else if (!creds_prop(c, type, name, eq + 1, errp)) {
            creds_free(c);
            return NULL;
        }
    }
    if (!c->dir) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s '%s': dir is required", type, c->id);
        creds_free(c);
        return NULL;
    }
    if (c->type == TLS_CREDS_PSK && c->endpoint == TLS_ENDPOINT_SERVER && c->username) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "tls-creds-psk '%s': username is for endpoint=client", c->id);
        creds_free(c);
        return NULL;
    }
    if (c->type == TLS_CREDS_PSK && !c->username)
        c->username = g_strdup(TLS_PSK_DEFAULT_USER);
    if (!(c->type == TLS_CREDS_PSK ? load_psk(c, errp) : load_x509(c, errp))) {
        creds_free(c);
        return NULL;
    }
    return c;
}

static gpointer authz_new(char **props, GError **errp)
{
    struct tls_authz *a = g_new0(struct tls_authz, 1);

    a->kind = TLS_OBJ_AUTHZ;
    for (guint i = 0; props[i]; i++) {
        const char *eq = strchr(props[i], '=');
        g_autofree char *name = g_strndup(props[i], (gsize)(eq - props[i]));
        char **field = !strcmp(name, "id")         ? &a->id
                       : !strcmp(name, "identity") ? &a->identity
                                                   : NULL;
        if (!field) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "authz-simple: unknown property '%s'",
                        name);
            object_free(a);
            return NULL;
        }
        g_free(*field);
        *field = g_strdup(eq + 1);
    }
    if (!a->identity) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "authz-simple '%s': identity is required",
                    a->id);
        object_free(a);
        return NULL;
    }
    return a;
}

/* Split "a=1,b=2" at commas; ",," is a literal comma (QEMU's escaping). */
static char **split_props(const char *s)
{
    GPtrArray *out = g_ptr_array_new();
    GString *cur = g_string_new(NULL);

    for (const char *p = s;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || !*p) {
            g_ptr_array_add(out, g_string_free(cur, FALSE));
            if (!*p)
                break;
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
}

bool tls_object_add(const char *optstr, GError **errp)
{
    g_auto(GStrv) parts = split_props(optstr);
    g_autofree char *type = NULL;
    GPtrArray *props = g_ptr_array_new();
    const char *id = NULL;
    gpointer obj = NULL;

    for (guint i = 0; parts[i]; i++) {
        const char *eq = strchr(parts[i], '=');
        if (i == 0 && !eq) {
            type = g_strdup(parts[i]);
        } else if (!eq || eq == parts[i]) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "-object %s: expected PROPERTY=VALUE, not '%s'", optstr, parts[i]);
            goto out;
        } else if (g_str_has_prefix(parts[i], "qom-type=")) {
            g_free(type);
            type = g_strdup(eq + 1);
        } else {
            if (g_str_has_prefix(parts[i], "id="))
                id = eq + 1;
            g_ptr_array_add(props, parts[i]);
        }
    }
    g_ptr_array_add(props, NULL);
    if (!type || !*type) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "-object %s: no object type", optstr);
        goto out;
    }
    if (!id || !*id) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "-object %s: id=ID is required", type);
        goto out;
    }
    if (object_find(id)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "-object %s: an object with id '%s' already exists", type, id);
        goto out;
    }
    if (!strcmp(type, "tls-creds-x509") || !strcmp(type, "tls-creds-psk")) {
        obj = creds_new(type, (char **)props->pdata, errp);
    } else if (!strcmp(type, "authz-simple")) {
        obj = authz_new((char **)props->pdata, errp);
    } else {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "-object: unknown object type '%s' (tern has tls-creds-x509, tls-creds-psk, "
                    "authz-simple)",
                    type);
    }
    if (obj) {
        if (!tls_objects)
            tls_objects = g_ptr_array_new_with_free_func(object_free);
        g_ptr_array_add(tls_objects, obj);
    }
out:
    g_ptr_array_free(props, TRUE);
    return obj != NULL;
}

/* ---- lookup ---- */

struct tls_creds *tls_creds_find(const char *id)
{
    enum tls_object_kind *kind = object_find(id);

    return kind && *kind == TLS_OBJ_CREDS ? (struct tls_creds *)kind : NULL;
}

bool tls_object_exists(const char *id)
{
    return object_find(id) != NULL;
}

const char *tls_authz_identity(const char *id)
{
    enum tls_object_kind *kind = object_find(id);

    return kind && *kind == TLS_OBJ_AUTHZ ? ((struct tls_authz *)kind)->identity : NULL;
}

const char *tls_endpoint_name(enum tls_endpoint e)
{
    return e == TLS_ENDPOINT_SERVER ? "server" : "client";
}

struct tls_creds *tls_creds_lookup(const char *id, enum tls_endpoint want, GError **errp)
{
    struct tls_creds *c = tls_creds_find(id);

    if (!c) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    tls_object_exists(id) ? "object '%s' is not a tls-creds object"
                                          : "no tls-creds object with id '%s' (add it with "
                                            "-object tls-creds-x509,id=...)",
                    id);
        return NULL;
    }
    if (c->endpoint != want) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "tls-creds '%s' has endpoint=%s, but this side of the migration is the %s "
                    "(the %s needs endpoint=%s)",
                    id, tls_endpoint_name(c->endpoint),
                    want == TLS_ENDPOINT_SERVER ? "target" : "source",
                    want == TLS_ENDPOINT_SERVER ? "target" : "source", tls_endpoint_name(want));
        return NULL;
    }
    return c;
}

const char *tls_creds_id(const struct tls_creds *c)
{
    return c->id;
}

enum tls_creds_type tls_creds_type(const struct tls_creds *c)
{
    return c->type;
}

enum tls_endpoint tls_creds_endpoint(const struct tls_creds *c)
{
    return c->endpoint;
}

bool tls_creds_verify_peer(const struct tls_creds *c)
{
    return c->type == TLS_CREDS_X509 && c->verify_peer;
}

bool tls_creds_apply(struct tls_creds *c, gnutls_session_t session, GError **errp)
{
    const char *err_pos = NULL;
    int rc = gnutls_priority_set_direct(session,
                                        c->type == TLS_CREDS_PSK ? TLS_PRIORITY_PSK
                                                                 : TLS_PRIORITY_X509,
                                        &err_pos);

    if (rc < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS priority: %s", gnutls_strerror(rc));
        return false;
    }
    if (c->type == TLS_CREDS_X509) {
        rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, c->x509);
        if (rc >= 0 && c->endpoint == TLS_ENDPOINT_SERVER)
            gnutls_certificate_server_set_request(session, c->verify_peer ? GNUTLS_CERT_REQUIRE
                                                                          : GNUTLS_CERT_IGNORE);
    } else if (c->endpoint == TLS_ENDPOINT_SERVER) {
        gnutls_session_set_ptr(session, c);
        rc = gnutls_credentials_set(session, GNUTLS_CRD_PSK, c->psk_server);
    } else {
        rc = gnutls_credentials_set(session, GNUTLS_CRD_PSK, c->psk_client);
    }
    if (rc < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS credentials: %s",
                    gnutls_strerror(rc));
        return false;
    }
    return true;
}
