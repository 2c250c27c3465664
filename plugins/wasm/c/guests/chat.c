/* llm.c-chat: an LLM backend for any OpenAI-compatible chat-completions
 * server, as a WebAssembly component written in C.
 * world: llm-backend
 *
 * Its HTTP goes through the host's `http.post`, which reaches only the
 * hosts in its manifest's `allowed_hosts` and adds the API key itself: this
 * code never sees the key.
 *
 * Settings: base_url (required, e.g. "http://127.0.0.1:8080/v1"), model
 * (default ""), timeout_s (default 300). */
#include "llm_backend.h"
#include "nasjson.h"

#define ID "llm.c-chat"

static char *base_url = NULL;
static char *model = NULL;
static uint64_t timeout_s = 300;

static void set(llm_backend_string_t *s, const char *text) { s->ptr = nj_dup(text, &s->len); }

static bool fail(nas_plugin_types_plugin_error_t *err, uint8_t code, const char *msg) {
    err->code = code;
    set(&err->message, msg);
    err->retry_after_s.is_some = false;
    return false;
}

static bool failn(nas_plugin_types_plugin_error_t *err, uint8_t code, const char *prefix, const uint8_t *detail, size_t n) {
    if (n > 300) n = 300;
    size_t pl = strlen(prefix);
    char *m = malloc(pl + n + 1);
    if (!m) return fail(err, code, prefix);
    memcpy(m, prefix, pl);
    if (detail && n) memcpy(m + pl, detail, n);
    m[pl + n] = 0;
    err->code = code;
    err->message.ptr = (uint8_t *)m;
    err->message.len = pl + n;
    err->retry_after_s.is_some = false;
    return false;
}

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) {
    set(&ret->id, ID);
    ret->kind = NAS_PLUGIN_TYPES_PLUGIN_KIND_LLM;
    set(&ret->version, "0.1.0");
    ret->api_version.major = 1;
    ret->api_version.minor = 0;
    set(&ret->description, "OpenAI-compatible chat completions, in C, HTTP through the host.");
}

typedef struct { bool bad; bool bad_value; char *base_url; char *model; uint64_t timeout_s; } settings_t;

static char *cstr(const char *v, const char *e) {
    uint8_t *s;
    size_t n;
    if (!nj_string(v, e, &s, &n)) return NULL;
    char *c = malloc(n + 1);
    if (!c) return NULL;
    if (n) memcpy(c, s, n);
    c[n] = 0;
    free(s);
    return c;
}

static bool member(const char *key, size_t kl, const char *v, const char *e, void *user) {
    settings_t *s = user;
    if (kl == 8 && memcmp(key, "base_url", 8) == 0) {
        if (!(s->base_url = cstr(v, e))) s->bad_value = true;
    } else if (kl == 5 && memcmp(key, "model", 5) == 0) {
        if (!(s->model = cstr(v, e))) s->bad_value = true;
    } else if (kl == 9 && memcmp(key, "timeout_s", 9) == 0) {
        if (!nj_u64(v, e, &s->timeout_s) || s->timeout_s == 0) s->bad_value = true;
    } else {
        s->bad = true;
        return false;
    }
    return true;
}

bool exports_nas_plugin_llm_init(llm_backend_string_t *settings_json, exports_nas_plugin_llm_host_context_t *ctx,
                                 exports_nas_plugin_llm_plugin_error_t *err) {
    const char *p = (const char *)settings_json->ptr, *e = p + settings_json->len;
    settings_t s = {false, false, NULL, NULL, 300};
    bool ok = nj_each(p, e, member, &s);
    llm_backend_string_free(settings_json);
    nas_plugin_types_host_context_free(ctx);
    if (s.bad)
        return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG,
                    "[" ID "] settings: unknown field, expected one of `base_url`, `model`, `timeout_s`");
    if (!ok || s.bad_value)
        return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG,
                    "[" ID "] settings: `base_url` and `model` must be strings, `timeout_s` a positive whole number");
    if (!s.base_url || !*s.base_url)
        return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: `base_url` is required");
    size_t bl = strlen(s.base_url);
    while (bl > 0 && s.base_url[bl - 1] == '/') s.base_url[--bl] = 0;
    free(base_url);
    free(model);
    base_url = s.base_url;
    model = s.model ? s.model : strdup("");
    timeout_s = s.timeout_s;
    return true;
}

