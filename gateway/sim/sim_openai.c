/*
 * sim_openai.c - the OpenAI chat completions wire format (request parsing, bodies, stream
 * chunks, error bodies, model list), following the OpenAI API reference:
 * https://platform.openai.com/docs/api-reference/chat
 *
 * A stream is: a role chunk, one chunk per content piece (or tool-call arguments piece), a
 * finish chunk with an empty delta, the usage chunk (choices: []) when
 * stream_options.include_usage is true, then "data: [DONE]".
 */
#include "sim.h"

#include <stdio.h>
#include <string.h>

static void add_content(tg_sim_req_t *rq, json_t *content, const char **first_text, size_t *first_len)
{
    if (json_is_string(content)) {
        tg_sim_req_add_text(rq, json_string_value(content), json_string_length(content));
        if (first_text != NULL && *first_text == NULL) {
            *first_text = json_string_value(content);
            *first_len = json_string_length(content);
        }
        return;
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        if (!tg_sim_json_is_str(json_object_get(part, "type"), "text") || !json_is_string(text))
            continue; /* images and audio carry no text to count */
        tg_sim_req_add_text(rq, json_string_value(text), json_string_length(text));
        if (first_text != NULL && *first_text == NULL) {
            *first_text = json_string_value(text);
            *first_len = json_string_length(text);
        }
    }
}

static int pick_tool(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *tools = json_object_get(body, "tools");
    json_t *choice = json_object_get(body, "tool_choice");
    const char *want = NULL;
    if (tools != NULL && !json_is_array(tools))
        return tg_sim_perr(e, 400, "tools", "tools must be an array");
    if (json_is_object(choice)) {
        want = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
        if (want == NULL)
            return tg_sim_perr(e, 400, "tool_choice", "tool_choice.function.name is required");
    } else if (!tg_sim_json_is_str(choice, "required")) {
        return 0; /* "auto", "none" or absent: the simulator answers with text */
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (name == NULL)
            return tg_sim_perr(e, 400, "tools", "tools[%zu].function.name is required", i);
        if (want == NULL || strcmp(want, name) == 0) {
            rq->tool_name = name;
            rq->tool_schema = json_object_get(fn, "parameters");
            return 0;
        }
    }
    return tg_sim_perr(e, 400, "tool_choice", "tool_choice names a tool that is not in tools");
}

static int oa_parse(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *model = json_object_get(body, "model");
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_string(model) || json_string_length(model) == 0)
        return tg_sim_perr(e, 400, "model", "you must provide a model parameter");
    if (json_string_length(model) >= sizeof(rq->model))
        return tg_sim_perr(e, 404, "model", "model name is too long");
    memcpy(rq->model, json_string_value(model), json_string_length(model) + 1);
    rq->store_false = json_is_false(json_object_get(body, "store"));
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return tg_sim_perr(e, 400, "messages", "'messages' must be a non-empty array");
    json_t *stream = json_object_get(body, "stream");
    if (stream != NULL && !json_is_boolean(stream) && !json_is_null(stream))
        return tg_sim_perr(e, 400, "stream", "'stream' must be a boolean");
    rq->stream = json_is_true(stream);
    rq->include_usage =
        json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    json_t *mt = json_object_get(body, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(body, "max_tokens");
    if (json_is_integer(mt))
        rq->max_tokens = (long)json_integer_value(mt);
    json_t *rf = json_object_get(json_object_get(body, "response_format"), "type");
    rq->json_mode = tg_sim_json_is_str(rf, "json_object") || tg_sim_json_is_str(rf, "json_schema");

    size_t i, n = json_array_size(msgs);
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");
        if (!json_is_string(role))
            return tg_sim_perr(e, 400, "messages", "messages[%zu].role is required", i);
        if (content != NULL && !json_is_string(content) && !json_is_array(content) && !json_is_null(content))
            return tg_sim_perr(e, 400, "messages", "messages[%zu].content must be a string or an array", i);
        const char *first = NULL;
        size_t first_len = 0;
        add_content(rq, content, &first, &first_len);
        if (i + 1 == n && tg_sim_json_is_str(role, "tool")) {
            /* the tool result: a string or the concatenated text parts */
            if (json_is_string(content)) {
                tg_sim_req_set_tool_result(rq, first, first_len);
            } else {
                tg_buf_t all;
                tg_buf_init(&all, TG_SIM_RESULT_MAX);
                size_t k;
                json_t *p;
                json_array_foreach(content, k, p)
                {
                    json_t *tx = json_object_get(p, "text");
                    if (json_is_string(tx))
                        TG_IGNORE_RESULT(tg_buf_append(&all, json_string_value(tx), json_string_length(tx)));
                }
                tg_sim_req_set_tool_result(rq, all.data ? all.data : "", all.len);
                tg_buf_dispose(&all);
            }
        } else if (tg_sim_json_is_str(role, "user") && first != NULL) {
            tg_sim_req_set_echo(rq, first, first_len);
        }
    }
    return pick_tool(body, rq, e);
}

