/*
 * sim_anthropic.c - the Anthropic Messages wire format, following the API reference:
 * https://docs.anthropic.com/en/api/messages and .../messages-streaming, .../errors
 *
 * A stream is: message_start (usage.input_tokens, cache_read_input_tokens), content_block_start,
 * ping, one content_block_delta per piece (text_delta, or input_json_delta for a tool call),
 * content_block_stop, message_delta (stop_reason, usage.output_tokens), message_stop.
 * input_tokens excludes the cached part, as Anthropic reports it; prompt = input + cache_read.
 */
#include "sim.h"

#include <stdio.h>
#include <string.h>

/* Text of a content value (string or blocks); for tool results the whole text is kept. */
static void block_text(tg_sim_req_t *rq, json_t *content, tg_buf_t *all, const char **first,
                       size_t *first_len)
{
    if (json_is_string(content)) {
        tg_sim_req_add_text(rq, json_string_value(content), json_string_length(content));
        if (all != NULL)
            TG_IGNORE_RESULT(tg_buf_append(all, json_string_value(content), json_string_length(content)));
        if (first != NULL && *first == NULL) {
            *first = json_string_value(content);
            *first_len = json_string_length(content);
        }
        return;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        json_t *text = json_object_get(b, "text");
        if (!json_is_string(text))
            continue;
        tg_sim_req_add_text(rq, json_string_value(text), json_string_length(text));
        if (all != NULL)
            TG_IGNORE_RESULT(tg_buf_append(all, json_string_value(text), json_string_length(text)));
        if (first != NULL && *first == NULL) {
            *first = json_string_value(text);
            *first_len = json_string_length(text);
        }
    }
}

static int pick_tool(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *tools = json_object_get(body, "tools");
    json_t *choice = json_object_get(body, "tool_choice");
    json_t *type = json_object_get(choice, "type");
    const char *want = NULL;
    if (tools != NULL && !json_is_array(tools))
        return tg_sim_perr(e, 400, NULL, "tools: Input should be a valid list");
    if (tg_sim_json_is_str(type, "tool")) {
        want = json_string_value(json_object_get(choice, "name"));
        if (want == NULL)
            return tg_sim_perr(e, 400, NULL, "tool_choice.tool.name: Field required");
    } else if (!tg_sim_json_is_str(type, "any")) {
        return 0;
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (name == NULL)
            return tg_sim_perr(e, 400, NULL, "tools.%zu.name: Field required", i);
        if (want == NULL || strcmp(want, name) == 0) {
            rq->tool_name = name;
            rq->tool_schema = json_object_get(t, "input_schema");
            return 0;
        }
    }
    return tg_sim_perr(e, 400, NULL, "tool_choice: tool not found in tools");
}

static int an_parse(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *model = json_object_get(body, "model");
    json_t *msgs = json_object_get(body, "messages");
    json_t *mt = json_object_get(body, "max_tokens");
    if (!json_is_string(model) || json_string_length(model) == 0)
        return tg_sim_perr(e, 400, NULL, "model: Field required");
    if (json_string_length(model) >= sizeof(rq->model))
        return tg_sim_perr(e, 404, NULL, "model: %.60s", json_string_value(model));
    memcpy(rq->model, json_string_value(model), json_string_length(model) + 1);
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return tg_sim_perr(e, 400, NULL, "messages: Field required");
    if (!json_is_integer(mt) || json_integer_value(mt) < 1)
        return tg_sim_perr(e, 400, NULL, "max_tokens: Field required");
    rq->max_tokens = (long)json_integer_value(mt);
    json_t *stream = json_object_get(body, "stream");
    if (stream != NULL && !json_is_boolean(stream))
        return tg_sim_perr(e, 400, NULL, "stream: Input should be a valid boolean");
    rq->stream = json_is_true(stream);
    block_text(rq, json_object_get(body, "system"), NULL, NULL, NULL);

    size_t i, n = json_array_size(msgs);
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");
        if (!tg_sim_json_is_str(role, "user") && !tg_sim_json_is_str(role, "assistant"))
            return tg_sim_perr(e, 400, NULL, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
        if (!json_is_string(content) && !json_is_array(content))
            return tg_sim_perr(e, 400, NULL, "messages.%zu.content: Field required", i);
        const char *first = NULL;
        size_t first_len = 0;
        bool last_user = i + 1 == n && tg_sim_json_is_str(role, "user");
        if (json_is_string(content)) {
            block_text(rq, content, NULL, &first, &first_len);
        } else {
            size_t k;
            json_t *b;
            json_array_foreach(content, k, b)
            {
                json_t *type = json_object_get(b, "type");
                if (tg_sim_json_is_str(type, "text")) {
                    json_t *one = json_array();
                    json_array_append(one, b);
                    block_text(rq, one, NULL, &first, &first_len);
                    json_decref(one);
                } else if (tg_sim_json_is_str(type, "tool_result")) {
                    tg_buf_t all;
                    tg_buf_init(&all, TG_SIM_RESULT_MAX);
                    block_text(rq, json_object_get(b, "content"), &all, NULL, NULL);
                    if (last_user)
                        tg_sim_req_set_tool_result(rq, all.data ? all.data : "", all.len);
                    tg_buf_dispose(&all);
                }
            }
        }
        if (last_user && first != NULL && !rq->has_tool_result)
            tg_sim_req_set_echo(rq, first, first_len);
        else if (tg_sim_json_is_str(role, "user") && first != NULL)
            tg_sim_req_set_echo(rq, first, first_len);
    }
    return pick_tool(body, rq, e);
}

