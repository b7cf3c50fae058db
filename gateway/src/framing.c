/*
 * framing.c - refuses HTTP/1 request heads whose body length two parsers could read differently
 * (see framing.h).
 *
 * The head is parsed again with picohttpparser's phr_parse_request, the very parser h2o used, so
 * both see the same header lines: no second reading of the bytes can disagree with h2o's. libh2o
 * exports the parser but Debian's package ships no header for it; its declaration below is the
 * one of h2o 2.2.5's deps/picohttpparser/picohttpparser.h.
 */
#include "framing.h"

#include <stdbool.h>
#include <strings.h>

#include "err.h"

struct phr_header {
    const char *name; /* NULL for a folded continuation line */
    size_t name_len;
    const char *value;
    size_t value_len;
};

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

static bool name_is(const struct phr_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

int tg_framing_check_head(const char *head, size_t len, const char **why)
{
    const char *method, *path;
    size_t method_len, path_len;
    int minor;
    struct phr_header headers[H2O_MAX_HEADERS];
    size_t n = H2O_MAX_HEADERS;
    if (phr_parse_request(head, len < H2O_MAX_REQLEN ? len : H2O_MAX_REQLEN, &method, &method_len, &path,
                          &path_len, &minor, headers, &n, 0) <= 0) {
        /* h2o parsed this head before any handler ran: not reading it the same way is a reason to
         * stop, not to guess */
        *why = "request head could not be read";
        return TG_EINVALID_REQUEST;
    }
    size_t n_cl = 0, n_te = 0;
    const struct phr_header *te = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct phr_header *h = &headers[i];
        if (h->name == NULL) {
            *why = "folded header lines (obs-fold) are not accepted";
            return TG_EINVALID_REQUEST;
        }
        if (name_is(h, "content-length", 14)) {
            n_cl++;
        } else if (name_is(h, "transfer-encoding", 17)) {
            n_te++;
            te = h;
        }
    }
    if (n_cl > 1) {
        *why = "more than one Content-Length header";
        return TG_EINVALID_REQUEST;
    }
    if (n_te == 0)
        return 0;
    if (n_cl > 0) {
        *why = "both Content-Length and Transfer-Encoding";
        return TG_EINVALID_REQUEST;
    }
    if (n_te > 1) {
        *why = "more than one Transfer-Encoding header";
        return TG_EINVALID_REQUEST;
    }
    if (te->value_len != 7 || strncasecmp(te->value, "chunked", 7) != 0) {
        *why = "Transfer-Encoding other than chunked";
        return TG_EINVALID_REQUEST;
    }
    if (minor == 0) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return TG_EINVALID_REQUEST;
    }
    return 0;
}

int tg_framing_check(h2o_req_t *req, const char **why)
{
    if (req->version >= 0x200)
        return 0;
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock == NULL || sock->input == NULL) {
        *why = "request head could not be read";
        return TG_EINVALID_REQUEST;
    }
    return tg_framing_check_head(sock->input->bytes, sock->input->size, why);
}
