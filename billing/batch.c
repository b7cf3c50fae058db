/*
 * batch.c - a batch of fresh usage records made ready for tollgate_settle_direct (batch.h).
 *
 * The sums are taken from the very rows the writer then sends, so an entry's amount is the sum of
 * the charges of the records that carry its key; tollgate_ledger_check compares the two again.
 */
#include "batch.h"
#include "row.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F_TENANT TG_ROW_TENANT
#define F_AT     TG_ROW_CREATED_AT
#define F_CHARGE TG_ROW_CHARGE
#define F_LEASE  TG_ROW_LEASE
#define F_ALL    TG_ROW_FIELDS

/* Where each field of a stage row starts: one pass, every field ending at a tab but the last,
 * which ends the line (a COPY text field never holds a raw tab or newline). at[F_ALL] is one past
 * the newline. false: not a stage row. */
typedef struct fields {
    const char *at[F_ALL + 1];
} fields_t;

static bool split(const char *row, fields_t *f)
{
    const char *p = row;
    int i = 0;
    f->at[0] = p;
    for (;; p++) { /* a byte loop: a call per field (strcspn) costs more than a ~250-byte row */
        char ch = *p;
        if (ch == '\t') {
            if (++i == F_ALL)
                return false;
            f->at[i] = p + 1;
        } else if (ch == '\n' || ch == '\0') {
            break;
        }
    }
    if (*p != '\n' || i != F_ALL - 1 || p[1] != '\0')
        return false;
    f->at[F_ALL] = p + 1;
    return true;
}

static size_t field_len(const fields_t *f, int idx)
{
    return (size_t)(f->at[idx + 1] - f->at[idx]) - 1;
}

