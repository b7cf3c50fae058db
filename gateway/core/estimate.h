/*
 * estimate.h - how many tokens a request may cost, known before it runs.
 *
 * The rate limits count a request's tokens when they admit it (LIMIT), and the credit ledger will
 * reserve its cost at the same point, both before any provider has counted anything. Both read
 * these two figures, so they agree:
 *
 *   prompt  ceil(characters / 4) over what the model reads (message content, text parts, names,
 *           tool calls' names and arguments, tool definitions' keys and strings), plus
 *           TG_ESTIMATE_MSG_TOKENS per message and TG_ESTIMATE_REPLY_TOKENS for the reply's
 *           priming (OpenAI's chat format costs 3 to 4 tokens per message), plus
 *           TG_ESTIMATE_IMAGE_TOKENS per image part (a low-detail image's cost at OpenAI);
 *   output  max_completion_tokens, else max_tokens, else the model's output cap; never more than
 *           that cap; times n (the number of choices).
 *
 * Four characters per token is the usual figure for English text; the provider's count is the
 * truth, and SETTLE corrects the admission with it. Characters are Unicode code points of the
 * UTF-8 text, so the estimate of CJK text (about one token per character) is low: that is the
 * rate limits' documented slack (docs/CONVENTIONS.md, "Rate limits").
 *
 * Pure: no allocation, no clock, no I/O. The body is a canonical request (tg_canon_validate
 * passed); anything unexpected in it counts as nothing rather than failing.
 */
#ifndef TG_ESTIMATE_H
#define TG_ESTIMATE_H

#include <jansson.h>
#include <stdint.h>

#define TG_ESTIMATE_MSG_TOKENS   4u
#define TG_ESTIMATE_REPLY_TOKENS 3u
#define TG_ESTIMATE_IMAGE_TOKENS 85u

/** The prompt tokens of a canonical chat request (0 when body is not an object). */
uint64_t tg_estimate_prompt_tokens(const json_t *body);

/** The most output tokens the request may ask for: max_completion_tokens (else max_tokens, else
 *  model_cap) capped at model_cap, times n. model_cap 0 means "no known cap" (the request's own
 *  figure counts as asked; without one, the result is 0). */
uint64_t tg_estimate_output_tokens(const json_t *body, uint32_t model_cap);

#endif