static const char *role_name(uint8_t r) {
    return r == NAS_PLUGIN_TYPES_CHAT_ROLE_SYSTEM ? "system" : r == NAS_PLUGIN_TYPES_CHAT_ROLE_USER ? "user" : "assistant";
}

static uint8_t *copy_field(const char *v, const char *e, size_t *len) {
    uint8_t *s = NULL;
    *len = 0;
    if (v && !nj_is_null(v, e) && nj_string(v, e, &s, len)) return s;
    *len = 0;
    return NULL;
}

bool exports_nas_plugin_llm_complete(exports_nas_plugin_llm_chat_request_t *req, exports_nas_plugin_llm_chat_response_t *ret,
                                     exports_nas_plugin_llm_plugin_error_t *err) {
    nj_buf body = {0};
    uint64_t prompt_chars = 0;
    nj_raw(&body, "{\"model\":");
    nj_quote(&body, (const uint8_t *)model, strlen(model));
    nj_raw(&body, ",\"stream\":false,\"messages\":[");
    for (size_t i = 0; i < req->messages.len; i++) {
        nas_plugin_types_chat_message_t *m = &req->messages.ptr[i];
        nj_raw(&body, i ? ",{\"role\":\"" : "{\"role\":\"");
        nj_raw(&body, role_name(m->role));
        nj_raw(&body, "\",\"content\":");
        nj_quote(&body, m->content.ptr, m->content.len);
        nj_raw(&body, "}");
        prompt_chars += m->content.len;
    }
    nj_raw(&body, "]");
    if (req->temperature.is_some) { nj_raw(&body, ",\"temperature\":"); nj_f32(&body, req->temperature.val); }
    if (req->top_p.is_some) { nj_raw(&body, ",\"top_p\":"); nj_f32(&body, req->top_p.val); }
    if (req->max_tokens.is_some) { nj_raw(&body, ",\"max_tokens\":"); nj_uint(&body, req->max_tokens.val); }
    if (req->seed.is_some) { nj_raw(&body, ",\"seed\":"); nj_uint(&body, req->seed.val); }
    if (req->stop.len) {
        nj_raw(&body, ",\"stop\":[");
        for (size_t i = 0; i < req->stop.len; i++) {
            if (i) nj_raw(&body, ",");
            nj_quote(&body, req->stop.ptr[i].ptr, req->stop.ptr[i].len);
        }
        nj_raw(&body, "]");
    }
    nj_raw(&body, "}");
    exports_nas_plugin_llm_chat_request_free(req);
    if (body.oom) return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INTERNAL, "[" ID "] out of memory building the request");

    size_t ul = strlen(base_url);
    char *url = malloc(ul + 32);
    memcpy(url, base_url, ul);
    memcpy(url + ul, "/chat/completions", 18);
    llm_backend_string_t url_s = {(uint8_t *)url, strlen(url)};
    llm_backend_tuple2_string_string_t hdr[1];
    llm_backend_string_set(&hdr[0].f0, "content-type");
    llm_backend_string_set(&hdr[0].f1, "application/json");
    llm_backend_list_tuple2_string_string_t headers = {hdr, 1};
    llm_backend_list_u8_t payload = {(uint8_t *)body.buf, body.len};
    nas_plugin_http_http_response_t resp;
    nas_plugin_http_http_error_t herr;
    bool sent = nas_plugin_http_post(&url_s, &headers, &payload, (uint32_t)(timeout_s * 1000), &resp, &herr);
    free(url);
    free(body.buf);
    if (!sent) {
        uint8_t code = NAS_PLUGIN_TYPES_ERROR_CODE_UNREACHABLE;
        if (herr.kind == NAS_PLUGIN_HTTP_HTTP_ERROR_KIND_DENIED) code = NAS_PLUGIN_TYPES_ERROR_CODE_UNAUTHORIZED;
        else if (herr.kind == NAS_PLUGIN_HTTP_HTTP_ERROR_KIND_BAD_URL) code = NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG;
        else if (herr.kind == NAS_PLUGIN_HTTP_HTTP_ERROR_KIND_TIMEOUT) code = NAS_PLUGIN_TYPES_ERROR_CODE_TIMEOUT;
        else if (herr.kind == NAS_PLUGIN_HTTP_HTTP_ERROR_KIND_TOO_LARGE) code = NAS_PLUGIN_TYPES_ERROR_CODE_BAD_RESPONSE;
        failn(err, code, "[" ID "] request failed: ", herr.message.ptr, herr.message.len);
        nas_plugin_http_http_error_free(&herr);
        return false;
    }
    const char *p = (const char *)resp.body.ptr, *e = p + resp.body.len;
    if (resp.status < 200 || resp.status >= 300) {
        uint8_t code = NAS_PLUGIN_TYPES_ERROR_CODE_BAD_RESPONSE;
        if (resp.status == 401 || resp.status == 403) code = NAS_PLUGIN_TYPES_ERROR_CODE_UNAUTHORIZED;
        else if (resp.status == 429) code = NAS_PLUGIN_TYPES_ERROR_CODE_RATE_LIMITED;
        else if (resp.status == 404) code = NAS_PLUGIN_TYPES_ERROR_CODE_NOT_FOUND;
        char prefix[64] = "[" ID "] the server answered HTTP 000: ";
        char *d = strstr(prefix, "000");
        d[0] = (char)('0' + resp.status / 100 % 10);
        d[1] = (char)('0' + resp.status / 10 % 10);
        d[2] = (char)('0' + resp.status % 10);
        failn(err, code, prefix, resp.body.ptr, resp.body.len);
        nas_plugin_http_http_response_free(&resp);
        return false;
    }
    const char *choice = nj_index(nj_get(p, e, "choices"), e, 0);
    const char *message = choice ? nj_get(choice, e, "message") : NULL;
    const char *content = message ? nj_get(message, e, "content") : NULL;
    if (!content || nj_is_null(content, e)) {
        failn(err, NAS_PLUGIN_TYPES_ERROR_CODE_BAD_RESPONSE, "[" ID "] no choices[0].message.content in: ", resp.body.ptr,
              resp.body.len);
        nas_plugin_http_http_response_free(&resp);
        return false;
    }
    ret->content.ptr = copy_field(content, e, &ret->content.len);
    ret->model.ptr = copy_field(nj_get(p, e, "model"), e, &ret->model.len);
    const char *fr = nj_get(choice, e, "finish_reason");
    ret->finish_reason.is_some = fr && !nj_is_null(fr, e);
    if (ret->finish_reason.is_some) ret->finish_reason.val.ptr = copy_field(fr, e, &ret->finish_reason.val.len);
    const char *usage = nj_get(p, e, "usage");
    uint64_t pt = 0, ct = 0;
    bool have = usage && nj_u64(nj_get(usage, e, "prompt_tokens"), e, &pt) && nj_u64(nj_get(usage, e, "completion_tokens"), e, &ct);
    if (!have) {
        pt = (prompt_chars + 3) / 4;
        ct = (ret->content.len + 3) / 4;
    }
    ret->usage.prompt_tokens = pt;
    ret->usage.completion_tokens = ct;
    ret->usage.estimated = !have;
    ret->latency_ms = 0; /* no clock in the sandbox: the host measures it */
    ret->attempts = 1;
    nas_plugin_http_http_response_free(&resp);
    return true;
}
