/*
 * sim_tools.c - deterministic tool-call arguments built from a JSON schema.
 *
 * string -> "sample", number/integer -> 1, boolean -> true, null -> null, enum -> its first
 * value, object -> every property (recursively), array -> one item. Gemini writes types in upper
 * case ("STRING"), so types compare case-insensitively; a type list takes its first non-null
 * type; anyOf/oneOf/allOf take their first branch. Depth is capped so a hostile schema cannot
 * recurse without bound.
 */
#include "sim.h"

#include <strings.h>

#define MAX_DEPTH 16

static const char *schema_type(const json_t *schema)
{
    const json_t *t = json_object_get(schema, "type");
    if (json_is_string(t))
        return json_string_value(t);
    if (json_is_array(t)) {
        size_t i;
        const json_t *v;
        json_array_foreach(t, i, v)
        {
            if (json_is_string(v) && strcasecmp(json_string_value(v), "null") != 0)
                return json_string_value(v);
        }
    }
    if (json_object_get(schema, "properties") != NULL)
        return "object";
    if (json_object_get(schema, "items") != NULL)
        return "array";
    return NULL;
}

static json_t *value_for(const json_t *schema, int depth)
{
    if (!json_is_object(schema) || depth > MAX_DEPTH)
        return json_null();
    const json_t *en = json_object_get(schema, "enum");
    if (json_is_array(en) && json_array_size(en) > 0)
        return json_deep_copy(json_array_get(en, 0));
    static const char *const branches[] = {"anyOf", "oneOf", "allOf"};
    for (size_t i = 0; i < sizeof(branches) / sizeof(branches[0]); i++) {
        const json_t *b = json_object_get(schema, branches[i]);
        if (json_is_array(b) && json_array_size(b) > 0)
            return value_for(json_array_get(b, 0), depth + 1);
    }
    const char *t = schema_type(schema);
    if (t == NULL || strcasecmp(t, "string") == 0)
        return json_string("sample");
    if (strcasecmp(t, "integer") == 0 || strcasecmp(t, "number") == 0)
        return json_integer(1);
    if (strcasecmp(t, "boolean") == 0)
        return json_true();
    if (strcasecmp(t, "null") == 0)
        return json_null();
    if (strcasecmp(t, "array") == 0) {
        json_t *arr = json_array();
        if (arr == NULL ||
            json_array_append_new(arr, value_for(json_object_get(schema, "items"), depth + 1)) != 0) {
            json_decref(arr);
            return NULL;
        }
        return arr;
    }
    /* object */
    json_t *obj = json_object();
    const json_t *props = json_object_get(schema, "properties");
    const char *k;
    const json_t *v;
    if (obj == NULL)
        return NULL;
    if (json_is_object(props)) {
        json_object_foreach((json_t *)props, k, v)
        {
            json_t *val = value_for(v, depth + 1);
            if (val == NULL || json_object_set_new(obj, k, val) != 0) {
                json_decref(obj);
                return NULL;
            }
        }
    }
    return obj;
}

json_t *tg_sim_args_from_schema(const json_t *schema)
{
    /* a tool without parameters is called with an empty object */
    if (!json_is_object(schema))
        return json_object();
    json_t *v = value_for(schema, 0);
    if (v != NULL && !json_is_object(v)) {
        /* arguments are always an object on every wire format */
        json_decref(v);
        return json_object();
    }
    return v;
}