static void oa_error(tg_sim_w_t *w, int status, bool context_length, const char *msg, const char *param,
                     const char *model, int retry_after_s)
{
    const char *type = "server_error", *code = NULL;
    char tmp[256];
    (void)retry_after_s;
    if (context_length) {
        type = "invalid_request_error";
        code = "context_length_exceeded";
        param = "messages";
        msg =
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 "
            "tokens. Please reduce the length of the messages.";
    } else {
        switch (status) {
        case 400:
            type = "invalid_request_error";
            break;
        case 401:
            type = "invalid_request_error";
            code = "invalid_api_key";
            if (msg == NULL)
                msg = "Incorrect API key provided. You can find your API key at "
                      "https://platform.openai.com/account/api-keys.";
            break;
        case 403:
            type = "invalid_request_error";
            code = "permission_denied";
            if (msg == NULL)
                msg = "You are not allowed to access this model.";
            break;
        case 404:
            type = "invalid_request_error";
            code = "model_not_found";
            if (msg == NULL) {
                snprintf(tmp, sizeof(tmp),
                         "The model `%.100s` does not exist or you do not have access to it.",
                         model ? model : "");
                msg = tmp;
            }
            break;
        case 429:
            type = "requests";
            code = "rate_limit_exceeded";
            if (msg == NULL)
                msg = "Rate limit reached for requests. Please try again later.";
            break;
        case 500:
            if (msg == NULL)
                msg = "The server had an error while processing your request. Sorry about that!";
            break;
        case 503:
            if (msg == NULL)
                msg = "The engine is currently overloaded, please try again later.";
            break;
        default:
            break;
        }
        if (msg == NULL) {
            snprintf(tmp, sizeof(tmp), "Simulated upstream error (status %d).", status);
            msg = tmp;
        }
    }
    tg_sim_w_s(w, "{\"error\":{\"message\":");
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_f(w, ",\"type\":\"%s\",\"param\":", type);
    if (param)
        tg_sim_w_str(w, param, strlen(param));
    else
        tg_sim_w_s(w, "null");
    tg_sim_w_s(w, ",\"code\":");
    if (code)
        tg_sim_w_f(w, "\"%s\"", code);
    else
        tg_sim_w_s(w, "null");
    tg_sim_w_s(w, "}}");
}

static const char *finish_str(tg_sim_finish_t f)
{
    return f == TG_SIM_FINISH_TOOL ? "tool_calls" : f == TG_SIM_FINISH_LENGTH ? "length" : "stop";
}

static void w_usage(tg_sim_w_t *w, const tg_sim_answer_t *a)
{
    tg_sim_w_f(w,
               "{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,\"total_tokens\":%ld,"
               "\"prompt_tokens_details\":{\"cached_tokens\":%ld,\"audio_tokens\":0},",
               a->prompt_tokens, a->completion_tokens, a->prompt_tokens + a->completion_tokens,
               a->cached_tokens);
    tg_sim_w_s(w, "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
                  "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}");
}

