/*
 * keyring.c - master keys from files into guarded memory, see keyring.h.
 */
#include "keyring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A key file is 32 raw bytes or 64 hex characters plus a little trailing whitespace. */
#define KEY_FILE_MAX 128

bool tg_keyring_id_ok(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    if (n == 0 || n > TG_KEYRING_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

static unsigned problem(tg_buf_t *errors, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static unsigned problem(tg_buf_t *errors, const char *fmt, ...)
{
    if (errors == NULL)
        return 1;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    TG_IGNORE_RESULT(tg_buf_appendf(errors, "%s\n", line)); /* a full buffer only loses lines */
    return 1;
}

/* Reads one key file into key[32]; returns the number of problems (0 = key filled). */
static unsigned read_key_file(const char *path, const char *file, uint8_t key[TG_KEYRING_KEY_LEN],
                              tg_buf_t *errors)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return problem(errors, "%s: cannot read \"%.120s\": %s", path, file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return problem(errors, "%s: \"%.120s\" is not a regular file", path, file);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return problem(errors,
                       "%s: \"%.120s\" may be read or written by group or others (mode %03o); chmod 600 it",
                       path, file, (unsigned)(st.st_mode & 0777));
    }
    unsigned char buf[KEY_FILE_MAX + 1];
    size_t len = 0;
    unsigned bad = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            bad = problem(errors, "%s: cannot read \"%.120s\": %s", path, file, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > KEY_FILE_MAX) {
            bad = problem(errors, "%s: \"%.120s\" is larger than a key file (%d bytes)", path, file,
                          KEY_FILE_MAX);
            break;
        }
    }
    close(fd);
    if (bad == 0) {
        if (len == TG_KEYRING_KEY_LEN) {
            memcpy(key, buf, TG_KEYRING_KEY_LEN); /* raw bytes */
        } else {
            size_t hl = len;
            while (hl > 0 &&
                   (buf[hl - 1] == '\n' || buf[hl - 1] == '\r' || buf[hl - 1] == ' ' || buf[hl - 1] == '\t'))
                hl--;
            size_t out_len = 0;
            if (hl != 2 * TG_KEYRING_KEY_LEN ||
                sodium_hex2bin(key, TG_KEYRING_KEY_LEN, (const char *)buf, hl, NULL, &out_len, NULL) != 0 ||
                out_len != TG_KEYRING_KEY_LEN)
                bad =
                    problem(errors, "%s: \"%.120s\" must hold 32 raw bytes or 64 hex characters", path, file);
        }
    }
    sodium_memzero(buf, sizeof(buf));
    if (bad != 0)
        sodium_memzero(key, TG_KEYRING_KEY_LEN);
    return bad;
}

static tg_keyring_t *keyring_new(size_t n)
{
    tg_keyring_t *kr = calloc(1, sizeof(*kr));
    if (kr == NULL)
        return NULL;
    kr->region = sodium_malloc(n * TG_KEYRING_KEY_LEN);
    if (kr->region == NULL) {
        free(kr);
        return NULL;
    }
    kr->n = n;
    for (size_t i = 0; i < n; i++)
        kr->keys[i].key = kr->region + i * TG_KEYRING_KEY_LEN;
    return kr;
}

unsigned tg_keyring_load(const json_t *list, const char *path, tg_keyring_t **out, tg_buf_t *errors)
{
    *out = NULL;
    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return problem(errors, "%s: must be a list of {\"id\", \"file\"}", path);
    size_t n = json_array_size(list);
    if (n == 0)
        return 0;
    if (n > TG_KEYRING_MAX)
        return problem(errors, "%s: at most %d master keys", path, TG_KEYRING_MAX);
    tg_keyring_t *kr = keyring_new(n);
    if (kr == NULL)
        return problem(errors, "%s: out of memory", path);
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        const json_t *e = json_array_get(list, i);
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *file = json_string_value(json_object_get(e, "file"));
        if (!json_is_object(e) || json_object_size(e) != 2 || id == NULL || file == NULL) {
            bad += problem(errors, "%s: must be {\"id\": \"...\", \"file\": \"path\"} and nothing else", p);
            continue;
        }
        if (!tg_keyring_id_ok(id)) {
            bad += problem(errors, "%s.id: 1 to 64 characters of A-Z a-z 0-9 _ . -", p);
            continue;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(kr->keys[k].id, id) == 0)
                bad += problem(errors, "%s.id: \"%s\" is already used by %s[%zu]", p, id, path, k);
        memcpy(kr->keys[i].id, id, strlen(id) + 1);
        char fp[180];
        snprintf(fp, sizeof(fp), "%s.file", p);
        bad += read_key_file(fp, file, kr->region + i * TG_KEYRING_KEY_LEN, errors);
    }
    if (bad != 0) {
        tg_keyring_free(kr);
        return bad;
    }
    sodium_mprotect_readonly(kr->region);
    *out = kr;
    return 0;
}

tg_keyring_t *tg_keyring_from_bytes(const char *const *ids, const uint8_t *keys, size_t n)
{
    if (n == 0 || n > TG_KEYRING_MAX)
        return NULL;
    tg_keyring_t *kr = keyring_new(n);
    if (kr == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!tg_keyring_id_ok(ids[i])) {
            tg_keyring_free(kr);
            return NULL;
        }
        memcpy(kr->keys[i].id, ids[i], strlen(ids[i]) + 1);
        memcpy(kr->region + i * TG_KEYRING_KEY_LEN, keys + i * TG_KEYRING_KEY_LEN, TG_KEYRING_KEY_LEN);
    }
    sodium_mprotect_readonly(kr->region);
    return kr;
}

void tg_keyring_free(tg_keyring_t *kr)
{
    if (kr == NULL)
        return;
    sodium_free(kr->region); /* wipes; allowed on a read-only region */
    sodium_memzero(kr, sizeof(*kr));
    free(kr);
}

const tg_master_key_t *tg_keyring_find(const tg_keyring_t *kr, const char *id)
{
    if (kr == NULL || id == NULL)
        return NULL;
    for (size_t i = 0; i < kr->n; i++)
        if (strcmp(kr->keys[i].id, id) == 0)
            return &kr->keys[i];
    return NULL;
}

const tg_master_key_t *tg_keyring_active(const tg_keyring_t *kr)
{
    return kr != NULL && kr->n > 0 ? &kr->keys[0] : NULL;
}
