/* channel-tls.h: the TLS 1.3 channel backend (GnuTLS) over a connected socket. */
#ifndef TERN_CHANNEL_TLS_H
#define TERN_CHANNEL_TLS_H

#include <glib.h>

#include "tern/channel.h"
#include "tern/tls-creds.h"

/* How long a handshake may take before a stalled peer is an error. */
#define CHANNEL_TLS_HANDSHAKE_TIMEOUT_MS 10000

/*
 * Both functions run the whole handshake on the calling thread (never call
 * them on the main loop), and take over (fd) when they succeed; on failure
 * it stays the caller's (the target's vetting closes it once, itself). The
 * channel's return path is the same TLS session in the other direction (one
 * thread sends, another receives); channel_shutdown() shuts the socket down,
 * which unblocks both. After the handshake, the channel writes and reads the
 * plain fd where the kernel does the record layer (kTLS), else it goes
 * through gnutls_record_send/recv.
 */

/* The source side: x509 verification of the target's certificate against
 * (hostname) when (creds) verify peers (required then), or PSK. */
struct channel *channel_tls_new_client(int fd, struct tls_creds *creds, const char *hostname,
                                       const char *name, GError **errp);
/* The target side. A peer that starts with the plaintext stream's magic is
 * refused with a message that says so. (authz): the id of an authz-simple
 * object the client certificate's DN must equal, or NULL/"" for none. */
struct channel *channel_tls_new_server(int fd, struct tls_creds *creds, const char *authz,
                                       GError **errp);

/* "TLS1.3 AES-256-GCM, kTLS off (reason)" for a TLS channel (or its return
 * path); NULL for any other channel. */
const char *channel_tls_describe(struct channel *ch);

#endif
