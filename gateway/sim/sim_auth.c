/*
 * sim_auth.c - the keys tollgate-sim accepts, and how often each one was used.
 *
 * `--require-key KEY` (repeatable) and `--keys-file F` (one key per line) list the keys; a request
 * carrying none of them gets the provider's own 401. With no key listed every request passes.
 * Tests run a platform key and tenants' own keys (BYOK) side by side and prove which one a
 * request used: /_sim/stats counts requests per accepted key by its position in the list (the
 * command line's keys first, then the file's, in order), chat and model listings (health probes)
 * apart, and the requests refused. A key itself is compared, never logged nor reported.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define KEYS_MAX 64
#define KEY_MAX  4096

static char *g_keys[KEYS_MAX];
static size_t g_key_len[KEYS_MAX];
static size_t g_nkeys;
static atomic_long g_chat[KEYS_MAX], g_models[KEYS_MAX], g_refused;

int tg_sim_auth_add(const char *key, size_t len)
{
    if (g_nkeys >= KEYS_MAX || len == 0 || len > KEY_MAX)
        return -1;
    char *k = malloc(len + 1);
    if (k == NULL)
        return -1;
    memcpy(k, key, len);
    k[len] = '\0';
    g_keys[g_nkeys] = k;
    g_key_len[g_nkeys++] = len;
    return 0;
}

int tg_sim_auth_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[KEY_MAX + 2];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            n--;
        if (n > 0)
            rc = tg_sim_auth_add(line, n);
    }
    fclose(f);
    return rc;
}

bool tg_sim_auth_required(void)
{
    return g_nkeys > 0;
}

int tg_sim_auth_match(const char *p, size_t n, bool models)
{
    for (size_t i = 0; i < g_nkeys; i++)
        if (g_key_len[i] == n && memcmp(g_keys[i], p, n) == 0) {
            atomic_fetch_add(models ? &g_models[i] : &g_chat[i], 1);
            return (int)i;
        }
    atomic_fetch_add(&g_refused, 1);
    return -1;
}

void tg_sim_auth_refused(void)
{
    atomic_fetch_add(&g_refused, 1);
}

json_t *tg_sim_auth_stats_json(void)
{
    json_t *by = json_object();
    for (size_t i = 0; by != NULL && i < g_nkeys; i++) {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", i);
        json_object_set_new(by, idx,
                            json_pack("{s:I,s:I}", "chat", (json_int_t)atomic_load(&g_chat[i]), "models",
                                      (json_int_t)atomic_load(&g_models[i])));
    }
    return json_pack("{s:o,s:I}", "accepted", by != NULL ? by : json_object(), "refused",
                     (json_int_t)atomic_load(&g_refused));
}

void tg_sim_auth_stats_reset(void)
{
    for (size_t i = 0; i < KEYS_MAX; i++) {
        atomic_store(&g_chat[i], 0);
        atomic_store(&g_models[i], 0);
    }
    atomic_store(&g_refused, 0);
}