static void an_error(tg_sim_w_t *w, int status, bool context_length, const char *msg, const char *param,
                     const char *model, int retry_after_s)
{
    const char *type;
    char tmp[256];
    (void)param;
    (void)retry_after_s;
    if (context_length) {
        type = "invalid_request_error";
        msg = "prompt is too long: 208310 tokens > 200000 maximum";
    } else {
        switch (status) {
        case 400:
            type = "invalid_request_error";
            break;
        case 401:
            type = "authentication_error";
            if (msg == NULL)
                msg = "invalid x-api-key";
            break;
        case 403:
            type = "permission_error";
            if (msg == NULL)
                msg = "Your API key does not have permission to use the specified resource.";
            break;
        case 404:
            type = "not_found_error";
            if (msg == NULL) {
                snprintf(tmp, sizeof(tmp), "model: %.100s", model ? model : "");
                msg = tmp;
            }
            break;
        case 429:
            type = "rate_limit_error";
            if (msg == NULL)
                msg = "Number of request tokens has exceeded your per-minute rate limit.";
            break;
        case 529:
            type = "overloaded_error";
            if (msg == NULL)
                msg = "Overloaded";
            break;
        default:
            type = status >= 500 ? "api_error" : "invalid_request_error";
            if (msg == NULL && status >= 500)
                msg = "Internal server error";
            break;
        }
        if (msg == NULL) {
            snprintf(tmp, sizeof(tmp), "Simulated error (status %d).", status);
            msg = tmp;
        }
    }
    tg_sim_w_f(w, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_s(w, "}}");
}

static const char *stop_str(tg_sim_finish_t f)
{
    return f == TG_SIM_FINISH_TOOL ? "tool_use" : f == TG_SIM_FINISH_LENGTH ? "max_tokens" : "end_turn";
}

static void w_usage(tg_sim_w_t *w, const tg_sim_answer_t *a, long output)
{
    tg_sim_w_f(w,
               "{\"input_tokens\":%ld,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":%ld,"
               "\"output_tokens\":%ld}",
               a->prompt_tokens - a->cached_tokens, a->cached_tokens, output);
}

static void w_message_head(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    tg_sim_w_f(w, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", a->resp_id);
    tg_sim_w_str(w, rq->model, strlen(rq->model));
}

static void an_render(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    w_message_head(w, rq, a);
    tg_sim_w_s(w, ",\"content\":[");
    if (a->tool_call) {
        tg_sim_w_f(w, "{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":", a->call_id);
        tg_sim_w_str(w, a->tool_name, strlen(a->tool_name));
        tg_sim_w_s(w, ",\"input\":");
        tg_sim_w_raw(w, a->tool_args, a->tool_args_len);
        tg_sim_w_s(w, "}");
    } else {
        tg_sim_w_s(w, "{\"type\":\"text\",\"text\":");
        tg_sim_w_answer_text(w, a);
        tg_sim_w_s(w, "}");
    }
    tg_sim_w_f(w, "],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":", stop_str(a->finish));
    w_usage(w, a, a->completion_tokens);
    tg_sim_w_s(w, "}");
}

static void ev(tg_sim_w_t *w, const char *name)
{
    tg_sim_w_f(w, "event: %s\ndata: ", name);
}

static bool an_stream_event(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a, size_t idx,
                            tg_sim_ev_kind_t *kind)
{
    size_t k = a->tool_call ? tg_sim_answer_args_pieces(a) : a->n_pieces;
    *kind = TG_SIM_EV_OTHER;
    switch (idx) {
    case 0:
        ev(w, "message_start");
        tg_sim_w_s(w, "{\"type\":\"message_start\",\"message\":");
        w_message_head(w, rq, a);
        tg_sim_w_s(w, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
        w_usage(w, a, 1);
        tg_sim_w_s(w, "}}\n\n");
        return true;
    case 1:
        ev(w, "content_block_start");
        if (a->tool_call) {
            tg_sim_w_f(
                w,
                "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\","
                "\"id\":\"%s\",\"name\":",
                a->call_id);
            tg_sim_w_str(w, a->tool_name, strlen(a->tool_name));
            tg_sim_w_s(w, ",\"input\":{}}}\n\n");
        } else {
            tg_sim_w_s(w,
                       "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
                       "\"text\":\"\"}}\n\n");
        }
        return true;
    case 2:
        ev(w, "ping");
        tg_sim_w_s(w, "{\"type\": \"ping\"}\n\n");
        return true;
    default:
        break;
    }
    if (idx < 3 + k) {
        *kind = TG_SIM_EV_CONTENT;
        ev(w, "content_block_delta");
        if (a->tool_call) {
            tg_sim_w_s(
                w, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
                   "\"partial_json\":");
            tg_sim_w_args_piece(w, a, idx - 3);
        } else {
            tg_sim_w_s(
                w,
                "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
            tg_sim_w_piece(w, a, idx - 3);
        }
        tg_sim_w_s(w, "}}\n\n");
        return true;
    }
    if (idx == 3 + k) {
        ev(w, "content_block_stop");
        tg_sim_w_s(w, "{\"type\":\"content_block_stop\",\"index\":0}\n\n");
        return true;
    }
    if (idx == 4 + k) {
        ev(w, "message_delta");
        tg_sim_w_f(w,
                   "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},"
                   "\"usage\":{\"output_tokens\":%ld}}\n\n",
                   stop_str(a->finish), a->completion_tokens);
        return true;
    }
    if (idx == 5 + k) {
        ev(w, "message_stop");
        tg_sim_w_s(w, "{\"type\":\"message_stop\"}\n\n");
        return true;
    }
    return false;
}

static void an_models(tg_sim_w_t *w)
{
    static const char *const ids[] = {"claude-3-5-haiku-latest", "claude-sonnet-4-20250514",
                                      "claude-3-opus-latest"};
    size_t n = sizeof(ids) / sizeof(ids[0]);
    tg_sim_w_s(w, "{\"data\":[");
    for (size_t i = 0; i < n; i++)
        tg_sim_w_f(w,
                   "%s{\"type\":\"model\",\"id\":\"%s\",\"display_name\":\"%s\",\"created_at\":\"2024-10-"
                   "22T00:00:00Z\"}",
                   i ? "," : "", ids[i], ids[i]);
    tg_sim_w_f(w, "],\"has_more\":false,\"first_id\":\"%s\",\"last_id\":\"%s\"}", ids[0], ids[n - 1]);
}

/* Anthropic's `error` event, as sent when the API is overloaded mid-stream. */
static void an_stream_error(tg_sim_w_t *w, const char *msg)
{
    tg_sim_w_s(w, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                  "\"message\":");
    msg = msg != NULL ? msg : "Overloaded";
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_s(w, "}}\n\n");
}

const tg_sim_wire_t tg_sim_anthropic = {
    .name = "anthropic",
    .id_prefix = "msg_sim",
    .call_prefix = "toolu_",
    .parse = an_parse,
    .auth_header = "x-api-key",
    .auth_bearer = false,
    .error_body = an_error,
    .render = an_render,
    .stream_event = an_stream_event,
    .models = an_models,
    .stream_error = an_stream_error,
};
