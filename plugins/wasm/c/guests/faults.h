/* Shared bits of the deliberately broken memory-strategy guests used by the
 * host's fault tests. */
#include "memory_strategy.h"
#include "nasjson.h"

static void set(memory_strategy_string_t *s, const char *text) { s->ptr = nj_dup(text, &s->len); }

static void info(exports_nas_plugin_meta_plugin_info_t *ret, const char *id, uint32_t major) {
    set(&ret->id, id);
    ret->kind = NAS_PLUGIN_TYPES_PLUGIN_KIND_MEMORY;
    set(&ret->version, "0.1.0");
    ret->api_version.major = major;
    ret->api_version.minor = 0;
    set(&ret->description, "A deliberately broken plugin for the fault tests.");
}

bool exports_nas_plugin_memory_init(memory_strategy_string_t *settings_json, exports_nas_plugin_memory_host_context_t *ctx,
                                    exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    memory_strategy_string_free(settings_json);
    nas_plugin_types_host_context_free(ctx);
    return true;
}

/* Returns nothing selected, freeing the input. */
static bool nothing(exports_nas_plugin_memory_memory_input_t *input, exports_nas_plugin_memory_memory_selection_t *ret) {
    nas_plugin_types_memory_input_free(input);
    memset(ret, 0, sizeof *ret);
    return true;
}
