/*
 * sim_gemini.c - the Gemini generateContent / streamGenerateContent?alt=sse wire format,
 * following https://ai.google.dev/api/generate-content and https://ai.google.dev/gemini-api/docs/
 * troubleshooting (error statuses).
 *
 * The model comes from the URL path (set by sim_main.c before parse). A stream is one SSE event
 * per content piece, separated by "\r\n\r\n" as Gemini does; every event carries usageMetadata
 * (prompt counts only until the last one, which adds candidatesTokenCount and finishReason).
 * There is no [DONE]. A tool call is one event with a whole functionCall part (Gemini does not
 * split arguments).
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void parts_text(tg_sim_req_t *rq, json_t *parts, const char **first, size_t *first_len, bool *fr,
                       bool last)
{
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        json_t *text = json_object_get(p, "text");
        json_t *resp = json_object_get(p, "functionResponse");
        if (resp == NULL)
            resp = json_object_get(p, "function_response");
        if (json_is_string(text)) {
            tg_sim_req_add_text(rq, json_string_value(text), json_string_length(text));
            if (first != NULL && *first == NULL) {
                *first = json_string_value(text);
                *first_len = json_string_length(text);
            }
        } else if (json_is_object(resp)) {
            char *s = json_dumps(json_object_get(resp, "response"), JSON_COMPACT | JSON_ENCODE_ANY);
            if (s != NULL) {
                tg_sim_req_add_text(rq, s, strlen(s));
                if (last) {
                    tg_sim_req_set_tool_result(rq, s, strlen(s));
                    *fr = true;
                }
                free(s);
            }
        }
    }
}

static json_t *get2(json_t *o, const char *camel, const char *snake)
{
    json_t *v = json_object_get(o, camel);
    return v != NULL ? v : json_object_get(o, snake);
}

static int pick_tool(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *cfg =
        get2(get2(body, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config");
    json_t *mode = json_object_get(cfg, "mode");
    json_t *allowed = get2(cfg, "allowedFunctionNames", "allowed_function_names");
    if (!tg_sim_json_is_str(mode, "ANY"))
        return 0;
    const char *want = json_string_value(json_array_get(allowed, 0));
    size_t i, k;
    json_t *tool, *decl;
    json_array_foreach(json_object_get(body, "tools"), i, tool)
    {
        json_array_foreach(get2(tool, "functionDeclarations", "function_declarations"), k, decl)
        {
            const char *name = json_string_value(json_object_get(decl, "name"));
            if (name == NULL)
                return tg_sim_perr(e, 400, NULL,
                                   "* GenerateContentRequest.tools[%zu].function_declarations[%zu].name: "
                                   "name cannot be empty.",
                                   i, k);
            if (want == NULL || strcmp(want, name) == 0) {
                rq->tool_name = name;
                rq->tool_schema = json_object_get(decl, "parameters");
                return 0;
            }
        }
    }
    return tg_sim_perr(e, 400, NULL,
                       "Function calling mode ANY requires a declared function that is allowed.");
}

static int ge_parse(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e)
{
    json_t *contents = json_object_get(body, "contents");
    if (!json_is_array(contents) || json_array_size(contents) == 0)
        return tg_sim_perr(e, 400, NULL, "* GenerateContentRequest.contents: contents is not specified");
    json_t *sys = get2(body, "systemInstruction", "system_instruction");
    parts_text(rq, json_object_get(sys, "parts"), NULL, NULL, NULL, false);
    json_t *gc = get2(body, "generationConfig", "generation_config");
    json_t *mt = get2(gc, "maxOutputTokens", "max_output_tokens");
    if (json_is_integer(mt))
        rq->max_tokens = (long)json_integer_value(mt);
    rq->json_mode =
        tg_sim_json_is_str(get2(gc, "responseMimeType", "response_mime_type"), "application/json");

    size_t i, n = json_array_size(contents);
    json_t *c;
    json_array_foreach(contents, i, c)
    {
        json_t *parts = json_object_get(c, "parts");
        json_t *role = json_object_get(c, "role");
        if (!json_is_array(parts))
            return tg_sim_perr(e, 400, NULL,
                               "* GenerateContentRequest.contents[%zu].parts: contents.parts must not "
                               "be empty.",
                               i);
        const char *first = NULL;
        size_t first_len = 0;
        bool fr = false;
        parts_text(rq, parts, &first, &first_len, &fr, i + 1 == n);
        if (!fr && first != NULL && (role == NULL || tg_sim_json_is_str(role, "user")))
            tg_sim_req_set_echo(rq, first, first_len);
    }
    return pick_tool(body, rq, e);
}

static const char *status_name(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 500:
        return "INTERNAL";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "UNAVAILABLE" : "FAILED_PRECONDITION";
    }
}

static void ge_error(tg_sim_w_t *w, int status, bool context_length, const char *msg, const char *param,
                     const char *model, int retry_after_s)
{
    char tmp[256];
    (void)param;
    if (context_length) {
        status = 400;
        msg = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).";
    } else if (msg == NULL) {
        switch (status) {
        case 401:
            msg = "Request had invalid authentication credentials. API key not valid. Please pass a valid "
                  "API key.";
            break;
        case 403:
            msg = "The caller does not have permission";
            break;
        case 404:
            snprintf(tmp, sizeof(tmp),
                     "models/%.100s is not found for API version v1beta, or is not supported for "
                     "generateContent.",
                     model ? model : "");
            msg = tmp;
            break;
        case 429:
            msg = "Resource has been exhausted (e.g. check quota).";
            break;
        case 500:
            msg = "An internal error has occurred. Please retry or report in "
                  "https://developers.generativeai.google/guide/troubleshooting";
            break;
        case 503:
            msg = "The model is overloaded. Please try again later.";
            break;
        case 504:
            msg = "Deadline expired before operation could complete.";
            break;
        default:
            snprintf(tmp, sizeof(tmp), "Simulated error (status %d).", status);
            msg = tmp;
        }
    }
    tg_sim_w_f(w, "{\"error\":{\"code\":%d,\"message\":", status);
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_f(w, ",\"status\":\"%s\"", status_name(status));
    if (status == 429)
        tg_sim_w_f(
            w,
            ",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"%ds\"}]",
            retry_after_s >= 0 ? retry_after_s : 1);
    tg_sim_w_s(w, "}}");
}

static const char *finish_str(tg_sim_finish_t f)
{
    return f == TG_SIM_FINISH_LENGTH ? "MAX_TOKENS" : "STOP";
}

static void w_usage(tg_sim_w_t *w, const tg_sim_answer_t *a, bool final)
{
    if (final)
        tg_sim_w_f(w,
                   "\"usageMetadata\":{\"promptTokenCount\":%ld,\"candidatesTokenCount\":%ld,"
                   "\"totalTokenCount\":%ld,"
                   "\"cachedContentTokenCount\":%ld}",
                   a->prompt_tokens, a->completion_tokens, a->prompt_tokens + a->completion_tokens,
                   a->cached_tokens);
    else
        tg_sim_w_f(w,
                   "\"usageMetadata\":{\"promptTokenCount\":%ld,\"totalTokenCount\":%ld,"
                   "\"cachedContentTokenCount\":%ld}",
                   a->prompt_tokens, a->prompt_tokens, a->cached_tokens);
}

static void w_tail(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    tg_sim_w_s(w, ",\"modelVersion\":");
    tg_sim_w_str(w, rq->model, strlen(rq->model));
    tg_sim_w_f(w, ",\"responseId\":\"%s\"}", a->resp_id);
}

static void w_tool_part(tg_sim_w_t *w, const tg_sim_answer_t *a)
{
    tg_sim_w_s(w, "{\"functionCall\":{\"name\":");
    tg_sim_w_str(w, a->tool_name, strlen(a->tool_name));
    tg_sim_w_s(w, ",\"args\":");
    tg_sim_w_raw(w, a->tool_args, a->tool_args_len);
    tg_sim_w_s(w, "}}");
}

static void ge_render(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a)
{
    tg_sim_w_s(w, "{\"candidates\":[{\"content\":{\"parts\":[");
    if (a->tool_call) {
        w_tool_part(w, a);
    } else {
        tg_sim_w_s(w, "{\"text\":");
        tg_sim_w_answer_text(w, a);
        tg_sim_w_s(w, "}");
    }
    tg_sim_w_f(w, "],\"role\":\"model\"},\"finishReason\":\"%s\",\"index\":0}],", finish_str(a->finish));
    w_usage(w, a, true);
    w_tail(w, rq, a);
}

static bool ge_stream_event(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a, size_t idx,
                            tg_sim_ev_kind_t *kind)
{
    size_t k = a->tool_call ? 1 : a->n_pieces;
    if (idx >= k)
        return false;
    bool last = idx + 1 == k;
    *kind = TG_SIM_EV_CONTENT;
    tg_sim_w_s(w, "data: {\"candidates\":[{\"content\":{\"parts\":[");
    if (a->tool_call) {
        w_tool_part(w, a);
    } else {
        tg_sim_w_s(w, "{\"text\":");
        tg_sim_w_piece(w, a, idx);
        tg_sim_w_s(w, "}");
    }
    tg_sim_w_s(w, "],\"role\":\"model\"}");
    if (last)
        tg_sim_w_f(w, ",\"finishReason\":\"%s\"", finish_str(a->finish));
    tg_sim_w_s(w, ",\"index\":0}],");
    w_usage(w, a, last);
    w_tail(w, rq, a);
    tg_sim_w_s(w, "\r\n\r\n");
    return true;
}

static void ge_models(tg_sim_w_t *w)
{
    static const char *const ids[] = {"gemini-1.5-flash", "gemini-1.5-pro", "gemini-2.0-flash"};
    tg_sim_w_s(w, "{\"models\":[");
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        tg_sim_w_f(w,
                   "%s{\"name\":\"models/"
                   "%s\",\"version\":\"001\",\"displayName\":\"%s\",\"inputTokenLimit\":1048576,"
                   "\"outputTokenLimit\":8192,\"supportedGenerationMethods\":[\"generateContent\","
                   "\"streamGenerateContent\",\"countTokens\"]}",
                   i ? "," : "", ids[i], ids[i]);
    tg_sim_w_s(w, "]}");
}

/* Gemini ends a failing stream with a data event holding a google.rpc.Status error. */
static void ge_stream_error(tg_sim_w_t *w, const char *msg)
{
    msg = msg != NULL ? msg : "The model is overloaded. Please try again later.";
    tg_sim_w_s(w, "data: {\"error\":{\"code\":503,\"message\":");
    tg_sim_w_str(w, msg, strlen(msg));
    tg_sim_w_s(w, ",\"status\":\"UNAVAILABLE\"}}\n\n");
}

const tg_sim_wire_t tg_sim_gemini = {
    .name = "gemini",
    .id_prefix = "",
    .call_prefix = "",
    .parse = ge_parse,
    .auth_header = "x-goog-api-key",
    .auth_bearer = false,
    .error_body = ge_error,
    .render = ge_render,
    .stream_event = ge_stream_event,
    .models = ge_models,
    .stream_error = ge_stream_error,
};
