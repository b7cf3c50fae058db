/*
 * chains.h - a tenant's named chains (migration 0011_tenant_chains.sql): validated against the
 * model catalog, created, replaced, read, listed, deleted. Functions of the management library
 * (tg_manage) like manage.h's: blocking libpq on the caller's connection, one transaction each (a
 * savepoint inside a caller's transaction, manage_db.c), every bad field reported at once, rows
 * returned rather than printed.
 *
 * A request whose "model" names a chain resolves the tenant's chain first, then the config's
 * (gateway/src/tchains.h): a tenant chain may take a config chain's name (it then shadows it for
 * that tenant only), never a model's (models and chains share one namespace). Each change
 * NOTIFYs tollgate_tenants (the table's trigger), so every worker of every instance uses it
 * within a second.
 */
#ifndef TG_ADMIN_CHAINS_H
#define TG_ADMIN_CHAINS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "manage.h"

#define TG_CHAIN_NAME_MAX    63  /* [A-Za-z0-9._-]: it is a path segment of the admin API too */
#define TG_CHAIN_TARGETS_MAX 16  /* TG_PLAN_MAX_TARGETS */
#define TG_CHAIN_MODEL_MAX   128 /* a model name of the config (its bound) */
#define TG_CHAIN_BUDGET_MAX  86400000
#define TG_CHAINS_PER_TENANT 100 /* so that a tenant's chains are one page and one cache entry */

/** A chain as given: names are borrowed. */
typedef struct tg_chain_in {
    const char *name;
    const char *const *targets;
    size_t n_targets;
    const char *context_fallback;  /* NULL: none */
    int64_t request_first_byte_ms; /* 0: the config's top-level budget */
} tg_chain_in_t;

/** A stored chain. Timestamps unix ms. */
typedef struct tg_chain {
    int64_t tenant_id;
    char name[TG_CHAIN_NAME_MAX + 1];
    size_t n_targets;
    char targets[TG_CHAIN_TARGETS_MAX][TG_CHAIN_MODEL_MAX + 1];
    char context_fallback[TG_CHAIN_MODEL_MAX + 1]; /* "" none */
    int64_t request_first_byte_ms;                 /* 0 none */
    int64_t version;                               /* 1, then +1 on every replacement */
    int64_t created_ms, updated_ms;
} tg_chain_t;

typedef struct tg_chain_list {
    tg_chain_t *rows; /* n of them, by name; tg_chain_list_free */
    size_t n;
} tg_chain_list_t;

/** Whether `name` has a chain name's shape. Pure. */
bool tg_chain_name_ok(const char *name);
/**
 * The whole input against the catalog (NULL: shape only): name (shape, not a model's name),
 * targets (1..16, each a model of the catalog, no repeat: "targets[2]"), context_fallback (a
 * model), request_first_byte_ms (1..86400000). One field error per bad field. Pure.
 */
bool tg_chain_check(const tg_config_t *catalog, const tg_chain_in_t *in, tg_mgmt_err_t *err);

/**
 * Creates or replaces the tenant's chain `in->name` (validated first). *created says which. The
 * tenant row is locked, so the TG_CHAINS_PER_TENANT bound holds under concurrent calls (409
 * conflict past it). TG_ENOT_FOUND: no such tenant.
 */
int tg_chain_put(PGconn *db, const tg_config_t *catalog, int64_t tenant_id, const tg_chain_in_t *in,
                 tg_chain_t *out, bool *created, tg_mgmt_err_t *err);
/** Reads one chain (locked FOR UPDATE when lock, inside the caller's transaction). TG_ENOT_FOUND. */
int tg_chain_get(PGconn *db, int64_t tenant_id, const char *name, bool lock, tg_chain_t *out,
                 tg_mgmt_err_t *err);
/** Deletes one chain; *before (may be NULL) is what it was. TG_ENOT_FOUND. */
int tg_chain_delete(PGconn *db, int64_t tenant_id, const char *name, tg_chain_t *before, tg_mgmt_err_t *err);
/** Every chain of the tenant (at most TG_CHAINS_PER_TENANT), by name. TG_ENOT_FOUND: no such tenant. */
int tg_chain_list(PGconn *db, int64_t tenant_id, tg_chain_list_t *out, tg_mgmt_err_t *err);
void tg_chain_list_free(tg_chain_list_t *l);

#endif
