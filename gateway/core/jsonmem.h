/*
 * jsonmem.h - a memory budget for the JSON trees of one call.
 *
 * A 1 MiB body of tiny values (`[1,1,1,...]`, thousands of one-word messages) becomes a jansson
 * tree twenty times its size, and the tree lives as long as the call. jsonmem installs
 * allocator hooks into jansson (once, process-wide) that count, on the calling thread only and
 * only while a budget is armed, the bytes jansson asks for. Past the budget the work stops,
 * jansson frees what it built, and the caller answers 413 `request_too_complex`.
 *
 * What is counted is every byte requested while armed, transient buffers included (the lexer's
 * string buffer, array tables outgrown and freed): the count is deterministic (it does not depend
 * on the malloc implementation) and never below the tree's own size. Frees are not subtracted.
 * Unarmed, the hooks are malloc and free behind one thread-local test.
 *
 * Outside a parse an allocation past the budget fails (jansson's building functions cope). A
 * parse must go through tg_jsonmem_loadb: jansson's lexer aborts on a failed allocation, so there
 * the budget stops the input instead, within 1 KiB of it (at most what that much JSON costs, plus
 * one doubling of an array's table or an object's hash, past the budget).
 *
 * The budget of a call is proportional to what it may carry (tg_jsonmem_budget): a floor that
 * any small request fits in whatever its shape, plus `factor` times the body's length. Ordinary
 * chat bodies cost one to nine times their length (nine for turns of ~20 characters); bodies of
 * tiny values cost fifteen to seventy-five (bench/RESULTS.md, "Memory per request").
 */
#ifndef TG_JSONMEM_H
#define TG_JSONMEM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Every call may use this much whatever its body, so small requests never meet the budget. */
#define TG_JSONMEM_FLOOR ((size_t)1 << 20)

/* A provider translation (anthropic, gemini) builds a second tree with a container per block and
 * serialises it: measured up to 26x the body (short Anthropic turns), about 2.4 times a call's
 * parse budget. It runs synchronously and is freed before the transfer starts, so it is bounded
 * on its own, at this many parse budgets. */
#define TG_JSONMEM_BUILD_FACTOR 3

/* Bodies above this are pre-scanned: refusing a tree half-built takes as long as building it
 * (20 ms for 1 MiB of `[1,1,...]`), the scan about 1 ms, and worker loops must stay responsive
 * while a burst of such bodies is refused. Below it a refused parse costs well under 1 ms. */
#define TG_JSONMEM_PRESCAN_MIN ((size_t)64 << 10)

/** Installs the counting allocator into jansson; idempotent and thread-safe. The hooks call
 *  malloc and free, so memory allocated before or after them is interchangeable. */
void tg_jsonmem_init(void);

/** The budget of a call whose body is body_len bytes: TG_JSONMEM_FLOOR + factor * body_len,
 *  saturating at SIZE_MAX. factor 0 means no budget (SIZE_MAX). */
size_t tg_jsonmem_budget(size_t body_len, unsigned factor);

/** The public message of a refusal: the body's size and the limit it met, into dst. */
void tg_jsonmem_explain(char *dst, size_t n, size_t body_len, unsigned factor);

/** Arms a budget of `budget` bytes on the calling thread (replacing any armed one). Until
 *  tg_jsonmem_disarm, jansson allocations on this thread fail once they would exceed it. */
void tg_jsonmem_arm(size_t budget);

/** Disarms; returns the bytes counted since tg_jsonmem_arm. *exceeded (may be NULL) tells
 *  whether an allocation was refused for the budget. */
size_t tg_jsonmem_disarm(bool *exceeded);

/** json_loadb that respects the budget armed on this thread (and is plain json_loadb when none
 *  is): NULL once the budget is passed, with the budget marked exceeded (tg_jsonmem_disarm).
 *  Every json_load* under an armed budget must be this one (see above). */
json_t *tg_jsonmem_loadb(const char *buf, size_t len, size_t flags, json_error_t *jerr);

/** A lower bound of what jansson allocates to parse buf (counting tokens, not validating), or
 *  the count so far once it exceeds stop_above. */
size_t tg_jsonmem_estimate(const char *buf, size_t len, size_t stop_above);

/**
 * json_loadb under a budget. Bodies over TG_JSONMEM_PRESCAN_MIN whose estimate exceeds the
 * budget are refused without parsing (so an invalid one gets 413, not 400). Returns the tree (caller's
 * reference) or NULL with *rc set: TG_EBODY_TOO_COMPLEX when the tree would exceed `budget` bytes,
 * TG_EINVALID_JSON otherwise (jerr says why). *used (may be NULL) receives the bytes counted (0 when the
 * pre-scan refused).
 */
json_t *tg_json_load_bounded(const char *buf, size_t len, size_t budget, size_t flags, json_error_t *jerr,
                             int *rc, size_t *used);

#endif
