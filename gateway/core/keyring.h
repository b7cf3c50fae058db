/*
 * keyring.h - the master keys that seal tenants' own provider keys (BYOK), loaded from files.
 *
 * Config: `secrets.master_keys`, a list of {"id": "...", "file": "path"}. Each file holds one
 * 32-byte key, as the raw 32 bytes or as 64 hex characters (trailing whitespace allowed). A key is
 * read from a file only, never from the command line or the environment (a child process would
 * inherit it), and a file that its group or others may read or write is refused, as ssh refuses a
 * private key. The first entry seals; every entry opens, so during a rotation the old and the new
 * id both open (gateway/src/byok.h, docs/CONVENTIONS.md "BYOK").
 *
 * The keys live in one sodium_malloc'd region (guard pages, locked in memory when the system
 * allows), read-only once loaded and wiped when freed. The keyring hangs off a config snapshot
 * (config.h) and shares its life: a reload that adds or removes a key builds a new one.
 *
 * Thread: a loaded keyring is immutable; any thread may read it.
 */
#ifndef TG_KEYRING_H
#define TG_KEYRING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define TG_KEYRING_MAX     16 /* master keys at once (a rotation needs two) */
#define TG_KEYRING_ID_MAX  64 /* as migrations/0003 allows for provider_credentials.master_key_id */
#define TG_KEYRING_KEY_LEN 32

typedef struct tg_master_key {
    char id[TG_KEYRING_ID_MAX + 1];
    const uint8_t *key; /* TG_KEYRING_KEY_LEN bytes inside the keyring's guarded region */
} tg_master_key_t;

typedef struct tg_keyring {
    size_t n;
    tg_master_key_t keys[TG_KEYRING_MAX]; /* keys[0] seals */
    uint8_t *region;                      /* sodium_malloc'd, read-only after load */
} tg_keyring_t;

/**
 * Loads `list` (the JSON value of secrets.master_keys; NULL = absent) into a new keyring.
 * Returns the number of problems found, each appended to `errors` as one line naming `path` and
 * never a key's bytes; *out is set only when there were none (NULL for an absent or empty list).
 */
unsigned tg_keyring_load(const json_t *list, const char *path, tg_keyring_t **out, tg_buf_t *errors);
/** Builds a keyring from keys in memory (tests, tools): ids[i] with 32 bytes at keys + 32 * i. */
tg_keyring_t *tg_keyring_from_bytes(const char *const *ids, const uint8_t *keys, size_t n);
/** Wipes and frees. NULL-safe. */
void tg_keyring_free(tg_keyring_t *kr);

/** The key with this id, or NULL. */
const tg_master_key_t *tg_keyring_find(const tg_keyring_t *kr, const char *id);
/** The sealing key (the first entry), or NULL for an empty keyring. */
const tg_master_key_t *tg_keyring_active(const tg_keyring_t *kr);
/** Whether id is a well-formed master key id ([A-Za-z0-9_.-], 1 to 64 characters). */
bool tg_keyring_id_ok(const char *id);

#endif