static void oa_render(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    tg_sim_w_f(w, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", a->resp_id,
               a->created);
    tg_sim_w_str(w, rq->model, strlen(rq->model));
    tg_sim_w_s(w, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
    if (a->tool_call) {
        tg_sim_w_f(
            w,
            "\"content\":null,\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
            a->call_id);
        tg_sim_w_str(w, a->tool_name, strlen(a->tool_name));
        tg_sim_w_s(w, ",\"arguments\":");
        tg_sim_w_str(w, a->tool_args, a->tool_args_len);
        tg_sim_w_s(w, "}}]");
    } else {
        tg_sim_w_s(w, "\"content\":");
        tg_sim_w_answer_text(w, a);
    }
    tg_sim_w_f(
        w, ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":",
        finish_str(a->finish));
    w_usage(w, a);
    tg_sim_w_s(w, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_tollgate_sim\"}");
}

static void chunk_head(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    tg_sim_w_f(w, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               a->resp_id, a->created);
    tg_sim_w_str(w, rq->model, strlen(rq->model));
    tg_sim_w_s(w, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_tollgate_sim\",\"choices\":");
}

static void chunk_tail(tg_sim_w_t *w, const tg_sim_req_t *rq)
{
    tg_sim_w_s(w, rq->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
}

static bool oa_stream_event(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a, size_t idx,
                            tg_sim_ev_kind_t *kind)
{
    size_t k = a->tool_call ? tg_sim_answer_args_pieces(a) : a->n_pieces;
    *kind = TG_SIM_EV_OTHER;
    if (idx == 0) {
        chunk_head(w, rq, a);
        if (a->tool_call) {
            tg_sim_w_f(w,
                       "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
                       "\"index\":0,"
                       "\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
                       a->call_id);
            tg_sim_w_str(w, a->tool_name, strlen(a->tool_name));
            tg_sim_w_s(w,
                       ",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]");
        } else {
            tg_sim_w_s(w,
                       "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
                       "\"logprobs\":null,\"finish_reason\":null}]");
        }
        chunk_tail(w, rq);
        return true;
    }
    if (idx <= k) {
        *kind = TG_SIM_EV_CONTENT;
        chunk_head(w, rq, a);
        if (a->tool_call) {
            tg_sim_w_s(w,
                       "[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":");
            tg_sim_w_args_piece(w, a, idx - 1);
            tg_sim_w_s(w, "}}]},\"logprobs\":null,\"finish_reason\":null}]");
        } else {
            tg_sim_w_s(w, "[{\"index\":0,\"delta\":{\"content\":");
            tg_sim_w_piece(w, a, idx - 1);
            tg_sim_w_s(w, "},\"logprobs\":null,\"finish_reason\":null}]");
        }
        chunk_tail(w, rq);
        return true;
    }
    if (idx == k + 1) {
        chunk_head(w, rq, a);
        tg_sim_w_f(w, "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"%s\"}]",
                   finish_str(a->finish));
        chunk_tail(w, rq);
        return true;
    }
    size_t next = k + 2;
    if (rq->include_usage) {
        if (idx == next) {
            chunk_head(w, rq, a);
            tg_sim_w_s(w, "[],\"usage\":");
            w_usage(w, a);
            tg_sim_w_s(w, "}\n\n");
            return true;
        }
        next++;
    }
    if (idx == next) {
        tg_sim_w_s(w, "data: [DONE]\n\n");
        return true;
    }
    return false;
}

static void oa_models(tg_sim_w_t *w)
{
    static const char *const ids[] = {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"};
    tg_sim_w_s(w, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        tg_sim_w_f(
            w, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":1715367049,\"owned_by\":\"tollgate-sim\"}",
            i ? "," : "", ids[i]);
    tg_sim_w_s(w, "]}");
}

/* OpenAI reports a failure after the stream started as a data event holding an error object. */
static void oa_stream_error(tg_sim_w_t *w, const char *msg)
{
    if (msg == NULL)
        msg = "The server had an error while processing your request. Sorry about that!";
    tg_sim_w_s(w, "data: {\"error\":{\"message\":");
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_s(w, ",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n");
}

const tg_sim_wire_t tg_sim_openai = {
    .name = "openai",
    .id_prefix = "chatcmpl-sim",
    .call_prefix = "call_",
    .parse = oa_parse,
    .auth_header = "authorization",
    .auth_bearer = true,
    .error_body = oa_error,
    .render = oa_render,
    .stream_event = oa_stream_event,
    .models = oa_models,
    .stream_error = oa_stream_error,
};
