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

typedef struct charge {
    int64_t tenant, lease, amount;
    const char *at;
    size_t at_len;
} charge_t;

static int charge_cmp(const void *a, const void *b)
{
    const charge_t *x = a, *y = b;
    if (x->tenant != y->tenant)
        return x->tenant < y->tenant ? -1 : 1;
    if (x->lease != y->lease)
        return x->lease < y->lease ? -1 : 1;
    return 0;
}

int tg_batch_leases(char *const *rows, size_t n, tg_batch_lease_t **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    charge_t *c = n > 0 ? malloc(n * sizeof(*c)) : NULL;
    if (n > 0 && c == NULL)
        return TG_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t tenant, amount, lease;
        bool tnull, anull, lnull;
        fields_t f;
        if (!split(rows[i], &f) || !field_i64(&f, F_TENANT, &tenant, &tnull) ||
            !field_i64(&f, F_CHARGE, &amount, &anull) || !field_i64(&f, F_LEASE, &lease, &lnull) || tnull ||
            !at_ok(f.at[F_AT], field_len(&f, F_AT))) {
            free(c);
            return TG_EINVALID_REQUEST;
        }
        if (anull || amount == 0)
            continue;
        if (lnull) { /* a charge is always against a lease (a per-request one included) */
            free(c);
            return TG_EINVALID_REQUEST;
        }
        c[k++] = (charge_t){.tenant = tenant,
                            .lease = lease,
                            .amount = amount,
                            .at = f.at[F_AT],
                            .at_len = field_len(&f, F_AT)};
    }
    if (k == 0) {
        free(c);
        return 0;
    }
    qsort(c, k, sizeof(*c), charge_cmp);
    size_t groups = 1;
    for (size_t i = 1; i < k; i++)
        groups += charge_cmp(&c[i - 1], &c[i]) != 0;
    tg_batch_lease_t *l = calloc(groups, sizeof(*l));
    if (l == NULL) {
        free(c);
        return TG_ENOMEM;
    }
    size_t g = 0;
    for (size_t i = 0; i < k; i++) {
        if (i > 0 && charge_cmp(&c[i - 1], &c[i]) != 0)
            g++;
        tg_batch_lease_t *e = &l[g];
        /* the same fixed-width UTC form in every row: the text order is the time order */
        bool earlier = e->paying == 0 || at_cmp(c[i].at, c[i].at_len, e->first_at) < 0;
        e->tenant_id = c[i].tenant;
        e->lease_id = c[i].lease;
        if (e->sum > INT64_MAX - c[i].amount) {
            free(c);
            free(l);
            return TG_EINVALID_REQUEST;
        }
        e->sum += c[i].amount;
        e->paying++;
        if (earlier) {
            memcpy(e->first_at, c[i].at, c[i].at_len);
            e->first_at[c[i].at_len] = '\0';
        }
    }
    free(c);
    *out = l;
    *n_out = groups;
    return 0;
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

typedef struct sort_key {
    int64_t tenant; /* INT64_MAX: not a stage row */
    const char *at;
    size_t at_len, pos;
    char *row;
} sort_key_t;

static int sort_cmp(const void *a, const void *b)
{
    const sort_key_t *x = a, *y = b;
    if (x->tenant != y->tenant)
        return x->tenant < y->tenant ? -1 : 1;
    size_t m = x->at_len < y->at_len ? x->at_len : y->at_len;
    int r = x->at != NULL && y->at != NULL ? memcmp(x->at, y->at, m) : 0;
    if (r != 0)
        return r;
    if (x->at_len != y->at_len)
        return x->at_len < y->at_len ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos; /* stable */
}

int tg_batch_sort(char **rows, size_t n)
{
    if (n < 2)
        return 0;
    sort_key_t *k = malloc(n * sizeof(*k));
    if (k == NULL)
        return TG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        fields_t f;
        int64_t tenant;
        bool null;
        k[i] = (sort_key_t){.tenant = INT64_MAX, .pos = i, .row = rows[i]};
        if (split(rows[i], &f) && field_i64(&f, F_TENANT, &tenant, &null) && !null) {
            k[i].tenant = tenant;
            k[i].at = f.at[F_AT];
            k[i].at_len = field_len(&f, F_AT);
        }
    }
    qsort(k, n, sizeof(*k), sort_cmp);
    for (size_t i = 0; i < n; i++)
        rows[i] = k[i].row;
    free(k);
    return 0;
}
