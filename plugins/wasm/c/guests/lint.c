/* eval.c-lint: a static evaluator that needs no libtorch. It checks the
 * candidate's source against the code contract (a `class Net` with a
 * `forward`) without running it, and counts layers; it trains nothing, so
 * its accuracy is always 0 and its findings are in `extra`. Use it as a
 * cheap pre-filter, or as the skeleton of a learned accuracy predictor.
 * It also reads the size of the prepared dataset's manifest.json, through
 * the host's `files` import, which grants the request's dataset directory.
 * world: evaluator */
#include "evaluator.h"
#include "nasjson.h"

#define ID "eval.c-lint"

static void set(evaluator_string_t *s, const char *text) { s->ptr = nj_dup(text, &s->len); }

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) {
    set(&ret->id, ID);
    ret->kind = NAS_PLUGIN_TYPES_PLUGIN_KIND_EVALUATOR;
    set(&ret->version, "0.1.0");
    ret->api_version.major = 1;
    ret->api_version.minor = 0;
    set(&ret->description, "Static contract check and layer count (no training), in C.");
}

bool exports_nas_plugin_eval_init(evaluator_string_t *settings_json, exports_nas_plugin_eval_host_context_t *ctx,
                                  exports_nas_plugin_eval_plugin_error_t *err) {
    const char *p = (const char *)settings_json->ptr, *e = p + settings_json->len;
    bool empty = nj_ws(p, e) < e && *nj_ws(p, e) == '{' && *nj_ws(nj_ws(p, e) + 1, e) == '}';
    evaluator_string_free(settings_json);
    nas_plugin_types_host_context_free(ctx);
    if (!empty) {
        err->code = NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG;
        set(&err->message, "[" ID "] settings: this plugin takes no settings");
        err->retry_after_s.is_some = false;
        return false;
    }
    return true;
}

static size_t count(const uint8_t *s, size_t n, const char *needle) {
    size_t k = strlen(needle), c = 0;
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0) c++;
    return c;
}

static void num(evaluator_string_t *s, uint64_t v) {
    nj_buf b = {0};
    nj_uint(&b, v);
    s->ptr = (uint8_t *)b.buf;
    s->len = b.len;
}

bool exports_nas_plugin_eval_evaluate(exports_nas_plugin_eval_eval_request_t *req, exports_nas_plugin_eval_eval_outcome_t *ret,
                                      exports_nas_plugin_eval_plugin_error_t *err) {
    const uint8_t *src = req->source.ptr;
    size_t n = req->source.len;
    memset(ret, 0, sizeof *ret);
    const char *missing = !count(src, n, "class Net") ? "no `class Net` in the candidate"
                        : !count(src, n, "def forward") ? "`Net` has no `forward` method"
                                                        : NULL;
    if (missing) {
        ret->tag = NAS_PLUGIN_TYPES_EVAL_OUTCOME_FAILED;
        set(&ret->val.failed.stage, "check");
        ret->val.failed.kind = NAS_PLUGIN_TYPES_FAILURE_KIND_CONTRACT;
        set(&ret->val.failed.message, missing);
        nas_plugin_types_eval_request_free(req);
        return true;
    }
    /* The prepared dataset's directory is readable during this call. */
    const char *file = "/manifest.json";
    size_t dl = req->dataset.dir.len, fl = strlen(file);
    evaluator_string_t path = {malloc(dl + fl), dl + fl};
    memcpy(path.ptr, req->dataset.dir.ptr, dl);
    memcpy(path.ptr + dl, file, fl);
    uint64_t manifest_bytes = 0;
    nas_plugin_files_file_error_t fe;
    bool ok = nas_plugin_files_size(&path, &manifest_bytes, &fe);
    evaluator_string_free(&path);
    if (!ok) {
        err->code = fe.kind == NAS_PLUGIN_FILES_FILE_ERROR_KIND_NOT_FOUND ? NAS_PLUGIN_TYPES_ERROR_CODE_NOT_FOUND
                                                                          : NAS_PLUGIN_TYPES_ERROR_CODE_IO;
        err->message = fe.message;
        err->retry_after_s.is_some = false;
        nas_plugin_types_eval_request_free(req);
        return false;
    }
    static const char *keys[] = {"conv_layers", "linear_layers", "batch_norms", "manifest_bytes"};
    uint64_t vals[] = {count(src, n, "nn.Conv2d("), count(src, n, "nn.Linear("), count(src, n, "nn.BatchNorm2d("), manifest_bytes};
    evaluator_tuple2_string_string_t *extra = calloc(4, sizeof *extra);
    for (int i = 0; i < 4; i++) {
        set(&extra[i].f0, keys[i]);
        num(&extra[i].f1, vals[i]);
    }
    ret->tag = NAS_PLUGIN_TYPES_EVAL_OUTCOME_OK;
    ret->val.ok.accuracy = 0.0;
    set(&ret->val.ok.device, "static");
    ret->val.ok.extra.ptr = extra;
    ret->val.ok.extra.len = 4;
    nas_plugin_types_eval_request_free(req);
    return true;
}
