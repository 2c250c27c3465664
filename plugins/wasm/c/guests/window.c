/* memory.c-window: the paper's sliding window of the K most recent
 * diagnostic triples, as a WebAssembly component written in C.
 * world: memory-strategy
 *
 * It behaves exactly as the built-in `memory.window` and is checked against
 * it by the conformance kit. */
#include "memory_strategy.h"
#include "nasjson.h"

#define ID "memory.c-window"

static uint64_t window_k = 5;

static void set(memory_strategy_string_t *s, const char *text) { s->ptr = nj_dup(text, &s->len); }

static bool fail(nas_plugin_types_plugin_error_t *err, uint8_t code, const char *msg) {
    err->code = code;
    set(&err->message, msg);
    err->retry_after_s.is_some = false;
    return false;
}

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) {
    set(&ret->id, ID);
    ret->kind = NAS_PLUGIN_TYPES_PLUGIN_KIND_MEMORY;
    set(&ret->version, "0.1.0");
    ret->api_version.major = 1;
    ret->api_version.minor = 0;
    set(&ret->description, "Sliding window of the K most recent triples (paper baseline, K=5), in C.");
}

typedef struct { const char *bad; uint64_t k; bool bad_k; } settings_t;

static bool member(const char *key, size_t kl, const char *v, const char *e, void *user) {
    settings_t *s = user;
    if (kl == 1 && key[0] == 'k') {
        if (!nj_u64(v, e, &s->k)) s->bad_k = true;
        return true;
    }
    s->bad = key;
    return false;
}

bool exports_nas_plugin_memory_init(memory_strategy_string_t *settings_json, exports_nas_plugin_memory_host_context_t *ctx,
                                    exports_nas_plugin_memory_plugin_error_t *err) {
    const char *p = (const char *)settings_json->ptr, *e = p + settings_json->len;
    settings_t s = {0, 5, false};
    bool ok = nj_each(p, e, member, &s);
    memory_strategy_string_free(settings_json);
    nas_plugin_types_host_context_free(ctx);
    if (s.bad) return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: unknown field, expected `k`");
    if (!ok) return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: not a JSON object");
    if (s.bad_k) return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: `k` must be a whole number");
    if (s.k == 0)
        return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG,
                    "[" ID "] settings: `k` must be at least 1 (use memory.none for no history)");
    window_k = s.k;
    return true;
}

bool exports_nas_plugin_memory_select(exports_nas_plugin_memory_memory_input_t *input,
                                      exports_nas_plugin_memory_memory_selection_t *ret,
                                      exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    nas_plugin_types_memory_entry_t *entries = input->entries.ptr;
    size_t n = input->entries.len;
    size_t k = n < window_k ? n : (size_t)window_k;
    size_t start = n - k;
    /* The input is ours: drop the older entries and hand the last k back in
     * the same buffer, without copying their text. */
    for (size_t i = 0; i < start; i++) nas_plugin_types_memory_entry_free(&entries[i]);
    if (start > 0 && k > 0) memmove(entries, entries + start, k * sizeof *entries);
    if (k == 0 && entries) {
        free(entries);
        entries = NULL;
    }
    ret->entries.ptr = entries;
    ret->entries.len = k;
    ret->summary.is_some = false;
    ret->state_json.is_some = false;
    ret->llm_task.is_some = false;
    memory_strategy_option_string_free(&input->state_json);
    memory_strategy_option_string_free(&input->llm_reply);
    return true;
}