/* A field as a non-negative integer; \N is 0 with *null set. */
static bool field_i64(const fields_t *f, int idx, int64_t *v, bool *null)
{
    const char *s = f->at[idx];
    size_t n = field_len(f, idx);
    if (n == 0 || n > 18)
        return false;
    *null = n == 2 && s[0] == '\\' && s[1] == 'N';
    *v = 0;
    if (*null)
        return true;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

/* A time field: the characters of the gateway's UTC form only (so that it needs no escaping as an
 * array element), and not too long. */
static bool at_ok(const char *at, size_t n)
{
    if (n == 0 || n >= TG_BATCH_AT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strchr("0123456789-:.TZ+ ", at[i]) == NULL || at[i] == '\0')
            return false;
    return true;
}

static int at_cmp(const char *a, size_t n, const char *b)
{
    size_t m = strlen(b);
    int r = memcmp(a, b, n < m ? n : m);
    return r != 0 ? r : n < m ? -1 : n > m ? 1 : 0;
}

int tg_batch_copy_row(tg_buf_t *out, const char *row, const char *batch)
{
    int64_t amount, lease;
    bool anull, lnull;
    fields_t f;
    if (!split(row, &f) || !field_i64(&f, F_CHARGE, &amount, &anull) ||
        !field_i64(&f, F_LEASE, &lease, &lnull) || (!anull && amount > 0 && lnull))
        return TG_EINVALID_REQUEST;
    size_t len = (size_t)(f.at[F_ALL] - row) - 1; /* without its newline */
    size_t mark = out->len;
    int rc = tg_buf_append(out, row, len);
    if (rc == 0 && (anull || amount == 0))
        rc = tg_buf_append(out, "\t\\N\n", 4);
    else if (rc == 0) { /* (no printf: this runs for every record of the batch) */
        char digits[24], *d = digits + sizeof(digits);
        *--d = '\n';
        do
            *--d = (char)('0' + lease % 10);
        while ((lease /= 10) > 0);
        *--d = '/';
        rc = tg_buf_append(out, "\tusage_charge/", 14);
        rc = rc == 0 ? tg_buf_append(out, batch, strlen(batch)) : rc;
        rc = rc == 0 ? tg_buf_append(out, d, (size_t)(digits + sizeof(digits) - d)) : rc;
    }
    if (rc != 0 && out->data != NULL) { /* as it was */
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

int tg_batch_array(tg_buf_t *out, const tg_batch_lease_t *l, size_t n, tg_batch_col_t col)
{
    size_t mark = out->len;
    int rc = tg_buf_append(out, "{", 1);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *sep = i > 0 ? "," : "";
        switch (col) {
        case TG_BATCH_TENANT:
            rc = tg_buf_appendf(out, "%s%" PRId64, sep, l[i].tenant_id);
            break;
        case TG_BATCH_LEASE:
            rc = tg_buf_appendf(out, "%s%" PRId64, sep, l[i].lease_id);
            break;
        case TG_BATCH_SUM:
            rc = tg_buf_appendf(out, "%s%" PRId64, sep, l[i].sum);
            break;
        case TG_BATCH_PAYING:
            rc = tg_buf_appendf(out, "%s%" PRId32, sep, l[i].paying);
            break;
        default: /* first_at: quoted (at_ok let through no quote or backslash to escape) */
            rc = tg_buf_appendf(out, "%s\"%s\"", sep, l[i].first_at);
            break;
        }
    }
    if (rc == 0)
        rc = tg_buf_append(out, "}", 1);
    if (rc != 0 && out->data != NULL) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

/* ------------------------------------------------------------------------- tg_batch_prepare */

/* What one row gives the batch: read once. */
typedef struct rec {
    char *row;
    int64_t tenant, lease, charge, cost, input, output, cached, status;
    const char *at, *model;
    size_t at_len, model_len;
    uint32_t tenant_no; /* its tenant's group number */
} rec_t;

/* created_at in the writer's UTC form, YYYY-MM-DD[T ]HH:MM:SS...Z: its first ten characters are
 * then the UTC day that usage_daily keys on. */
static bool utc_at(const char *at, size_t n)
{
    if (!at_ok(at, n) || n < 20 || at[n - 1] != 'Z' || at[4] != '-' || at[7] != '-' ||
        (at[10] != 'T' && at[10] != ' '))
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (at[i] < '0' || at[i] > '9'))
            return false;
    return true;
}

static bool read_rec(char *row, rec_t *r)
{
    fields_t f;
    bool null, cnull, lnull;
    if (!split(row, &f))
        return false;
    *r = (rec_t){.row = row,
                 .at = f.at[F_AT],
                 .at_len = field_len(&f, F_AT),
                 .model = f.at[TG_ROW_MODEL],
                 .model_len = field_len(&f, TG_ROW_MODEL)};
    /* every field the rollup sums is NOT NULL in usage_records: \N there fails the COPY anyway */
    if (!field_i64(&f, F_TENANT, &r->tenant, &null) || null || !field_i64(&f, F_CHARGE, &r->charge, &cnull) ||
        !field_i64(&f, F_LEASE, &r->lease, &lnull) || !field_i64(&f, TG_ROW_COST, &r->cost, &null) || null ||
        !field_i64(&f, TG_ROW_INPUT, &r->input, &null) || null ||
        !field_i64(&f, TG_ROW_OUTPUT, &r->output, &null) || null ||
        !field_i64(&f, TG_ROW_CACHED, &r->cached, &null) || null ||
        !field_i64(&f, TG_ROW_STATUS, &r->status, &null) || null || !utc_at(r->at, r->at_len) ||
        r->model_len == 0 || (r->model_len == 2 && memcmp(r->model, "\\N", 2) == 0))
        return false;
    if (cnull)
        r->charge = 0;
    if (r->charge > 0 && lnull) /* a charge is always against a lease (a per-request one included) */
        return false;
    if (lnull || r->charge == 0)
        r->lease = 0;
    return true;
}

/* An open-addressing table of group numbers (+1: 0 is an empty slot), at most half full. */
typedef struct table {
    uint32_t *slot;
    size_t mask;
} table_t;

static bool table_init(table_t *t, size_t groups)
{
    size_t cap = 16;
    while (cap < 2 * groups)
        cap <<= 1;
    t->slot = calloc(cap, sizeof(*t->slot));
    t->mask = cap - 1;
    return t->slot != NULL;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t mix_bytes(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) /* FNV-1a */
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

static bool add_i64(int64_t *sum, int64_t v)
{
    return !__builtin_add_overflow(*sum, v, sum);
}

static int lease_cmp(const void *a, const void *b)
{
    const tg_batch_lease_t *x = a, *y = b;
    if (x->tenant_id != y->tenant_id)
        return x->tenant_id < y->tenant_id ? -1 : 1;
    return x->lease_id < y->lease_id ? -1 : x->lease_id > y->lease_id;
}

/* The lease's group (made on first sight), with this record's charge added. */
static bool add_lease(table_t *t, tg_batch_t *b, const rec_t *r)
{
    size_t i = mix((uint64_t)r->tenant * 0x9E3779B97F4A7C15ull ^ (uint64_t)r->lease) & t->mask;
    tg_batch_lease_t *e = NULL;
    for (; t->slot[i] != 0; i = (i + 1) & t->mask) {
        e = &b->leases[t->slot[i] - 1];
        if (e->tenant_id == r->tenant && e->lease_id == r->lease)
            break;
        e = NULL;
    }
    if (e == NULL) {
        e = &b->leases[b->n_leases++];
        t->slot[i] = (uint32_t)b->n_leases;
        *e = (tg_batch_lease_t){.tenant_id = r->tenant, .lease_id = r->lease};
    }
    /* the same fixed-width UTC form in every row: the text order is the time order */
    if (e->paying == 0 || at_cmp(r->at, r->at_len, e->first_at) < 0) {
        memcpy(e->first_at, r->at, r->at_len);
        e->first_at[r->at_len] = '\0';
    }
    e->paying++;
    return add_i64(&e->sum, r->charge);
}

/* The (tenant, day, model) group (made on first sight), with this record added. */
static bool add_day(table_t *t, tg_batch_t *b, const rec_t *r)
{
    uint64_t h = mix_bytes(mix((uint64_t)r->tenant) ^ 0xcbf29ce484222325ull, r->at, 10);
    size_t i = mix_bytes(h, r->model, r->model_len) & t->mask;
    tg_batch_day_t *d = NULL;
    for (; t->slot[i] != 0; i = (i + 1) & t->mask) {
        d = &b->days[t->slot[i] - 1];
        if (d->tenant_id == r->tenant && memcmp(d->day, r->at, 10) == 0 && d->model_len == r->model_len &&
            memcmp(d->model, r->model, r->model_len) == 0)
            break;
        d = NULL;
    }
    if (d == NULL) {
        d = &b->days[b->n_days++];
        t->slot[i] = (uint32_t)b->n_days;
        *d = (tg_batch_day_t){.tenant_id = r->tenant, .model = r->model, .model_len = r->model_len};
        memcpy(d->day, r->at, 10);
        d->day[10] = '\0';
    }
    d->requests++;
    d->errors += r->status >= 400;
    return add_i64(&d->input, r->input) && add_i64(&d->output, r->output) && add_i64(&d->cached, r->cached) &&
           add_i64(&d->cost, r->cost) && add_i64(&d->charged, r->charge);
}

/* The tenant's group number (made on first sight). */
static uint32_t tenant_group(table_t *t, int64_t *tenants, uint32_t *count, size_t *n_tenants, int64_t tenant)
{
    size_t i = mix((uint64_t)tenant) & t->mask;
    for (; t->slot[i] != 0; i = (i + 1) & t->mask)
        if (tenants[t->slot[i] - 1] == tenant)
            return t->slot[i] - 1;
    tenants[*n_tenants] = tenant;
    count[*n_tenants] = 0;
    t->slot[i] = (uint32_t)++ * n_tenants;
    return t->slot[i] - 1;
}

void tg_batch_dispose(tg_batch_t *b)
{
    free(b->leases);
    free(b->days);
    *b = (tg_batch_t){0};
}

int tg_batch_prepare(tg_batch_t *b, char **rows, size_t n)
{
    *b = (tg_batch_t){0};
    if (n == 0)
        return 0;
    if (n >= UINT32_MAX / 2)
        return TG_EINVALID_REQUEST;
    rec_t *r = malloc(n * sizeof(*r));
    int64_t *tenants = malloc(n * sizeof(*tenants));
    uint32_t *count = malloc(n * sizeof(*count));
    table_t tt = {0}, lt = {0}, dt = {0};
    b->leases = malloc(n * sizeof(*b->leases));
    b->days = malloc(n * sizeof(*b->days));
    int rc = TG_ENOMEM;
    if (r == NULL || tenants == NULL || count == NULL || b->leases == NULL || b->days == NULL ||
        !table_init(&tt, n) || !table_init(&lt, n) || !table_init(&dt, n))
        goto out;
    rc = TG_EINVALID_REQUEST;
    size_t n_tenants = 0;
    for (size_t i = 0; i < n; i++) {
        if (!read_rec(rows[i], &r[i]) || !add_day(&dt, b, &r[i]) ||
            (r[i].charge > 0 && !add_lease(&lt, b, &r[i])))
            goto out;
        r[i].tenant_no = tenant_group(&tt, tenants, count, &n_tenants, r[i].tenant);
        count[r[i].tenant_no]++;
    }
    /* each tenant's rows side by side: a counting sort by tenant group, stable */
    size_t at = 0;
    for (size_t t = 0; t < n_tenants; t++) {
        size_t c = count[t];
        count[t] = (uint32_t)at;
        at += c;
    }
    for (size_t i = 0; i < n; i++)
        rows[count[r[i].tenant_no]++] = r[i].row;
    qsort(b->leases, b->n_leases, sizeof(*b->leases), lease_cmp);
    rc = 0;
out:
    free(r);
    free(tenants);
    free(count);
    free(tt.slot);
    free(lt.slot);
    free(dt.slot);
    if (rc != 0)
        tg_batch_dispose(b);
    return rc;
}

int tg_batch_day_row(tg_buf_t *out, const tg_batch_day_t *d)
{
    size_t mark = out->len;
    int rc = tg_buf_appendf(out, "%" PRId64 "\t%s\t", d->tenant_id, d->day);
    rc = rc == 0 ? tg_buf_append(out, d->model, d->model_len) : rc;
    rc = rc == 0 ? tg_buf_appendf(out,
                                  "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64
                                  "\t%" PRId64 "\t%" PRId64 "\n",
                                  d->requests, d->errors, d->input, d->output, d->cached, d->cost, d->charged)
                 : rc;
    if (rc != 0 && out->data != NULL) { /* as it was */
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}
